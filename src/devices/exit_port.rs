//! The exit port: a guest writes one byte V to I/O port 0xf4 and kvmini stops the VM and
//! exits with status V. This is how test guests report pass or fail (QEMU's
//! `isa-debug-exit` sits at the same port, with a different status encoding).

use super::{BusDevice, DeviceRequest};

/// I/O port of the exit device.
pub const EXIT_PORT: u64 = 0xf4;

/// The exit device.
#[derive(Debug, Default)]
pub struct ExitPort;

impl BusDevice for ExitPort {
    fn read(&mut self, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        // `outw`/`outl` carry the status in their low byte.
        data.first().map(|&v| DeviceRequest::Exit(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_asks_to_exit_with_its_low_byte() {
        assert_eq!(ExitPort.write(0, &[42]), Some(DeviceRequest::Exit(42)));
        assert_eq!(
            ExitPort.write(0, &[7, 1, 0, 0]),
            Some(DeviceRequest::Exit(7))
        );
        assert_eq!(ExitPort.write(0, &[]), None);
    }
}
