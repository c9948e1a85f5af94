//! init's name service and supervisor (issue 11 item 1): one thread serves
//! [`libipc::names::Names`] on init's endpoint and owns every piece of
//! state; one watcher thread per supervised server waits for its process
//! to end and reports it to the service with the internal `Exited` request
//! (init's own unbadged handle, badge 0), whose reply names the successor
//! to watch. So the registry has a single owner and needs no lock.
//!
//! The servers are the [`SERVERS`] table: each is started from its boot
//! module ([`Service::spawn`], the one place: the loader by init itself,
//! every other through the loader's `Load`, see `load.rs`) with
//! [`SUPERVISED_ARG`], given a badged SEND handle to the service at
//! [`abi::bootinfo::names::HANDLE`] before its thread starts, and registers
//! its name. The loader is the exception: it never calls the service (the
//! service calls *it* to start the others, so it must not wait on the
//! service), and init registers `loader` for it with the endpoint init made
//! and gave it.
//! Once every one has registered, the service signals the notification
//! main waits on (`init: all servers up`). When a server dies the service
//! logs `init: <name> died (<status>), restarting`, drops its names (a
//! lookup never returns the dead endpoint once init knows), starts it
//! again from its boot module and the new instance registers anew.

use crate::load;
use crate::say::{SayLine, INIT_PID, SAY_MAX, SAY_TIMEOUT_US};
use crate::spawn_stack;
use abi::bootinfo::names::SUPERVISED_ARG;
use abi::bootinfo::{modules, BootInfo};
use abi::limits::INIT_PRIORITY;
use abi::rights;
use abi::status;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Notification};
use libipc::names::{valid_name, Names, Reply, Request, BUFFER, MAX_NAME, MAX_NAMES};
use libipc::println;
use libipc::server::{self, Caller};
use libipc::sys::{self, ProcessHandle};
use libipc::wire::{Handle, Handler};

/// A server init starts and restarts.
pub struct Spec {
    /// The name it registers (and `servers` shows).
    pub name: &'static str,
    /// Its boot module.
    pub module: &'static str,
    /// Other names it registers (reserved for it like `name`).
    pub also: &'static [&'static str],
}

/// The supervised servers, started in this order. The loader comes first:
/// the others are loaded by it.
pub const SERVERS: &[Spec] = &[
    Spec {
        name: libipc::loader::NAME,
        module: modules::LOADER,
        also: &[],
    },
    Spec {
        name: "kv",
        module: modules::KV,
        also: &[],
    },
    Spec {
        name: libipc::console::NAME,
        module: modules::CONSOLE,
        also: &[libipc::console::INPUT_NAME],
    },
    Spec {
        name: libipc::procmgr::NAME,
        module: modules::PROCMGR,
        also: &[],
    },
];

/// Every name a supervised server registers (its `name` and `also`).
const SUPERVISED_NAMES: usize = {
    let (mut i, mut n) = (0, 0);
    while i < SERVERS.len() {
        n += 1 + SERVERS[i].also.len();
        i += 1;
    }
    n
};
/// Names other than the supervised ones (each of those has its slot).
const OTHER_NAMES: usize = MAX_NAMES - SUPERVISED_NAMES;

/// The supervised slot whose server registers `name`, if any: only the
/// instance init started for that slot may register it, so nobody can
/// take a server's name (`console.in` too) while the server restarts.
fn slot_of(name: &[u8]) -> Option<usize> {
    SERVERS
        .iter()
        .position(|s| s.name.as_bytes() == name || s.also.iter().any(|a| a.as_bytes() == name))
}

/// init's name-service endpoint (every right; set by [`start`] before any
/// thread that reads it is spawned: `thread_spawn` orders it).
static ENDPOINT: AtomicU32 = AtomicU32::new(0);
/// The notification the service signals once every server registered.
static UP: AtomicU32 = AtomicU32::new(0);
/// The boot-information page's address (set before the thread starts).
static INFO: AtomicU64 = AtomicU64::new(0);
/// Whether `Restart` (the test-only control) is allowed: `init=tests`.
static TEST_CONTROLS: AtomicU32 = AtomicU32::new(0);
/// The next badge a client of the service gets (0 is init's own).
static NEXT_BADGE: AtomicU64 = AtomicU64::new(FIRST_COUNTER_BADGE);
/// The first badge that is no pid.
const FIRST_COUNTER_BADGE: u64 = 1 << 62;

