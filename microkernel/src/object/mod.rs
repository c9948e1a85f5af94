//! Kernel objects: data and their invariants, never blocking and never
//! calling up into the scheduler or the lifecycle code. Where an object's
//! state change must start behaviour (a process's last thread gone, an
//! address-space editor that must wait), the higher layer installed a hook
//! at boot (`lifecycle::init`), so every import still points down.

pub mod process;
pub mod space;
pub mod thread;

pub mod endpoint;
pub mod hw;
pub mod kobject;
pub mod memory;
pub mod message;
pub mod notification;
pub mod waitstate;
