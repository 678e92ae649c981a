//! A range map from port or MMIO addresses to named devices. Overlapping ranges are refused
//! when a device is added; a read hands the device a zero-filled buffer; an access no device
//! claims is reported to the caller, which counts it and decides what it means. The names
//! ("serial", "virtio-blk@0xd0000000") are what `--trace` prints for each access.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::DeviceRequest;

/// A device on a bus. `offset` is relative to the device's base address.
pub trait BusDevice: Send {
    /// Fills `data` for a read at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write at `offset`; may ask for the VM to stop.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest>;
}

/// A device shared between the bus and its owner.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors when adding a device.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The new range overlaps one already on the bus.
    #[error(
        "bus range {base:#x}+{len:#x} ({name}) overlaps {other_name} at {other:#x}+{other_len:#x}"
    )]
    Overlap {
        /// The new device.
        name: String,
        /// The device already there.
        other_name: String,
        /// New range start.
        base: u64,
        /// New range length.
        len: u64,
        /// Existing range start.
        other: u64,
        /// Existing range length.
        other_len: u64,
    },
    /// Zero-length or wrapping range.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Range start.
        base: u64,
        /// Range length.
        len: u64,
    },
}

struct Entry {
    name: Cow<'static, str>,
    len: u64,
    /// Address that the device sees as offset 0 (a device may sit on several ranges).
    origin: u64,
    device: SharedDevice,
}

/// A port-I/O or MMIO bus.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.ranges.iter().map(|(b, e)| (*b, e.len)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device`, called `name`, at `[base, base + len)`, seeing offsets from `base`.
    pub fn insert(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        base: u64,
        len: u64,
        device: SharedDevice,
    ) -> Result<(), Error> {
        self.insert_with_origin(name, base, len, base, device)
    }

    /// Puts `device`, called `name`, at `[base, base + len)`, seeing offsets from `origin`:
    /// for devices whose registers are not contiguous (the i8042 at 0x60 and 0x64).
    pub fn insert_with_origin(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        base: u64,
        len: u64,
        origin: u64,
        device: SharedDevice,
    ) -> Result<(), Error> {
        let end = match base.checked_add(len) {
            Some(end) if len > 0 && origin <= base => end,
            _ => return Err(Error::InvalidRange { base, len }),
        };
        let name = name.into();
        let before = self.ranges.range(..end).next_back();
        if let Some((&other, e)) = before {
            if other + e.len > base {
                return Err(Error::Overlap {
                    name: name.into_owned(),
                    other_name: e.name.to_string(),
                    base,
                    len,
                    other,
                    other_len: e.len,
                });
            }
        }
        self.ranges.insert(
            base,
            Entry {
                name,
                len,
                origin,
                device,
            },
        );
        Ok(())
    }

    /// The device at `addr` and the offset it sees. The one lookup of the bus: every port and
    /// MMIO access makes it, so it is kept to a single instance of the range search.
    fn find(&self, addr: u64) -> Option<(u64, &Entry)> {
        let (&base, e) = self.ranges.range(..=addr).next_back()?;
        (addr - base < e.len).then(|| (addr - e.origin, e))
    }

    /// The name of the device that claims `addr`, if one does.
    pub fn claimant(&self, addr: u64) -> Option<&str> {
        self.find(addr).map(|(_, e)| &*e.name)
    }

    /// Reads from the device at `addr`. `data` is zeroed first. Returns false when no device
    /// claims the address (and leaves `data` alone).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((offset, e)) = self.find(addr) else {
            return false;
        };
        data.fill(0);
        lock(&e.device).read(offset, data);
        true
    }

    /// Writes to the device at `addr`. `None` when no device claims the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<Option<DeviceRequest>> {
        let (offset, e) = self.find(addr)?;
        Some(lock(&e.device).write(offset, data))
    }
}

/// Locks a device or any other state kvmini shares between threads. A panic while holding
/// the lock aborts the process (release profile), so a poisoned lock can only be seen in
/// tests; the state is still usable there.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = offset as u8;
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
            self.last_write = Some((offset, data.to_vec()));
            None
        }
    }

    fn dev() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn refuses_overlapping_and_empty_ranges() {
        let mut bus = Bus::new();
        bus.insert("a", 0x3f8, 8, dev()).unwrap();
        let overlap = bus.insert("b", 0x3ff, 1, dev()).unwrap_err();
        assert!(matches!(overlap, Error::Overlap { other: 0x3f8, .. }));
        assert_eq!(
            overlap.to_string(),
            "bus range 0x3ff+0x1 (b) overlaps a at 0x3f8+0x8"
        );
        assert!(matches!(
            bus.insert("d", 0x3f0, 9, dev()),
            Err(Error::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert("d", 0x3f0, 0, dev()),
            Err(Error::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert("d", u64::MAX, 2, dev()),
            Err(Error::InvalidRange { .. })
        ));
        // Adjacent ranges are fine on both sides.
        bus.insert("d", 0x3f0, 8, dev()).unwrap();
        bus.insert("d", 0x400, 1, dev()).unwrap();
    }

    #[test]
    fn routes_accesses_with_offsets_and_zero_fills_reads() {
        let mut bus = Bus::new();
        let d = dev();
        bus.insert("d", 0x3f8, 8, d.clone()).unwrap();
        let mut buf = [0xaa; 2];
        assert!(bus.read(0x3fd, &mut buf));
        assert_eq!(buf, [5, 0]);
        assert_eq!(bus.write(0x3f8, b"x"), Some(None));
        assert_eq!(d.lock().unwrap().last_write, Some((0, b"x".to_vec())));
    }

    #[test]
    fn reports_unclaimed_addresses() {
        let mut bus = Bus::new();
        bus.insert("d", 0x60, 1, dev()).unwrap();
        let mut buf = [0xff];
        assert!(!bus.read(0x61, &mut buf));
        assert_eq!(buf, [0xff]);
        assert_eq!(bus.write(0x5f, b"x"), None);
    }

    #[test]
    fn names_the_device_that_claims_an_address() {
        let mut bus = Bus::new();
        bus.insert("serial", 0x3f8, 8, dev()).unwrap();
        bus.insert(format!("virtio-blk@{:#x}", 0x400), 0x400, 4, dev())
            .unwrap();
        assert_eq!(bus.claimant(0x3f8), Some("serial"));
        assert_eq!(bus.claimant(0x3ff), Some("serial"));
        assert_eq!(bus.claimant(0x403), Some("virtio-blk@0x400"));
        assert_eq!(bus.claimant(0x400 + 4), None);
        assert_eq!(bus.claimant(0x3f7), None);
    }

    #[test]
    fn a_device_can_sit_on_two_ranges_with_one_origin() {
        let mut bus = Bus::new();
        let d = dev();
        bus.insert_with_origin("i8042", 0x60, 1, 0x60, d.clone())
            .unwrap();
        bus.insert_with_origin("i8042", 0x64, 1, 0x60, d.clone())
            .unwrap();
        bus.write(0x64, &[0xfe]).unwrap();
        assert_eq!(d.lock().unwrap().last_write, Some((4, vec![0xfe])));
        assert!(!bus.read(0x62, &mut [0]));
    }
}