/// Starts the service thread, which starts the servers. `Err` if the
/// endpoint, the notification or the thread could not be made.
pub fn start(info: &'static BootInfo, test_controls: bool) -> Result<Notification, &'static str> {
    let ep = ipc::endpoint_create().map_err(|_| "cannot create its endpoint")?;
    let up = ipc::notification_create().map_err(|_| "cannot create a notification")?;
    // Relaxed: the thread_spawn below is a syscall that publishes these to
    // the new thread (it starts after the kernel saw them stored).
    ENDPOINT.store(ep.0, Ordering::Relaxed);
    UP.store(up.0, Ordering::Relaxed);
    INFO.store(info as *const BootInfo as u64, Ordering::Relaxed);
    TEST_CONTROLS.store(u32::from(test_controls), Ordering::Relaxed);
    spawn_stack(service_thread, 0).map_err(|_| "cannot start its name-service thread")?;
    Ok(up)
}

/// Gives the program `child` a badged SEND handle to the service at
/// [`abi::bootinfo::names::HANDLE`] (its first handle if it has none yet).
pub fn give(child: ProcessHandle) -> Result<u64, libipc::Error> {
    let ep = ENDPOINT.load(Ordering::Relaxed);
    // The badge is the child's pid (never reused, never 0: init is 1), so
    // a lookup can badge a server's handle with its client's pid (see
    // `lookup`); a handle with no id gets a counter value above every pid.
    // Relaxed: badges only need to be distinct.
    let badge = match child.id() {
        0 => NEXT_BADGE.fetch_add(1, Ordering::Relaxed),
        pid => pid,
    };
    let h = ipc::handle_dup(
        ep,
        rights::SEND | rights::DUPLICATE | rights::TRANSFER,
        badge,
    )?;
    let r = ipc::handle_give(child, h, rights::SEND);
    let _ = ipc::handle_close(h);
    r.map(|_| badge)
}

/// init's own (unbadged) name-service endpoint, once started.
pub fn own_endpoint() -> Option<Endpoint> {
    match ENDPOINT.load(Ordering::Relaxed) {
        0 => None,
        h => Some(Endpoint(h)),
    }
}

fn boot_info() -> &'static BootInfo {
    // SAFETY: `start` stored the address of the boot-information page,
    // which the kernel maps read-only for init's whole life.
    unsafe { &*(INFO.load(Ordering::Relaxed) as *const BootInfo) }
}

extern "C" fn service_thread(_arg: u64) -> ! {
    let _ = sys::set_priority(INIT_PRIORITY);
    let ep = Endpoint(ENDPOINT.load(Ordering::Relaxed));
    let mut svc = Service::new(boot_info());
    for (slot, spec) in SERVERS.iter().enumerate() {
        match svc.spawn(slot) {
            Ok(watch) => {
                if spawn_stack(
                    watcher_thread,
                    (slot as u64) | (u64::from(watch.raw()) << 32),
                )
                .is_err()
                {
                    println!("init: cannot watch {}", spec.name);
                }
            }
            Err(e) => println!("init: cannot start {}: {e}", spec.name),
        }
    }
    let (mut a, mut b) = ([0u8; BUFFER], [0u8; BUFFER]);
    let e = server::serve::<Names, _>(ep, &mut svc, &mut a, &mut b);
    println!("init: the name service ended: {e:?}");
    sys::thread_exit(1)
}

/// The one place that learns a supervised process ended (today a thread
/// blocked in `process_wait`; an exit notification can replace it).
fn wait_for_exit(p: ProcessHandle) -> u64 {
    match p.wait() {
        Ok(word) => word,
        // Not ours any more (cannot happen: nobody else waits): report it
        // as killed so the server is started again.
        Err(_) => status::exited(-1),
    }
}

