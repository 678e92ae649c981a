//! The POST/debug port 0x80: a guest writes a byte and kvmini notes when each value was
//! first written. kvmini's initramfs writes 0x60 when user space starts, following Cloud
//! Hypervisor's ranges (0x00-0x1f firmware, 0x20-0x3f boot loader, 0x40-0x5f kernel,
//! 0x60-0x7f user space), so `--stats` can report boot milestones.

use std::time::Instant;

use super::{BusDevice, DeviceRequest};
use crate::stop::SnapshotTrigger;

/// I/O port of the debug port.
pub const DEBUG_PORT: u64 = 0x80;
/// The value kvmini's `/init` writes when user space is up.
pub const USERSPACE_UP: u8 = 0x60;
/// The value a guest writes to be saved right there: under `--snapshot DIR` kvmini stops the
/// VM and saves it (the last value of the user-space range).
pub const SNAPSHOT_NOW: u8 = 0x7f;

/// The debug port: first-write times of every value.
#[derive(Debug, Default)]
pub struct DebugPort {
    first: Vec<(u8, Instant)>,
    /// Fired by [`SNAPSHOT_NOW`].
    snapshot: SnapshotTrigger,
}

impl DebugPort {
    /// A debug port; [`SNAPSHOT_NOW`] fires `snapshot`, which stops the VM for a snapshot when
    /// it was armed.
    pub fn new(snapshot: SnapshotTrigger) -> Self {
        DebugPort {
            first: Vec::new(),
            snapshot,
        }
    }

    /// When `value` was first written, if ever.
    pub fn first_write(&self, value: u8) -> Option<Instant> {
        self.first
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, t)| *t)
    }

    /// Every value written, in order of first write.
    #[cfg(test)]
    pub fn values(&self) -> Vec<u8> {
        self.first.iter().map(|(v, _)| *v).collect()
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        // Firmware and kernels also use port 0x80 as a delay (`outb %al, $0x80`), writing the
        // same few values over and over: only the first write of each value is kept.
        let &v = data.first()?;
        if self.first_write(v).is_none() {
            self.first.push((v, Instant::now()));
        }
        (v == SNAPSHOT_NOW && self.snapshot.fire()).then_some(DeviceRequest::Snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_time_of_each_value() {
        let mut d = DebugPort::default();
        assert_eq!(d.write(0, &[USERSPACE_UP]), None);
        let t = d.first_write(USERSPACE_UP).unwrap();
        d.write(0, &[USERSPACE_UP]);
        d.write(0, &[0x41]);
        assert_eq!(d.first_write(USERSPACE_UP), Some(t));
        assert_eq!(d.values(), vec![USERSPACE_UP, 0x41]);
        assert!(d.first_write(0x20).is_none());
        assert_eq!(
            d.write(0, &[SNAPSHOT_NOW]),
            None,
            "not armed: only a marker"
        );
    }

    #[test]
    fn an_armed_port_turns_the_snapshot_value_into_a_request() {
        let mut d = DebugPort::new(SnapshotTrigger::new(true));
        assert_eq!(d.write(0, &[0x41]), None);
        assert_eq!(d.write(0, &[SNAPSHOT_NOW]), Some(DeviceRequest::Snapshot));
        assert_eq!(d.write(0, &[SNAPSHOT_NOW]), None, "one snapshot per run");
    }
}
