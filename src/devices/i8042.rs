//! The i8042 keyboard controller, only as far as a guest's reset request goes: command 0xFE
//! written to port 0x64 stops the VM (a clean stop). The emulation is `vm_superio`'s.

use std::cell::Cell;

use vm_superio::{I8042Device, Trigger};

use super::{BusDevice, DeviceRequest};

/// Data port; the device sees it as offset 0.
pub const I8042_DATA_PORT: u64 = 0x60;
/// Command/status port; offset 4.
pub const I8042_COMMAND_PORT: u64 = 0x64;

/// Remembers that the controller asked for a CPU reset.
#[derive(Debug, Default)]
pub struct ResetFlag(Cell<bool>);

impl Trigger for ResetFlag {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(true);
        Ok(())
    }
}

/// The i8042 on the port bus.
#[derive(Debug)]
pub struct I8042 {
    inner: I8042Device<ResetFlag>,
}

impl Default for I8042 {
    fn default() -> Self {
        I8042 {
            inner: I8042Device::new(ResetFlag::default()),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = self.inner.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        let &value = data.first()?;
        // The trigger is infallible.
        let _ = self.inner.write(offset as u8, value);
        self.inner
            .reset_evt()
            .0
            .take()
            .then_some(DeviceRequest::Reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_on_the_command_port_asks_for_reset() {
        let mut d = I8042::default();
        assert_eq!(d.write(4, &[0xfe]), Some(DeviceRequest::Reset));
        assert_eq!(d.write(4, &[0xfd]), None);
        assert_eq!(d.write(0, &[0xfe]), None);
        // The request is reported once per command.
        assert_eq!(d.write(4, &[0x20]), None);
    }
}