/// A watcher: waits for slot `arg & 0xffff_ffff`'s process (handle `arg >>
/// 32`), reports its end and watches the successor the service names.
extern "C" fn watcher_thread(arg: u64) -> ! {
    let _ = sys::set_priority(INIT_PRIORITY);
    let slot = arg & 0xffff_ffff;
    let mut p = ProcessHandle::from_raw((arg >> 32) as u32);
    let ep = Endpoint(ENDPOINT.load(Ordering::Relaxed));
    let mut buf = [0u8; BUFFER];
    loop {
        let st = wait_for_exit(p);
        loop {
            let mut c = libipc::names::Client::new(Caller::new(ep, None), &mut buf);
            match c.exited(slot, st) {
                Ok(Reply::Respawned { process }) if process != 0 => {
                    p = ProcessHandle::from_raw(process as u32);
                    break;
                }
                // Could not start it now: try again shortly.
                _ => sys::sleep_ns(50_000_000),
            }
        }
    }
}

/// One registered name.
#[derive(Clone, Copy)]
struct Entry {
    name: [u8; MAX_NAME],
    len: usize,
    /// init's copy: SEND | DUPLICATE | TRANSFER, never RECV.
    ep: u32,
    /// The badge of the registrant.
    owner: u64,
    instance: u64,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.name[..self.len]
    }
}

/// A supervised server's state.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// The running instance (init's handle: kill, give), if any.
    process: Option<ProcessHandle>,
    /// Its badge: the registrations it may make.
    badge: u64,
    restarts: u64,
    registered: bool,
}

struct Service {
    info: &'static BootInfo,
    names: [Option<Entry>; MAX_NAMES],
    slots: [Slot; SERVERS.len()],
    next_instance: u64,
    up_signalled: bool,
    /// A SEND handle to the running loader's endpoint (the service's own
    /// way to it: it cannot look itself up).
    loader: Option<Endpoint>,
}

impl Service {
    fn new(info: &'static BootInfo) -> Self {
        Service {
            info,
            names: [None; MAX_NAMES],
            slots: [Slot::default(); SERVERS.len()],
            next_instance: 1,
            up_signalled: false,
            loader: None,
        }
    }

    /// Starts slot `slot`'s server from its boot module (the one place
    /// servers start, at boot and after a death): returns the handle its
    /// watcher waits on.
    fn spawn(&mut self, slot: usize) -> Result<ProcessHandle, libipc::Error> {
        let spec = &SERVERS[slot];
        if spec.module == modules::LOADER {
            return self.spawn_loader(slot);
        }
        // The loader restarting: the watcher asks again shortly.
        let loader = self.loader.ok_or(libipc::Error::NotFound)?;
        let l = load::load(loader, spec.module).map_err(|e| {
            println!("init: cannot load {}: {e}", spec.name);
            libipc::Error::NotFound
        })?;
        let p = l.process;
        let started = give(p)
            .and_then(|badge| {
                // The console's COM1 handles land after the name service
                // (`abi::boot_handles::console`), before it runs.
                if spec.module == modules::CONSOLE {
                    crate::console::give(p)?;
                }
                Ok(badge)
            })
            .and_then(|badge| {
                let watch = p.dup(rights::WAIT)?;
                match load::start(p, l.entry, l.rsp, SUPERVISED_ARG) {
                    Ok(()) => Ok((badge, watch)),
                    Err(e) => {
                        let _ = watch.close();
                        Err(e)
                    }
                }
            });
        match started {
            Ok((badge, watch)) => {
                self.slots[slot] = Slot {
                    process: Some(p),
                    badge,
                    registered: false,
                    ..self.slots[slot]
                };
                Ok(watch)
            }
            Err(e) => {
                // Not started, or without its name service: end it.
                let _ = p.kill();
                let _ = p.close();
                Err(e)
            }
        }
    }

