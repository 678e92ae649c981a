//! A transport's part of a snapshot: its registers and queues given as a [`VirtioState`] and
//! taken back by the transport of the restored VM, which may sit on a new backend; and the
//! quiescent point a save needs: every queue the driver notified served, its used ring
//! written.
//!
//! Source of truth: VIRTIO 1.2, sections 2.7 (split virtqueues) and 4.2.2 (registers).

use virtio_queue::{Queue, QueueState, QueueT};

use super::MmioTransport;
use crate::devices::virtio::state::{TransportState, VirtioState, CONFIG_BYTES};

/// Why a saved device cannot be taken back.
#[derive(Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The new device is not the saved one: another kind, size, ... (for a person).
    Mismatch(String),
    /// The saved registers or queues are impossible.
    Corrupt(&'static str),
}

impl MmioTransport {
    /// Serves every queue the driver may have notified, so that no request is left half-way
    /// and every answer is on its used ring. With the vCPUs stopped nothing new arrives
    /// after it: the I/O thread calls it before a save.
    pub fn drain(&mut self) {
        for index in 0..self.queues.len() {
            self.queue_notified(index);
        }
    }

    /// The device's state for a snapshot, taken after [`MmioTransport::drain`].
    pub fn save(&self) -> VirtioState {
        let mut config = vec![0; CONFIG_BYTES];
        self.device.read_config(0, &mut config);
        VirtioState {
            device: self.device.save(),
            transport: TransportState {
                device_type: self.device.device_type(),
                offered_features: self.offered_features(),
                status: self.status,
                device_features_sel: self.device_features_sel,
                driver_features_sel: self.driver_features_sel,
                acked_features: self.acked_features,
                queue_sel: self.queue_sel,
                config_generation: self.config_generation,
                active: self.active,
                interrupt_status: self.interrupt.status(),
                queues: self.queues.iter().map(|q| q.state().into()).collect(),
                config,
            },
        }
    }

    /// Takes a saved state, before the VM runs: the device checks its new backend against
    /// the saved one and adopts what the guest knows of it; then the registers and queues
    /// are set as the driver left them. Nothing runs until [`MmioTransport::resume`].
    pub fn restore(&mut self, saved: &VirtioState) -> Result<(), RestoreError> {
        self.device
            .restore(&saved.device)
            .map_err(RestoreError::Mismatch)?;
        let t = &saved.transport;
        if t.device_type != self.device.device_type() {
            return Err(RestoreError::Corrupt("a virtio device's type"));
        }
        if t.offered_features != self.offered_features() {
            return Err(RestoreError::Mismatch(format!(
                "it offers the features {:#x}, and the saved device offered {:#x}",
                self.offered_features(),
                t.offered_features
            )));
        }
        let mut config = vec![0; CONFIG_BYTES];
        self.device.read_config(0, &mut config);
        if config != t.config {
            return Err(RestoreError::Mismatch(
                "its configuration space differs from the saved device's".into(),
            ));
        }
        self.queues = restore_queues(&self.queues, &t.queues)?;
        self.status = t.status;
        self.device_features_sel = t.device_features_sel;
        self.driver_features_sel = t.driver_features_sel;
        self.acked_features = t.acked_features;
        self.queue_sel = t.queue_sel;
        self.config_generation = t.config_generation;
        self.active = t.active;
        self.interrupt.restore(t.interrupt_status);
        Ok(())
    }

    /// Once the restored vCPUs have their state: a running device watches its own
    /// descriptors again and looks at its queues, and an interrupt the driver has not
    /// acknowledged is raised again (the one signalled before the save may not have reached
    /// the interrupt controller whose state was saved; a second one finds nothing to do).
    pub fn resume(&mut self) {
        if self.active {
            self.with_context(|device, ctx| device.resume(ctx));
            self.process_ready_queues();
        }
        self.interrupt.raise_pending();
    }
}

