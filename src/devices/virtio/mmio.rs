//! The virtio-mmio transport (version 2, "modern"): the registers a driver finds at a
//! device's MMIO window, feature negotiation, queue set-up, the device status, and the
//! hand-off of queue notifications and device events to the device.
//!
//! Source of truth: VIRTIO 1.2, section 4.2.2 (MMIO device register layout) and 3.1 (device
//! initialization).

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{
    Context, DeviceError, EventRegistry, Interrupt, VirtioDevice, F_EVENT_IDX, F_VERSION_1,
};
use crate::devices::{BusDevice, DeviceRequest};
use crate::memory::GuestMem;

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
/// The register layout of virtio 1.x devices.
const VERSION: u32 = 2;
/// "KVMI": who made the device, as PCI vendor IDs say it for other transports.
pub const VENDOR_ID: u32 = 0x494d_564b;
/// Size of a device's MMIO window: the registers, then its configuration space.
pub const WINDOW_SIZE: u64 = 0x1000;
/// Offset of the queue notification register, where the ioeventfds listen.
pub const NOTIFY_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;

/// One device behind the virtio-mmio registers.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMem,
    queues: Vec<Queue>,
    /// One per queue: what the ioeventfd at the notify register signals, or a write that
    /// KVM did not match (another width) is passed on to.
    queue_evts: Vec<EventFd>,
    interrupt: Interrupt,
    events: EventRegistry,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    config_generation: u32,
    active: bool,
    /// The first fault, kept for the report at the end of the run.
    fault: Option<String>,
    /// Chains the device answered, for the statistics.
    requests: u64,
}

/// A transport shared by the MMIO bus (vCPU threads) and the I/O thread.
pub type SharedTransport = Arc<Mutex<MmioTransport>>;

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device", &self.device.name())
            .field("status", &self.status)
            .field("active", &self.active)
            .finish()
    }
}

