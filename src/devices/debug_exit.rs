//! QEMU's `isa-debug-exit` device, for kernels whose test frameworks were written for QEMU
//! (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`): a guest writes V to the device's ports
//! and the VMM exits with status `(V << 1) | 1`. With `--debug-exit qemu` it takes the place of
//! kvmini's own exit port.
//!
//! Source of truth: QEMU's `hw/misc/debugexit.c` (defaults iobase 0x501, iosize 2; the value
//! written is read little-endian, as wide as the access).

use super::{BusDevice, DeviceRequest};

/// QEMU's default I/O base.
pub const DEFAULT_IOBASE: u16 = 0x501;
/// QEMU's default width of the port range.
pub const DEFAULT_IOSIZE: u8 = 2;

/// Where the device sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebugExitConfig {
    /// First port.
    pub iobase: u16,
    /// Ports it spans: 1, 2 or 4.
    pub iosize: u8,
}

impl Default for DebugExitConfig {
    fn default() -> Self {
        DebugExitConfig {
            iobase: DEFAULT_IOBASE,
            iosize: DEFAULT_IOSIZE,
        }
    }
}

/// The device.
#[derive(Debug, Default)]
pub struct DebugExit;

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        if data.is_empty() {
            return None;
        }
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        Some(DeviceRequest::DebugExit(u32::from_le_bytes(bytes)))
    }
}

/// The process exit status QEMU gives for value `v`: `(v << 1) | 1`, of which a process
/// status keeps the low byte.
pub fn status(v: u32) -> u8 {
    ((v << 1) | 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_of_v_exits_with_v_shifted_left_and_the_low_bit_set() {
        assert_eq!(
            DebugExit.write(0, &[0x10]),
            Some(DeviceRequest::DebugExit(0x10))
        );
        assert_eq!(status(0x10), 33);
        assert_eq!(status(0), 1);
        assert_eq!(
            DebugExit.write(0, &[0x11, 0, 0, 0]),
            Some(DeviceRequest::DebugExit(0x11))
        );
        assert_eq!(status(0x11), 35);
        // Only the low byte of the status survives, as with QEMU's own exit().
        assert_eq!(status(0x80), 1);
        assert_eq!(DebugExit.write(0, &[]), None);
    }
}