/// The saved queues, checked against the device's own (`ours`).
fn restore_queues(
    ours: &[Queue],
    saved: &[super::super::state::QueueSaved],
) -> Result<Vec<Queue>, RestoreError> {
    let corrupt = RestoreError::Corrupt("a virtio device's queues");
    if ours.len() != saved.len() {
        return Err(corrupt);
    }
    ours.iter()
        .zip(saved)
        .map(|(q, s)| {
            if s.max_size != q.max_size() {
                return Err(RestoreError::Corrupt("a virtio device's queues"));
            }
            Queue::try_from(QueueState::from(*s))
                .map_err(|_| RestoreError::Corrupt("a virtio device's queues"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use virtio_bindings::virtio_mmio::*;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::mmio::tests::{initialize, read, transport, write};
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::state::DeviceState;
    use crate::devices::virtio::test_util::{desc, Harness, BUFFERS, WRITE};
    use crate::devices::virtio::{EventRegistry, Interrupt};
    use crate::devices::BusDevice;

    /// A running rng that answered one request and has an interrupt pending.
    fn used_once() -> MmioTransport {
        let mut t = transport();
        initialize(&mut t, 1);
        write(&mut t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
        let mock = virtio_queue::mock::MockSplitQueue::create(&t.mem, GuestAddress(0), 16);
        mock.add_desc_chains(&[desc(BUFFERS, 32, WRITE, 0)], 0)
            .unwrap();
        t.queue_evts()[0].write(1).unwrap();
        t.drain();
        t
    }

    #[test]
    fn a_restored_transport_goes_on_where_the_saved_one_was() {
        let t = used_once();
        assert_eq!(t.requests(), 1);
        let saved = t.save();
        assert_eq!(saved.device, DeviceState::Rng);
        assert!(saved.transport.active);
        assert_eq!(saved.transport.queues[0].next_avail, 1);
        assert_eq!(saved.transport.queues[0].next_used, 1);

        // The restored VM: the same guest memory, a new transport.
        let epoll = Arc::new(vmm_sys_util::epoll::Epoll::new().unwrap());
        let mut back = MmioTransport::new(
            Box::new(Rng),
            t.mem.clone(),
            Interrupt::new(None),
            EventRegistry::new(epoll, 0),
        )
        .unwrap();
        back.restore(&saved).unwrap();
        back.resume();
        assert_eq!(back.save(), saved);
        assert_eq!(read(&mut back, VIRTIO_MMIO_INTERRUPT_STATUS), 1);
        assert_eq!(read(&mut back, VIRTIO_MMIO_STATUS), 1 | 2 | 8 | 4);
        // The driver's next request (descriptor 1, available entry 1) is served from where
        // the queue was.
        let (table, avail, _) = Harness::new(1).rings(0);
        let mem = &t.mem;
        mem.write_obj(desc(BUFFERS, 16, WRITE, 0), GuestAddress(table + 16))
            .unwrap();
        mem.write_obj(1u16, GuestAddress(avail + 4 + 2)).unwrap();
        mem.write_obj(2u16, GuestAddress(avail + 2)).unwrap();
        back.queue_notified(0);
        assert_eq!(back.requests(), 1);
        assert_eq!(back.save().transport.queues[0].next_used, 2);
    }

    #[test]
    fn impossible_queues_and_another_device_are_refused() {
        let saved = used_once().save();
        let mut other = saved.clone();
        other.transport.queues[0].size = 3;
        assert_eq!(
            transport().restore(&other),
            Err(RestoreError::Corrupt("a virtio device's queues"))
        );
        other = saved.clone();
        other.transport.queues.push(other.transport.queues[0]);
        assert!(matches!(
            transport().restore(&other),
            Err(RestoreError::Corrupt(_))
        ));
        other = saved.clone();
        other.transport.offered_features ^= 1 << 40;
        assert!(matches!(
            transport().restore(&other),
            Err(RestoreError::Mismatch(m)) if m.contains("features")
        ));
        other = saved;
        other.device = DeviceState::Net {
            tap: "tap0".into(),
            mac: [2, 0, 0, 0, 0, 1],
        };
        assert!(matches!(
            transport().restore(&other),
            Err(RestoreError::Mismatch(m)) if m.contains("virtio-rng") && m.contains("virtio-net")
        ));
        // A byte read of a register still reads nothing after a refused restore.
        let mut t = transport();
        let mut byte = [0xffu8];
        t.read(0, &mut byte);
        assert_eq!(byte, [0xff]);
    }
}