impl MmioTransport {
    /// Puts `device` behind the registers; `interrupt` raises its line, `events` is its
    /// place in the I/O thread's event loop.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMem,
        interrupt: Interrupt,
        events: EventRegistry,
    ) -> std::io::Result<Self> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("device queue sizes are powers of two"))
            .collect::<Vec<_>>();
        let queue_evts = (0..queues.len())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<_, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            queues,
            queue_evts,
            interrupt,
            events,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            config_generation: 0,
            active: false,
            fault: None,
            requests: 0,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &'static str {
        self.device.name()
    }

    /// The eventfds of the device's queues, in queue order.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The first fault the device met, if any.
    pub fn fault(&self) -> Option<&str> {
        self.fault.as_deref()
    }

    /// Chains the device answered so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Queue `index` was notified: clear its eventfd and let the device work, if it runs.
    pub fn queue_notified(&mut self, index: usize) {
        if let Some(evt) = self.queue_evts.get(index) {
            // Nothing to read means a spurious wake-up; the queue is looked at anyway.
            let _ = evt.read();
        }
        if self.active && index < self.queues.len() {
            self.with_context(|device, ctx| device.process_queue(index, ctx));
        }
    }

    /// One of the device's own file descriptors is ready.
    pub fn device_event(&mut self, source: u32, events: EventSet) {
        if self.active {
            self.with_context(|device, ctx| device.process_event(source, events, ctx));
        }
    }

    fn with_context(
        &mut self,
        f: impl FnOnce(&mut dyn VirtioDevice, &mut Context<'_>) -> Result<(), DeviceError>,
    ) {
        let mut ctx = Context {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &self.interrupt,
            events: &self.events,
            used: 0,
        };
        let result = f(self.device.as_mut(), &mut ctx);
        self.requests += ctx.used;
        if let Err(e) = result {
            self.needs_reset(e);
        }
    }

    /// The device cannot go on until the driver resets it (VIRTIO 1.2, 2.1.2).
    fn needs_reset(&mut self, e: DeviceError) {
        if self.fault.is_none() {
            self.fault = Some(format!("{}: {e}", self.device.name()));
        }
        // The device stops: its own file descriptors are no longer watched until the driver
        // resets and starts it again.
        if self.active {
            self.device.reset(&self.events);
        }
        self.active = false;
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.interrupt.signal_config();
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset(&self.events);
        }
        self.active = false;
        self.status = 0;
        self.acked_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt.clear();
        for q in &mut self.queues {
            q.reset();
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queues are set up only between FEATURES_OK and DRIVER_OK (VIRTIO 1.2, 3.1.1).
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u32) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | F_VERSION_1 | F_EVENT_IDX
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    // A size that is not a power of two up to the maximum is refused, and
                    // the queue then fails its check at DRIVER_OK.
                    let _ = q.try_set_size(value.min(u32::from(u16::MAX)) as u16);
                }
            }
            VIRTIO_MMIO_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                // A notification KVM's ioeventfd did not match (not a 32-bit write of the
                // queue's index): passed on the same way, so the work stays on the I/O
                // thread.
                if let Some(evt) = self.queue_evts.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => self.write_status(value),
            VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                let (low, high) = low_high(offset == VIRTIO_MMIO_QUEUE_DESC_HIGH, value);
                if let Some(q) = self.selected_queue() {
                    q.set_desc_table_address(low, high);
                }
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                let (low, high) = low_high(offset == VIRTIO_MMIO_QUEUE_AVAIL_HIGH, value);
                if let Some(q) = self.selected_queue() {
                    q.set_avail_ring_address(low, high);
                }
            }
            VIRTIO_MMIO_QUEUE_USED_LOW | VIRTIO_MMIO_QUEUE_USED_HIGH => {
                let (low, high) = low_high(offset == VIRTIO_MMIO_QUEUE_USED_HIGH, value);
                if let Some(q) = self.selected_queue() {
                    q.set_used_ring_address(low, high);
                }
            }
            _ => {}
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are fixed once the driver set FEATURES_OK.
        if self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            return;
        }
        match self.driver_features_sel {
            0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.acked_features = (self.acked_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            _ => {}
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value & !VIRTIO_CONFIG_S_NEEDS_RESET;
        let new = value & !self.status;
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            // Only what was offered, and a modern driver (VIRTIO 1.2, 3.1.1, step 5): else
            // FEATURES_OK does not stick and the driver gives up.
            let offered = self.offered_features();
            if self.acked_features & !offered != 0 || self.acked_features & F_VERSION_1 == 0 {
                value &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        self.status = value | (self.status & VIRTIO_CONFIG_S_NEEDS_RESET);
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 && value & VIRTIO_CONFIG_S_FAILED == 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 || self.active {
            return;
        }
        let event_idx = self.acked_features & F_EVENT_IDX != 0;
        for (index, q) in self.queues.iter_mut().enumerate() {
            if !q.ready() {
                continue;
            }
            if !q.is_valid(&self.mem) {
                self.needs_reset(DeviceError::Queue {
                    queue: index,
                    source: virtio_queue::Error::QueueNotReady,
                });
                return;
            }
            q.set_event_idx(event_idx);
        }
        self.active = true;
        self.with_context(|device, ctx| device.activate(ctx));
        // Buffers the driver made available before DRIVER_OK (a receive queue) are seen.
        self.process_ready_queues();
    }

    /// Lets the running device look at each of its ready queues.
    fn process_ready_queues(&mut self) {
        for index in 0..self.queues.len() {
            if self.active && self.queues[index].ready() {
                self.with_context(|device, ctx| device.process_queue(index, ctx));
            }
        }
    }
}

/// Which half of a 64-bit address a register write sets.
fn low_high(high: bool, value: u32) -> (Option<u32>, Option<u32>) {
    if high {
        (None, Some(value))
    } else {
        (Some(value), None)
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
        } else if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.read_register(offset as u32).to_le_bytes());
        }
        // Registers are 32 bits wide: other accesses read 0 (the bus zeroed `data`).
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            self.config_generation = self.config_generation.wrapping_add(1);
        } else if let (Ok(bytes), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.write_register(offset as u32, u32::from_le_bytes(bytes));
        }
        None
    }
}

/// Copies the part of `config` at `offset` into `data`; bytes beyond it stay 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[path = "mmio_state.rs"]
pub mod state;

#[cfg(test)]
#[path = "mmio_tests.rs"]
pub(crate) mod tests;
