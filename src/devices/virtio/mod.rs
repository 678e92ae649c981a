//! Virtio devices over MMIO, for Linux guests.
//!
//! Each device is a [`VirtioDevice`]: what it offers (type, queues, features, configuration
//! space) and what it does with a request. The one transport, [`mmio::MmioTransport`], gives
//! it the registers of the virtio-mmio interface (version 2) on the MMIO bus, its
//! [`Queue`]s, and its interrupt. Queue notifications arrive through ioeventfds and the work
//! runs on the I/O thread ([`io_thread`]), never on a vCPU thread; interrupts go out through
//! an irqfd to the in-kernel IO-APIC.
//!
//! Descriptor chains, the used ring and the event index are `virtio-queue`'s: a device reads
//! a request through its bounds-checked [`Reader`] and answers through its [`Writer`].
//!
//! Source of truth: the Virtual I/O Device (VIRTIO) specification, version 1.2: 2.7 (split
//! virtqueues), 4.2 (virtio over MMIO) and 5 (the device types).

pub mod block;
pub mod io_thread;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod setup;
pub mod state;
pub mod tap;
pub mod vsock;

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMem;

pub use virtio_queue::{DescriptorChain, Reader, Writer};

/// `VIRTIO_F_VERSION_1`: every kvmini device is a modern (virtio 1.x) device.
pub const F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// `VIRTIO_RING_F_EVENT_IDX`: the driver and the device say when they want to be told
/// about new buffers, which saves interrupts and notifications.
pub const F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// The first event source number a device may use for its own file descriptors; those
/// below are its queues.
pub const FIRST_DEVICE_SOURCE: u32 = 0x100;

/// A chain of guest memory a device uses.
pub type Chain<'a> = DescriptorChain<&'a GuestMem>;

/// A device fault: the guest broke the queue's rules in a way that leaves the device unable
/// to go on (its rings are unreadable, its available index jumps). The transport sets
/// `DEVICE_NEEDS_RESET` and tells the driver; the VM goes on.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A queue's rings could not be used.
    #[error("queue {queue}: {source}")]
    Queue {
        /// The queue's index.
        queue: usize,
        /// What virtio-queue found.
        source: virtio_queue::Error,
    },
    /// The device's backend failed (a host file or socket).
    #[error("{0}")]
    Backend(String),
}

/// A device that cannot be set up from what the user gave: reported before the guest
/// starts, as bad input.
#[derive(Debug, thiserror::Error)]
#[error("{option} {value}: {reason}")]
pub struct SetupError {
    /// The command-line option (`--disk`).
    pub option: &'static str,
    /// What it was given.
    pub value: String,
    /// What is wrong, for a person to act on.
    pub reason: String,
}

impl SetupError {
    /// `option value: reason`.
    pub fn new(option: &'static str, value: impl std::fmt::Display, reason: String) -> Self {
        SetupError {
            option,
            value: value.to_string(),
            reason,
        }
    }
}

/// What a device offers and does. Every method runs under the transport's lock, either on
/// the vCPU thread that touched a register or on the I/O thread.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// A short name for messages (`virtio-blk`).
    fn name(&self) -> &'static str;
    /// The largest size of each of the device's queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The features the device offers, [`F_VERSION_1`] included.
    fn features(&self) -> u64;
    /// Reads the device's configuration space at `offset`; what lies beyond it reads 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device's configuration space; ignored unless the device has writable
    /// fields.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver is ready (`DRIVER_OK`): the device may start, and register its own file
    /// descriptors with `ctx.events`.
    fn activate(&mut self, _ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The driver put buffers on queue `queue`.
    fn process_queue(&mut self, queue: usize, ctx: &mut Context<'_>) -> Result<(), DeviceError>;
    /// One of the device's own file descriptors is ready (`source` as registered).
    fn process_event(
        &mut self,
        _source: u32,
        _events: EventSet,
        _ctx: &mut Context<'_>,
    ) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The driver reset the device: forget every request and connection, unregister the
    /// device's own file descriptors.
    fn reset(&mut self, _events: &EventRegistry) {}
    /// The device's own part of a snapshot.
    fn save(&self) -> state::DeviceState;
    /// Takes a snapshot's state: checks that this device's backend can stand in for the
    /// saved one (a disk image of the same size, ...) and adopts what the guest already
    /// knows of it (a disk's ID, a MAC). `Err` says, for a person, how they differ.
    fn restore(&mut self, saved: &state::DeviceState) -> Result<(), String>;
    /// The VM was restored with the device running: watch its own descriptors again, as at
    /// activation, and tell the driver what it must know.
    fn resume(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        self.activate(ctx)
    }
}

/// The message of a restore that hands a device the state of another kind.
pub(crate) fn other_kind(name: &str, saved: &state::DeviceState) -> String {
    format!(
        "it is a {name} and the snapshot's device is a {}",
        saved.name()
    )
}

/// What a device works with while it handles an event.
pub struct Context<'a> {
    /// Guest memory.
    pub mem: &'a GuestMem,
    /// The device's queues, in the order of [`VirtioDevice::queue_max_sizes`].
    pub queues: &'a mut [Queue],
    /// The device's interrupt.
    pub interrupt: &'a Interrupt,
    /// Where the device registers its own file descriptors.
    pub events: &'a EventRegistry,
    /// Chains put on used rings while handling this event.
    pub used: u64,
}

