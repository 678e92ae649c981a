//! Emulated devices and the buses that route port I/O and MMIO to them.

pub mod bus;
pub mod debug_exit;
pub mod debug_port;
pub mod exit_port;
pub mod i8042;
pub mod serial;
pub mod virtio;

pub use bus::{lock, Bus, BusDevice};

/// What a device asks of the VM after a guest access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// Stop the VM; the guest asked for this exit status (exit port).
    Exit(u8),
    /// Stop the VM; the guest asked for a reset (i8042 command 0xFE).
    Reset,
    /// Stop the VM; the guest wrote more serial output than allowed.
    OutputLimit(u64),
    /// Stop the VM; the guest's serial output could not be written.
    OutputFailed(serial::WriteFailure),
    /// Stop the VM and save it; the guest asked for a snapshot.
    Snapshot,
    /// Stop the VM; the guest wrote this value to QEMU's debug-exit device.
    DebugExit(u32),
}