    /// Loads and starts the loader (init itself, `load::load_loader`) and
    /// registers `loader` for it.
    fn spawn_loader(&mut self, slot: usize) -> Result<ProcessHandle, libipc::Error> {
        let (l, badge) = load::load_loader(self.info, give)?;
        let p = l.process;
        let ep = l.endpoint;
        self.slots[slot] = Slot {
            process: Some(p),
            badge,
            registered: false,
            ..self.slots[slot]
        };
        let send = ipc::handle_dup(ep.0, rights::SEND, 0);
        let registered = matches!(
            self.register_inner(badge, SERVERS[slot].name, ep.0),
            Reply::Registered { .. }
        );
        // From here only the loader holds RECV: the endpoint dies with it.
        let _ = ipc::handle_close(ep.0);
        let watch = p.dup(rights::WAIT);
        let r = match (registered, send, watch) {
            (true, Ok(send), Ok(watch)) => match load::start(p, l.entry, l.rsp, SUPERVISED_ARG) {
                Ok(()) => {
                    if let Some(old) = self.loader.replace(Endpoint(send)) {
                        let _ = ipc::handle_close(old.0);
                    }
                    return Ok(watch);
                }
                Err(e) => {
                    let _ = ipc::handle_close(send);
                    let _ = watch.close();
                    Err(e)
                }
            },
            (_, send, watch) => {
                if let Ok(h) = send {
                    let _ = ipc::handle_close(h);
                }
                if let Ok(w) = watch {
                    let _ = w.close();
                }
                Err(libipc::Error::NoMemory)
            }
        };
        self.drop_owner(badge);
        self.slots[slot].process = None;
        self.slots[slot].registered = false;
        let _ = p.kill();
        let _ = p.close();
        r
    }

    /// Drops every name `owner` registered.
    fn drop_owner(&mut self, owner: u64) {
        for e in self.names.iter_mut() {
            if let Some(x) = e {
                if x.owner == owner {
                    let _ = ipc::handle_close(x.ep);
                    *e = None;
                }
            }
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|e| e.is_some_and(|e| e.name() == name.as_bytes()))
    }

