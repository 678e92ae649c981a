//! Ending the run through QEMU's `isa-debug-exit` device at port 0xf4, 4 bytes wide: the
//! VMM exits with status `(value << 1) | 1`. It is the convention of kernels tested under
//! QEMU (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`, as with bootimage); kvmini offers
//! the same device with `--debug-exit qemu,iobase=0xf4,iosize=4`.

use core::arch::asm;

/// The debug-exit device's port.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the kernel reports; the process status is `(code << 1) | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Every test passed: status 33, which the runner's `--success-status 33` makes 0.
    Success = 0x10,
    /// A test failed: status 35.
    Failed = 0x11,
}

/// Stops the VM with `code`.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: a 4-byte write to the exit device; the VM stops there.
    unsafe {
        asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") code as u32,
             options(nomem, nostack));
    }
    // Not reached under a VMM with the device. Elsewhere, wait here: `hlt` is not allowed
    // at ring 3.
    loop {
        core::hint::spin_loop();
    }
}