impl Context<'_> {
    /// Takes every chain the driver made available on queue `index`, hands each to `handle`
    /// (which returns how many bytes it wrote into the chain) and puts it on the used ring;
    /// then interrupts the driver if it asked to be told. With the event index this goes
    /// round until no buffer arrived while notifications were off. Returns the number of
    /// chains used.
    pub fn process_chains(
        &mut self,
        index: usize,
        mut handle: impl FnMut(Chain<'_>) -> u32,
    ) -> Result<usize, DeviceError> {
        let mem = self.mem;
        let queue = &mut self.queues[index];
        let err = |source| DeviceError::Queue {
            queue: index,
            source,
        };
        let mut used = 0;
        loop {
            queue.disable_notification(mem).map_err(err)?;
            while let Some(chain) = queue.iter(mem).map_err(err)?.next() {
                let head = chain.head_index();
                let len = handle(chain);
                queue.add_used(mem, head, len).map_err(err)?;
                used += 1;
                self.used += 1;
            }
            if !queue.enable_notification(mem).map_err(err)? {
                break;
            }
        }
        if used > 0 && queue.needs_notification(mem).map_err(err)? {
            self.interrupt.signal_used_queue();
        }
        Ok(used)
    }

    /// Puts one chain the device took earlier on queue `index`'s used ring, with `len` bytes
    /// written, and interrupts the driver if it asked to be told.
    pub fn add_used(&mut self, index: usize, head: u16, len: u32) -> Result<(), DeviceError> {
        let queue = &mut self.queues[index];
        let err = |source| DeviceError::Queue {
            queue: index,
            source,
        };
        queue.add_used(self.mem, head, len).map_err(err)?;
        self.used += 1;
        if queue.needs_notification(self.mem).map_err(err)? {
            self.interrupt.signal_used_queue();
        }
        Ok(())
    }
}

/// `VIRTIO_MMIO_INT_VRING`: the device used buffers.
pub const INT_VRING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// `VIRTIO_MMIO_INT_CONFIG`: the configuration (or the device status) changed.
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// A device's interrupt: the bits of its interrupt status register, and the irqfd that
/// raises its line on the in-kernel IO-APIC.
#[derive(Debug)]
pub struct Interrupt {
    status: std::sync::atomic::AtomicU32,
    irqfd: Option<EventFd>,
}

impl Interrupt {
    /// An interrupt that signals `irqfd` (none in unit tests).
    pub fn new(irqfd: Option<EventFd>) -> Self {
        Interrupt {
            status: std::sync::atomic::AtomicU32::new(0),
            irqfd,
        }
    }

    fn signal(&self, bit: u32) {
        use std::sync::atomic::Ordering;
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Some(fd) = &self.irqfd {
            // The counter only fails to grow when it is about to overflow, which needs
            // 2^64 unread interrupts; the line is raised either way.
            let _ = fd.write(1);
        }
    }

    /// The device put buffers on a used ring.
    pub fn signal_used_queue(&self) {
        self.signal(INT_VRING);
    }

    /// The device's configuration or status changed.
    pub fn signal_config(&self) {
        self.signal(INT_CONFIG);
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The driver acknowledged these bits.
    pub fn ack(&self, bits: u32) {
        self.status
            .fetch_and(!bits, std::sync::atomic::Ordering::SeqCst);
    }

    /// Clears every bit (a device reset).
    pub fn clear(&self) {
        self.status.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sets the status bits a snapshot saved.
    pub fn restore(&self, bits: u32) {
        self.status.store(bits, std::sync::atomic::Ordering::SeqCst);
    }

    /// Raises the line again if some bit is still set (after a restore).
    pub fn raise_pending(&self) {
        if self.status() != 0 {
            self.signal(0);
        }
    }
}

/// The I/O thread's event loop as one device sees it: registers the device's file
/// descriptors under source numbers of its own choosing (from [`FIRST_DEVICE_SOURCE`]).
#[derive(Clone, Debug)]
pub struct EventRegistry {
    epoll: Arc<Epoll>,
    device: u32,
}

impl EventRegistry {
    /// The registry of device number `device` on `epoll`.
    pub fn new(epoll: Arc<Epoll>, device: u32) -> Self {
        EventRegistry { epoll, device }
    }

    /// The epoll token of `source` of this device.
    pub fn token(&self, source: u32) -> u64 {
        (u64::from(self.device) << 32) | u64::from(source)
    }

    /// Watches `fd` for `events`, reported as `source`.
    pub fn add(&self, fd: RawFd, source: u32, events: EventSet) -> std::io::Result<()> {
        let event = EpollEvent::new(events, self.token(source));
        self.epoll.ctl(ControlOperation::Add, fd, event)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, source: u32, events: EventSet) -> std::io::Result<()> {
        let event = EpollEvent::new(events, self.token(source));
        self.epoll.ctl(ControlOperation::Modify, fd, event)
    }

    /// Stops watching `fd`. A descriptor that was not watched is not an error.
    pub fn remove(&self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }
}

#[cfg(test)]
pub(crate) mod test_util;