    fn register(&mut self, badge: u64, name: &str, h: u32) -> Reply<'static> {
        // The received copy is ours to close whatever the answer.
        let r = self.register_inner(badge, name, h);
        let _ = ipc::handle_close(h);
        r
    }

    fn register_inner(&mut self, badge: u64, name: &str, h: u32) -> Reply<'static> {
        if !valid_name(name) {
            return Reply::BadName {
                max: MAX_NAME as u64,
            };
        }
        let existing = self.find(name);
        if let Some(i) = existing {
            if self.names[i].is_some_and(|e| e.owner != badge) {
                return Reply::Taken {};
            }
        }
        // A supervised server's names are reserved for it also while it
        // restarts (its names dropped, the successor not registered yet).
        let supervised = slot_of(name.as_bytes());
        if let Some(slot) = supervised {
            if self.slots[slot].process.is_none() || self.slots[slot].badge != badge {
                return Reply::Denied {};
            }
        }
        // Every supervised name keeps a slot of its own: other names take
        // at most the rest, so filling the table cannot keep a restarted
        // server from registering.
        let others = self
            .names
            .iter()
            .flatten()
            .filter(|e| slot_of(e.name()).is_none())
            .count();
        let room = supervised.is_some() || others < OTHER_NAMES;
        let free = existing.or_else(|| {
            room.then(|| self.names.iter().position(Option::is_none))
                .flatten()
        });
        let Some(i) = free else {
            return Reply::Full {
                capacity: OTHER_NAMES as u64,
            };
        };
        // Its kind first, through a copy with no rights (so no probe can
        // act on it), then init's copy with the rights it keeps.
        let probe = match ipc::handle_dup(h, 0, 0) {
            Ok(p) => p,
            Err(libipc::Error::NoMemory) => return Reply::NoRoom {},
            Err(_) => return Reply::NoRights {},
        };
        let endpoint = is_endpoint(probe);
        let _ = ipc::handle_close(probe);
        if !endpoint {
            return Reply::NotEndpoint {};
        }
        let ours = match ipc::handle_dup(h, rights::SEND | rights::DUPLICATE | rights::TRANSFER, 0)
        {
            Ok(ours) => ours,
            Err(libipc::Error::NoMemory) => return Reply::NoRoom {},
            Err(_) => return Reply::NoRights {},
        };
        if let Some(old) = self.names[i] {
            let _ = ipc::handle_close(old.ep);
        }
        let mut n = [0u8; MAX_NAME];
        n[..name.len()].copy_from_slice(name.as_bytes());
        let instance = self.next_instance;
        self.next_instance += 1;
        self.names[i] = Some(Entry {
            name: n,
            len: name.len(),
            ep: ours,
            owner: badge,
            instance,
        });
        if let Some(slot) = supervised.filter(|&i| SERVERS[i].name == name) {
            self.slots[slot].registered = true;
            self.signal_up_once();
        }
        Reply::Registered { instance }
    }

    /// Once every supervised server registered (the first time), tells
    /// main (`init: all servers up`).
    fn signal_up_once(&mut self) {
        if !self.up_signalled && self.slots.iter().all(|s| s.registered) {
            self.up_signalled = true;
            let _ = ipc::signal(Notification(UP.load(Ordering::Relaxed)), 1);
        }
    }

    fn lookup(&mut self, badge: u64, name: &str) -> Reply<'static> {
        if !valid_name(name) {
            return Reply::BadName {
                max: MAX_NAME as u64,
            };
        }
        // procmgr's named endpoint adopts processes (parent and fault
        // handler of any process handle sent): init's alone (shell3).
        if name == libipc::procmgr::NAME && badge != 0 {
            return Reply::Denied {};
        }
        let Some(e) = self.find(name).and_then(|i| self.names[i]) else {
            return Reply::NotFound {};
        };
        // A new handle, moved to the caller with the reply (the kernel
        // closes it if the caller is gone). A server that registered an
        // unbadged copy (the console) gets the caller's badge -- its pid --
        // on it, so it knows who writes; a badged registration (the kernel
        // refuses a second badge) is handed out as it is.
        let rights = rights::SEND | rights::TRANSFER;
        let badge = crate::console::lookup_badge(name, badge);
        let dup = match ipc::handle_dup(e.ep, rights, badge) {
            Err(libipc::Error::NoMemory) => Err(libipc::Error::NoMemory),
            Err(_) => ipc::handle_dup(e.ep, rights, 0),
            ok => ok,
        };
        match dup {
            Ok(h) => Reply::Found {
                ep: Handle(h),
                instance: e.instance,
            },
            Err(_) => Reply::NoRoom {},
        }
    }

    /// `lookup` badged for kernel pid `pid`: procmgr's alone (its
    /// supervised slot's badge), for the programs it spawns (gaps).
    fn lookup_for(&mut self, badge: u64, name: &str, pid: u64) -> Reply<'static> {
        let procmgr = SERVERS
            .iter()
            .position(|s| s.name == libipc::procmgr::NAME)
            .map(|i| self.slots[i]);
        let from_procmgr =
            procmgr.is_some_and(|s| s.process.is_some() && s.badge == badge && badge != 0);
        // Only a pid (init's counter badges for id-less handles start at
        // 2^62), never 0 (init's own badge: the procmgr name, unbadged).
        if !from_procmgr || pid == 0 || pid >= FIRST_COUNTER_BADGE {
            return Reply::Denied {};
        }
        self.lookup(pid, name)
    }

    fn restart(&mut self, badge: u64, name: &str) -> Reply<'static> {
        // Test-only: a kill switch for every supervised server.
        if TEST_CONTROLS.load(Ordering::Relaxed) == 0 || badge == 0 {
            return Reply::Denied {};
        }
        let Some(slot) = SERVERS.iter().position(|s| s.name == name) else {
            return Reply::NotFound {};
        };
        let Some(p) = self.slots[slot].process else {
            // Already restarting.
            return Reply::Restarting {};
        };
        let _ = p.kill();
        // Its names go now, so no lookup after this reply sees them.
        self.drop_owner(self.slots[slot].badge);
        self.slots[slot].registered = false;
        Reply::Restarting {}
    }

    fn exited(&mut self, badge: u64, slot: u64, st: u64) -> Reply<'static> {
        let Some(slot) = usize::try_from(slot)
            .ok()
            .filter(|&s| badge == 0 && s < SERVERS.len())
        else {
            return Reply::Denied {};
        };
        let name = SERVERS[slot].name;
        if let Some(p) = self.slots[slot].process.take() {
            let _ = p.close();
            let owner = self.slots[slot].badge;
            self.drop_owner(owner);
            self.slots[slot].registered = false;
            self.say(format_args!(
                "init: {name} died ({:?}), restarting\n",
                status::decode(st)
            ));
            self.slots[slot].restarts += 1;
            crate::mark::restart(name, self.slots[slot].restarts);
            if name == libipc::procmgr::NAME {
                crate::rejoin::procmgr_died();
            }
        }
        match self.spawn(slot) {
            Ok(watch) => Reply::Respawned {
                process: u64::from(watch.raw()),
            },
            Err(e) => {
                self.say(format_args!("init: cannot restart {name}: {e}\n"));
                Reply::Respawned { process: 0 }
            }
        }
    }

    /// Prints one line of init's while servers run: through the console
    /// when it is registered (on a handle badged with init's pid, 1, so it
    /// reads `[pid 1] ...` as the kernel's prefix does), else through the
    /// kernel. Through the kernel, under load, the line was woven byte by
    /// byte into a console line on COM1 (two writers of one UART); the
    /// console keeps lines whole. A console that does not answer within
    /// [`SAY_TIMEOUT_US`](crate::say::SAY_TIMEOUT_US) (starting, and calling this service) gets the
    /// kernel path, so the name service never waits on it for long.
    fn say(&self, args: core::fmt::Arguments<'_>) {
        let mut line = SayLine {
            buf: [0; SAY_MAX],
            len: 0,
        };
        let _ = core::fmt::Write::write_fmt(&mut line, args);
        if line.len == SAY_MAX {
            // Cut: still one whole line.
            line.buf[SAY_MAX - 1] = b'\n';
        }
        let bytes = &line.buf[..line.len];
        let console = self
            .find(libipc::console::NAME)
            .and_then(|i| self.names[i])
            .and_then(|e| ipc::handle_dup(e.ep, rights::SEND, INIT_PID).ok());
        if let Some(h) = console {
            let mut buf = [0u8; SAY_MAX + 64];
            let mut c = libipc::console::Client::new(
                Caller::new(Endpoint(h), Some(SAY_TIMEOUT_US)),
                &mut buf,
            );
            let written = matches!(c.write(bytes), Ok(libipc::console::Reply::Written { .. }));
            let _ = ipc::handle_close(h);
            if written {
                return;
            }
        }
        let _ = sys::debug_write(bytes);
    }

    fn server(&self, index: u64) -> Reply<'static> {
        let Some((spec, s)) = usize::try_from(index)
            .ok()
            .and_then(|i| Some((SERVERS.get(i)?, self.slots[i])))
        else {
            return Reply::End {};
        };
        Reply::Server {
            name: spec.name,
            pid: s.process.map_or(0, |p| p.id()),
            restarts: s.restarts,
            registered: s.registered && s.process.is_some(),
        }
    }
}

