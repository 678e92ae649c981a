//! The numbers the options are written in: memory sizes with binary suffixes, byte counts,
//! addresses in decimal or hex, and sizes as people read them.

use super::Error;

/// Parses a memory size: a number with an optional binary suffix (`K`, `M`, `G`, `T`,
/// optionally followed by `iB` or `B`, or `B` alone for bytes). A plain number counts MiB, as
/// QEMU's `-m` does.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    parse_size_in(s, 20)
}

/// Parses a byte count: the grammar of [`parse_size`], but a plain number counts bytes.
pub fn parse_byte_count(s: &str) -> Result<u64, Error> {
    parse_size_in(s, 0)
}

/// The one size grammar; a number without a suffix is shifted by `plain_shift`.
fn parse_size_in(s: &str, plain_shift: u32) -> Result<u64, Error> {
    let bad = || Error::BadSize(s.to_string());
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let too_large = || Error::SizeTooLarge(s.to_string());
    let n: u64 = num
        .parse()
        .map_err(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow => too_large(),
            _ => bad(),
        })?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" => plain_shift,
        "m" | "mb" | "mib" => 20,
        "b" => 0,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(too_large)
}

/// Parses an address or count: decimal, or hexadecimal with `0x`.
pub fn parse_u64(s: &str) -> Result<u64, Error> {
    let t = s.trim().replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| Error::BadNumber(s.to_string()))
}

/// `16 MiB`, `1.5 GiB`, `4096 bytes`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit {
            let whole = bytes / unit;
            let tenth = (bytes % unit) * 10 / unit;
            return if tenth == 0 {
                format!("{whole} {name}")
            } else {
                format!("{whole}.{tenth} {name}")
            };
        }
    }
    format!("{bytes} bytes")
}
