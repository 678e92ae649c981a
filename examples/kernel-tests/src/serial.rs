//! Output on COM1, the 8250 UART at I/O port 0x3f8, which kvmini (like QEMU) shows on its
//! standard output. Polled: wait until the transmitter holding register is empty, then
//! write the byte (the 8250 datasheet's registers; kvmini's UART needs no set-up).

use core::arch::asm;
use core::fmt;

const COM1: u16 = 0x3f8;
/// Line status register, and its "transmitter holding register empty" bit.
const LSR: u16 = COM1 + 5;
const LSR_THRE: u8 = 1 << 5;

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading the UART's line status register has no side effect on memory.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack)) };
    value
}

fn outb(port: u16, value: u8) {
    // SAFETY: writing a byte to the UART touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

/// Writes one byte to the serial port.
pub fn write_byte(byte: u8) {
    while inb(LSR) & LSR_THRE == 0 {}
    outb(COM1, byte);
}

/// The serial port as a `fmt::Write` sink, for [`serial_print!`](crate::serial_print).
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(write_byte);
        Ok(())
    }
}

/// `print!` to the serial port.
#[macro_export]
macro_rules! serial_print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Serial, $($arg)*);
    }};
}

/// `println!` to the serial port.
#[macro_export]
macro_rules! serial_println {
    () => { $crate::serial_print!("\n") };
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}