/// Whether `h` (a handle with no rights) names an endpoint. Each probe checks the object's kind before the right, so on
/// a handle without the right it changes nothing: a notification answers
/// `signal` with `PermissionDenied`, a process `process_kill` and a thread
/// `thread_kill` likewise; an endpoint answers all three `WrongType`.
fn is_endpoint(h: u32) -> bool {
    ipc::signal(Notification(h), 0) == Err(libipc::Error::WrongType)
        && sys::process_kill(ProcessHandle::from_raw(h)) == Err(libipc::Error::WrongType)
        && sys::thread_kill(sys::ThreadHandle::from_raw(h)) == Err(libipc::Error::WrongType)
}

impl Handler<Names> for Service {
    fn handle<'r>(&'r mut self, badge: u64, req: Request<'r>) -> Reply<'r> {
        match req {
            Request::Register { name, ep } => self.register(badge, name, ep.0),
            Request::Lookup { name } => self.lookup(badge, name),
            Request::Server { index } => self.server(index),
            Request::Restart { name } => self.restart(badge, name),
            Request::Exited { slot, status } => self.exited(badge, slot, status),
            Request::LookupFor { name, pid } => self.lookup_for(badge, name, pid),
            Request::Rejoin {} => crate::rejoin::answer(badge),
        }
    }
}

/// A SEND handle to the loader's endpoint, looked up through the service
/// (the caller closes it); `None` if it is not registered.
pub fn loader() -> Option<Endpoint> {
    let ep = Endpoint(ENDPOINT.load(Ordering::Relaxed));
    libipc::names::lookup_newer(ep, libipc::loader::NAME, 0, libipc::names::RECOVERY_NS)
        .ok()
        .map(|(ep, _)| ep)
}
