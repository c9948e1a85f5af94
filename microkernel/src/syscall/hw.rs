//! The hw family (issue 11): exit notification, I/O-port grants, IRQs.
//!
//! Each syscall decodes its handles (kind and rights checked by
//! [`handle_object`](super::handle_object)) and numbers before it changes
//! anything; every refusal is an [`Error`].

use super::handle_object;
use crate::arch::trap::TrapFrame;
use crate::object::hw::{IoPorts, IrqObj, Ntf};
use crate::object::kobject::{charge, Object};
use crate::object::process::Process;
use crate::sched::current;
use abi::{rights_sets, Error, IRQ_LINES};
use alloc::sync::Arc;
use alloc::vec::Vec;
use kcore::handles::{Entry, Rights};

/// The caller's process (`PermissionDenied` for a kernel thread).
fn process() -> Result<&'static Arc<Process>, Error> {
    current().process.as_ref().ok_or(Error::PermissionDenied)
}

/// The notification handle `reg` names, with SIGNAL.
fn ntf(reg: u64) -> Result<Ntf, Error> {
    let (_, o) = handle_object(reg, Rights::SIGNAL, |o| {
        matches!(o, Object::Notification(_))
    })?;
    let Object::Notification(n) = o else {
        return Err(Error::WrongType);
    };
    Ok(n)
}

/// Signal bits: at least one.
fn bits(reg: u64) -> Result<u64, Error> {
    if reg == 0 {
        return Err(Error::InvalidArgument);
    }
    Ok(reg)
}

/// Puts `object` with `rights` into the caller's table; returns its number.
fn install(object: Object, rights: Rights) -> Result<u64, Error> {
    let p = process()?;
    let r = p.ipc.handles.lock().insert(Entry {
        object,
        rights,
        badge: 0,
    });
    // A refused insert drops the object here, outside the table's lock.
    r.map(|h| u64::from(h.raw())).map_err(Error::from)
}

