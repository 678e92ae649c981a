//! What travels over the guest's serial console once the process runs, between the holder
//! and `oci-init` (guest/linux/initramfs/oci-init.c has the same constants). One escape
//! byte, [`ESC`], doubled for a NUL byte of data:
//!
//! - to the guest: ESC N (1-64) is signal N for the process, ESC [`END`] the end of its
//!   standard input, ESC [`WINSIZE`] and four bytes the size of its terminal (rows, then
//!   columns, 16-bit little-endian); everything else is input;
//! - from the guest: ESC 1 and ESC 2 say that the process's standard output or error
//!   follows (output first).

/// The escape byte.
pub const ESC: u8 = 0;
/// After [`ESC`], to the guest: the end of the process's input.
pub const END: u8 = 0xff;

/// After [`ESC`], to the guest: the terminal's new size follows.
pub const WINSIZE: u8 = 0xfe;

/// The escape that gives the guest's terminal `rows` and `cols`.
pub fn winsize(rows: u16, cols: u16) -> [u8; 6] {
    let (r, c) = (rows.to_le_bytes(), cols.to_le_bytes());
    [ESC, WINSIZE, r[0], r[1], c[0], c[1]]
}

/// `data` with every [`ESC`] doubled.
pub fn escape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for &b in data {
        out.push(b);
        if b == ESC {
            out.push(ESC);
        }
    }
    out
}

/// One of the process's output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// Splits the guest's console output into the process's two streams.
#[derive(Debug)]
pub struct Demux {
    escaped: bool,
    stream: Stream,
}

impl Default for Demux {
    fn default() -> Self {
        Demux {
            escaped: false,
            stream: Stream::Out,
        }
    }
}

impl Demux {
    /// Takes the next bytes from the console and hands each run of data to `emit` with its
    /// stream. An escape split across two calls is kept for the next.
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(Stream, &[u8])) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if self.escaped {
                self.escaped = false;
                match b {
                    ESC => emit(self.stream, &[ESC]),
                    1 => self.stream = Stream::Out,
                    2 => self.stream = Stream::Err,
                    _ => {} // nothing else is sent: dropped
                }
                start = i + 1;
            } else if b == ESC {
                if i > start {
                    emit(self.stream, &bytes[start..i]);
                }
                self.escaped = true;
            }
        }
        if !self.escaped && start < bytes.len() {
            emit(self.stream, &bytes[start..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_double_nul_bytes_only() {
        assert_eq!(escape(b"a\0b"), b"a\0\0b");
        assert_eq!(escape(&[END, 1]), [END, 1]);
        assert_eq!(escape(b""), b"");
    }

    fn split(chunks: &[&[u8]]) -> Vec<(Stream, Vec<u8>)> {
        let mut d = Demux::default();
        let mut out: Vec<(Stream, Vec<u8>)> = Vec::new();
        for c in chunks {
            d.feed(c, |s, b| match out.last_mut() {
                Some((last, v)) if *last == s => v.extend_from_slice(b),
                _ => out.push((s, b.to_vec())),
            });
        }
        out
    }

    #[test]
    fn streams_switch_at_escapes_even_split_across_reads() {
        let got = split(&[b"out\0", b"\x02err\0\0x\0", b"\x01more"]);
        assert_eq!(
            got,
            [
                (Stream::Out, b"out".to_vec()),
                (Stream::Err, b"err\0x".to_vec()),
                (Stream::Out, b"more".to_vec()),
            ]
        );
    }
}
