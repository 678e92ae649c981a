//! A test kernel that passes: each function runs inside the VM and reports on the serial
//! port.

#![no_std]
#![no_main]

use kernel_tests::serial_println;

/// Arithmetic, with the values kept from the compiler so that the guest computes them.
fn arithmetic() {
    let x = core::hint::black_box(6u64);
    assert_eq!(x * 7, 42);
    assert_eq!(x.pow(3) % 17, 12);
}

/// Formatting through core::fmt (padding counts characters with SSE code in `core`), and
/// the serial port between two test lines.
fn formatting() {
    let mut buf = [0u8; 32];
    let mut w = Buf {
        buf: &mut buf,
        len: 0,
    };
    core::fmt::write(&mut w, format_args!("{:#x}/{:>6}", 255, "héllo")).unwrap();
    assert_eq!(w.text(), "0xff/ héllo");
    serial_println!("(formatted {:?})", w.text());
}

/// Where the tests run: ring 3, as src/entry.rs set up (CS's low two bits are the CPL).
fn privilege() {
    let cs: u64;
    // SAFETY: reading CS has no side effects.
    unsafe { core::arch::asm!("mov {:r}, cs", out(reg) cs, options(nomem, nostack)) };
    assert_eq!(cs & 3, 3, "the tests run at ring 3");
}

struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Buf<'_> {
    fn text(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap()
    }
}

impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

kernel_tests::kernel_main!(arithmetic, formatting, privilege);