/// `process_notify(proc, ntf, bits)`.
pub fn process_notify(f: &TrapFrame) -> Result<u64, Error> {
    let (_, o) = handle_object(f.rdi, Rights::WAIT, |o| matches!(o, Object::Process(_)))?;
    let Object::Process(p) = o else {
        return Err(Error::WrongType);
    };
    let n = ntf(f.rsi)?;
    let bits = bits(f.rdx)?;
    // breakhw: one registration per notification, so a second holder of
    // WAIT adds its own instead of replacing (silently cancelling) the
    // first's; the same notification again replaces its bits.
    let (ended, pruned) = {
        let mut g = p.exit_notify.lock();
        if p.has_ended() {
            // `ended` took the registrations already (or will find none):
            // signal now, outside the lock.
            (true, Vec::new())
        } else {
            // Registrations whose notification lost its last handle signal
            // nobody: pruned here, so a process that registers and closes
            // in a loop cannot grow the list (lock order: exit_notify, then
            // the notification's). Moved out, dropped outside the lock.
            let mut pruned = Vec::new();
            let mut i = 0;
            while i < g.len() {
                if g[i].0.s.lock().handles == 0 && pruned.try_reserve(1).is_ok() {
                    pruned.push(g.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if let Some(e) = g.iter_mut().find(|e| Arc::ptr_eq(&e.0, &n)) {
                e.1 = bits;
            } else {
                g.try_reserve(1).map_err(|_| Error::NoMemory)?;
                g.push((n.clone(), bits));
            }
            (false, pruned)
        }
    };
    drop(pruned);
    if ended {
        crate::ipc::slowpath::signal(&n, bits);
    }
    Ok(0)
}

/// The I/O-port handle `reg` names, with IO.
fn ioports(reg: u64) -> Result<(Arc<crate::object::kobject::ObjBox<IoPorts>>, Rights), Error> {
    let (h, o) = handle_object(reg, Rights::IO, |o| matches!(o, Object::IoPorts(_)))?;
    let Object::IoPorts(r) = o else {
        return Err(Error::WrongType);
    };
    let rights = {
        let p = process()?;
        let t = p.ipc.handles.lock();
        t.get(h, Rights::empty())?.rights
    };
    Ok((r, rights))
}

/// `ioport_grant(h, first, count)`: a narrower handle with `h`'s rights.
pub fn ioport_grant(f: &TrapFrame) -> Result<u64, Error> {
    let (r, rights) = ioports(f.rdi)?;
    let sub = r.narrow(f.rsi, f.rdx)?;
    let obj = charge(&process()?.ipc.objects, sub)?;
    install(Object::IoPorts(obj), rights)
}

/// `ioport_enable(h)`: opens `h`'s ports in the caller's I/O bitmap.
pub fn ioport_enable(f: &TrapFrame) -> Result<u64, Error> {
    let (r, _) = ioports(f.rdi)?;
    process()?.io.enable(r.first, r.count, &current().fpu)?;
    Ok(0)
}

/// `irq_bind(root, line, ntf, bits)`: an IRQ handle for `line`.
pub fn irq_bind(f: &TrapFrame) -> Result<u64, Error> {
    let (_, o) = handle_object(f.rdi, Rights::IO, |o| matches!(o, Object::Irq(_)))?;
    let Object::Irq(root) = o else {
        return Err(Error::WrongType);
    };
    if !matches!(**root, IrqObj::Root) {
        // A bound line's handle binds nothing else.
        return Err(Error::WrongType);
    }
    // Line 2 is the 8259 cascade (no device raises it; on PCs its pin, GSI
    // 2, is IRQ 0's through the MADT override).
    if f.rsi >= IRQ_LINES || f.rsi == 2 {
        return Err(Error::InvalidArgument);
    }
    let n = ntf(f.rdx)?;
    let bits = bits(f.r10)?;
    let p = process()?;
    // The table's lock is held from the slot reservation to the install,
    // so once the line is bound nothing can fail. Lock order: table, then
    // the line's (as on close, which unbinds under the table's lock).
    let mut t = p.ipc.handles.lock();
    t.reserve(1)?;
    let line = crate::object::hw::bind(f.rsi as u8, n, bits)?;
    // On refusal `charge` drops the line, which unbinds it.
    let obj = charge(&p.ipc.objects, IrqObj::Line(line))?;
    let h = t.install(Entry {
        object: Object::Irq(obj),
        rights: Rights::from_bits_truncate(rights_sets::HW),
        badge: 0,
    });
    Ok(u64::from(h.raw()))
}

/// `irq_ack(irq)`: unmasks the line of a bound IRQ handle.
pub fn irq_ack(f: &TrapFrame) -> Result<u64, Error> {
    let (_, o) = handle_object(f.rdi, Rights::IO, |o| matches!(o, Object::Irq(_)))?;
    let Object::Irq(irq) = o else {
        return Err(Error::WrongType);
    };
    let IrqObj::Line(l) = &**irq else {
        return Err(Error::WrongType);
    };
    crate::object::hw::ack(l.line)?;
    Ok(0)
}

/// `process_set_fault_ep(proc, ep, badge)`: `ep` 0 removes the handler; a
/// non-zero `badge` is the badge fault messages carry, as if `ep` had been
/// duplicated with it (so `ep` needs DUPLICATE too and no badge of its
/// own): one call instead of a dup, this and a close (forku).
pub fn process_set_fault_ep(f: &TrapFrame) -> Result<u64, Error> {
    let (_, o) = handle_object(f.rdi, Rights::KILL, |o| matches!(o, Object::Process(_)))?;
    let Object::Process(p) = o else {
        return Err(Error::WrongType);
    };
    let handler = if f.rsi == 0 {
        None
    } else {
        let h = kcore::handles::Handle::from_reg(f.rsi)?;
        let t = process()?.ipc.handles.lock();
        let e = t.get(h, Rights::empty())?;
        let Object::Endpoint(ep) = &e.object else {
            return Err(Error::WrongType);
        };
        if !e.rights.contains(Rights::SEND) {
            return Err(Error::PermissionDenied);
        }
        let badge = match f.rdx {
            0 => e.badge,
            _ if !e.rights.contains(Rights::DUPLICATE) => return Err(Error::PermissionDenied),
            b if e.badge == 0 => b,
            _ => return Err(kcore::handles::HandleError::AlreadyBadged.into()),
        };
        Some((ep.clone(), badge))
    };
    // The replaced endpoint reference goes outside the lock.
    let old = core::mem::replace(&mut *p.fault_ep.lock(), handler);
    drop(old);
    Ok(0)
}
