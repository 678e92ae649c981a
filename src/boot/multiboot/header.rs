//! Finding and reading a Multiboot header in the first bytes of a kernel file: pure functions
//! over those bytes.
//!
//! - Multiboot 1: magic 0x1BADB002, 4-byte aligned in the first 8 KiB; `flags` bits 0-15 are
//!   requirements a boot loader must refuse when it cannot meet them, bit 16 says the a.out
//!   kludge's address fields follow.
//! - Multiboot 2: magic 0xE85250D6, 8-byte aligned in the first 32 KiB, then tags (8-byte
//!   aligned, each with an "optional" flag) up to an end tag.
//!
//! Sources: the Multiboot Specification 0.6.96, 3.1 "OS image format"; the Multiboot2
//! Specification 2.0, 3.1 "OS image format".

use super::Problem;

/// The Multiboot 1 header's magic.
pub const MB1_MAGIC: u32 = 0x1bad_b002;
/// A Multiboot 1 header must start in the first 8 KiB of the file...
pub const MB1_SEARCH: usize = 8 << 10;
/// ...and a Multiboot 2 one in the first 32 KiB.
pub const MB2_SEARCH: usize = 32 << 10;
/// The Multiboot 2 header's magic.
pub const MB2_MAGIC: u32 = 0xe852_50d6;
/// Bytes of the file kvmini reads to find and parse a header: the Multiboot 2 window and
/// room for its tags.
pub const HEAD_LEN: usize = 64 << 10;

/// Multiboot 1 `flags`: modules page-aligned (kvmini always aligns them).
const MB1_PAGE_ALIGN: u32 = 1 << 0;
/// Multiboot 1 `flags`: memory information wanted (kvmini always gives it).
const MB1_MEMORY_INFO: u32 = 1 << 1;
/// Multiboot 1 `flags`: a video mode wanted (kvmini has no display).
const MB1_VIDEO_MODE: u32 = 1 << 2;
/// Multiboot 1 `flags`: the address fields are valid.
const MB1_ADDRESS_FIELDS: u32 = 1 << 16;

/// Multiboot 2 architecture: 32-bit (protected mode) i386.
const MB2_ARCH_I386: u32 = 0;
/// Multiboot 2 tag flag: a boot loader that does not know the tag may ignore it.
const MB2_TAG_OPTIONAL: u16 = 1;
/// Multiboot 2 console flags: a console must be present.
const MB2_CONSOLE_REQUIRED: u32 = 1;

/// Multiboot 2 header tag types.
mod tag {
    pub const END: u16 = 0;
    pub const INFORMATION_REQUEST: u16 = 1;
    pub const ADDRESS: u16 = 2;
    pub const ENTRY_ADDRESS: u16 = 3;
    pub const CONSOLE_FLAGS: u16 = 4;
    pub const FRAMEBUFFER: u16 = 5;
    pub const MODULE_ALIGN: u16 = 6;
    pub const EFI_BOOT_SERVICES: u16 = 7;
    pub const EFI_I386_ENTRY: u16 = 8;
    pub const EFI_AMD64_ENTRY: u16 = 9;
    pub const RELOCATABLE: u16 = 10;
}

/// The information tags kvmini gives (Multiboot 2 types): command line, boot loader name,
/// modules, basic memory information, memory map.
pub const MB2_PROVIDED: [u32; 5] = [1, 2, 3, 4, 6];

/// Which Multiboot protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Multiboot 1 (0.6.96).
    One,
    /// Multiboot 2.
    Two,
}

impl Version {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            Version::One => 1,
            Version::Two => 2,
        }
    }

    /// What the kernel finds in EAX at entry.
    pub fn boot_magic(self) -> u32 {
        match self {
            Version::One => 0x2bad_b002,
            Version::Two => 0x36d7_6289,
        }
    }
}

/// The a.out kludge: where the file goes without ELF headers (Multiboot 1 flag bit 16, the
/// Multiboot 2 address tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressFields {
    /// Where the header itself is loaded.
    pub header_addr: u32,
    /// Where the first loaded byte goes (Multiboot 2: 0xffffffff for the file's start).
    pub load_addr: u32,
    /// End of the loaded bytes; 0 for the end of the file.
    pub load_end_addr: u32,
    /// End of the zeroed memory after them; 0 for none.
    pub bss_end_addr: u32,
}

/// A Multiboot header, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The protocol.
    pub version: Version,
    /// File offset of the header.
    pub offset: u64,
    /// The a.out kludge's address fields, if given.
    pub address: Option<AddressFields>,
    /// The entry point the header names (Multiboot 1 with address fields; the Multiboot 2
    /// entry address tag), if any.
    pub entry: Option<u32>,
}

/// Which headers to look for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Either; Multiboot 2 when the file has both.
    Any,
    /// Only this one.
    Only(Version),
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn half(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Where one protocol's magic was found in `head`: the first place whose checksum holds,
/// else the first place whose checksum does not (with the sum it came to, or `None` when
/// the file ends before the checksum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Scan {
    valid: Option<usize>,
    bad: Option<(usize, Option<u32>)>,
}

/// The magic, the alignment, the search window and the words the checksum covers.
fn shape(version: Version) -> (u32, usize, usize, usize) {
    match version {
        Version::One => (MB1_MAGIC, 4, MB1_SEARCH, 3),
        Version::Two => (MB2_MAGIC, 8, MB2_SEARCH, 4),
    }
}

fn scan(head: &[u8], version: Version) -> Scan {
    let (magic, align, window, words) = shape(version);
    let mut found = Scan::default();
    for at in (0..window.min(head.len())).step_by(align) {
        if word(head, at) != Some(magic) {
            continue;
        }
        let sum = (0..words)
            .map(|i| word(head, at + 4 * i))
            .try_fold(0u32, |sum, w| Some(sum.wrapping_add(w?)));
        if sum == Some(0) {
            found.valid = Some(at);
            return found;
        }
        found.bad.get_or_insert((at, sum));
    }
    found
}

/// Looks for a Multiboot header in `head` (the first bytes of a file of `len` bytes).
/// `Ok(None)`: no magic at all. A magic whose checksum does not add up, or a header that
/// asks for what kvmini cannot give, is an error.
pub fn find(head: &[u8], len: u64, want: Want) -> Result<Option<Header>, Problem> {
    let versions: &[Version] = match want {
        Want::Any => &[Version::Two, Version::One],
        Want::Only(Version::One) => &[Version::One],
        Want::Only(Version::Two) => &[Version::Two],
    };
    let scans: Vec<(Version, Scan)> = versions.iter().map(|&v| (v, scan(head, v))).collect();
    if let Some((version, at)) = scans.iter().find_map(|&(v, s)| s.valid.map(|at| (v, at))) {
        return match version {
            Version::One => parse_mb1(head, at, len).map(Some),
            Version::Two => parse_mb2(head, at, len).map(Some),
        };
    }
    match scans.iter().find_map(|&(v, s)| s.bad.map(|b| (v, b))) {
        Some((version, (offset, None))) => {
            let needed = offset + 4 * shape(version).3;
            Err(truncated(version, offset, needed, len))
        }
        Some((version, (offset, Some(sum)))) => Err(Problem::Checksum {
            version: version.number(),
            offset: offset as u64,
            sum,
        }),
        None => Ok(None),
    }
}

fn truncated(version: Version, offset: usize, needed: usize, len: u64) -> Problem {
    Problem::HeaderTruncated {
        version: version.number(),
        offset: offset as u64,
        needed: needed as u64,
        len,
    }
}

/// The Multiboot 1 header at `at`, whose checksum holds.
fn parse_mb1(head: &[u8], at: usize, len: u64) -> Result<Header, Problem> {
    let flags = word(head, at + 4).unwrap_or(0);
    if flags & MB1_VIDEO_MODE != 0 {
        return Err(Problem::NeedsVideo);
    }
    let unknown = flags & 0xffff & !(MB1_PAGE_ALIGN | MB1_MEMORY_INFO);
    if unknown != 0 {
        return Err(Problem::RequiredFlags(unknown));
    }
    let mut header = Header {
        version: Version::One,
        offset: at as u64,
        address: None,
        entry: None,
    };
    if flags & MB1_ADDRESS_FIELDS != 0 {
        let field = |i: usize| word(head, at + 12 + 4 * i);
        let (Some(header_addr), Some(load_addr), Some(load_end_addr), Some(bss_end_addr)) =
            (field(0), field(1), field(2), field(3))
        else {
            return Err(truncated(Version::One, at, at + 32, len));
        };
        header.address = Some(AddressFields {
            header_addr,
            load_addr,
            load_end_addr,
            bss_end_addr,
        });
        header.entry = Some(field(4).ok_or_else(|| truncated(Version::One, at, at + 32, len))?);
    }
    Ok(header)
}

/// One Multiboot 2 header tag.
struct Tag<'a> {
    kind: u16,
    optional: bool,
    /// The bytes after the 8-byte tag header.
    body: &'a [u8],
    /// File offset, for messages.
    offset: usize,
}

/// The tags of the Multiboot 2 header `header` (at file offset `at`), up to the end tag.
fn tags(header: &[u8], at: usize) -> Result<Vec<Tag<'_>>, Problem> {
    let mut tags = Vec::new();
    let mut pos = 16;
    loop {
        let (Some(kind), Some(flags), Some(size)) = (
            half(header, pos),
            half(header, pos + 2),
            word(header, pos + 4),
        ) else {
            return Err(Problem::NoEndTag);
        };
        let size = size as usize;
        let body = header
            .get(pos + 8..pos.saturating_add(size))
            .filter(|_| size >= 8)
            .ok_or(Problem::BadTag {
                offset: (at + pos) as u64,
                kind,
                size: size as u32,
            })?;
        if kind == tag::END {
            return Ok(tags);
        }
        tags.push(Tag {
            kind,
            optional: flags & MB2_TAG_OPTIONAL != 0,
            body,
            offset: at + pos,
        });
        pos = (pos + size).next_multiple_of(8);
    }
}

fn tag_words<const N: usize>(t: &Tag<'_>) -> Result<[u32; N], Problem> {
    let bad = || Problem::BadTag {
        offset: t.offset as u64,
        kind: t.kind,
        size: (t.body.len() + 8) as u32,
    };
    if t.body.len() < 4 * N {
        return Err(bad());
    }
    Ok(std::array::from_fn(|i| word(t.body, 4 * i).unwrap_or(0)))
}

/// The Multiboot 2 header at `at`, whose checksum holds.
fn parse_mb2(head: &[u8], at: usize, len: u64) -> Result<Header, Problem> {
    let arch = word(head, at + 4).unwrap_or(0);
    if arch != MB2_ARCH_I386 {
        return Err(Problem::Architecture(arch));
    }
    let length = word(head, at + 8).unwrap_or(0) as usize;
    let end = at.saturating_add(length);
    if length < 16 {
        return Err(Problem::HeaderLength(length as u32));
    }
    let header = match head.get(at..end) {
        Some(h) => h,
        None if (head.len() as u64) < len => return Err(Problem::HeaderLength(length as u32)),
        None => return Err(truncated(Version::Two, at, end, len)),
    };
    let mut parsed = Header {
        version: Version::Two,
        offset: at as u64,
        address: None,
        entry: None,
    };
    for t in tags(header, at)? {
        match t.kind {
            tag::INFORMATION_REQUEST if !t.optional => {
                let wanted = t.body.chunks_exact(4).filter_map(|w| word(w, 0));
                if let Some(missing) = wanted.into_iter().find(|w| !MB2_PROVIDED.contains(w)) {
                    return Err(Problem::InformationRequest(missing));
                }
            }
            tag::ADDRESS => {
                let [header_addr, load_addr, load_end_addr, bss_end_addr] = tag_words(&t)?;
                parsed.address = Some(AddressFields {
                    header_addr,
                    load_addr,
                    load_end_addr,
                    bss_end_addr,
                });
            }
            tag::ENTRY_ADDRESS => parsed.entry = Some(tag_words::<1>(&t)?[0]),
            tag::CONSOLE_FLAGS if !t.optional => {
                if tag_words::<1>(&t)?[0] & MB2_CONSOLE_REQUIRED != 0 {
                    return Err(Problem::NeedsConsole);
                }
            }
            tag::FRAMEBUFFER if !t.optional => return Err(Problem::NeedsFramebuffer),
            // Ignored: kvmini page-aligns modules anyway, there is no EFI, and a relocatable
            // kernel also runs where it was linked.
            tag::INFORMATION_REQUEST
            | tag::CONSOLE_FLAGS
            | tag::FRAMEBUFFER
            | tag::MODULE_ALIGN
            | tag::EFI_BOOT_SERVICES
            | tag::EFI_I386_ENTRY
            | tag::EFI_AMD64_ENTRY
            | tag::RELOCATABLE => {}
            _ if t.optional => {}
            kind => return Err(Problem::UnknownTag(kind)),
        }
    }
    if parsed.address.is_some() && parsed.entry.is_none() {
        return Err(Problem::AddressWithoutEntry);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Multiboot 1 header with `flags` (and `fields` after the checksum) at `at`.
    fn mb1(at: usize, flags: u32, fields: &[u32]) -> Vec<u8> {
        let mut f = vec![0u8; at];
        let checksum = 0u32.wrapping_sub(MB1_MAGIC.wrapping_add(flags));
        for w in [MB1_MAGIC, flags, checksum].iter().chain(fields) {
            f.extend_from_slice(&w.to_le_bytes());
        }
        f
    }

    /// A Multiboot 2 header at `at` with the given tags (type, flags, body words) and the
    /// end tag.
    fn mb2(at: usize, tags: &[(u16, u16, &[u32])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, flags, words) in tags {
            body.extend_from_slice(&kind.to_le_bytes());
            body.extend_from_slice(&flags.to_le_bytes());
            body.extend_from_slice(&(8 + 4 * words.len() as u32).to_le_bytes());
            for w in *words {
                body.extend_from_slice(&w.to_le_bytes());
            }
            body.resize(body.len().next_multiple_of(8), 0);
        }
        body.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
        let length = 16 + body.len() as u32;
        let checksum = 0u32.wrapping_sub(MB2_MAGIC.wrapping_add(length));
        let mut f = vec![0u8; at];
        for w in [MB2_MAGIC, 0, length, checksum] {
            f.extend_from_slice(&w.to_le_bytes());
        }
        f.extend_from_slice(&body);
        f
    }

    fn found(f: &[u8], want: Want) -> Result<Option<Header>, Problem> {
        find(f, f.len() as u64, want)
    }

    #[test]
    fn multiboot1_headers_are_found_aligned_in_the_first_8_kib() {
        let h = found(&mb1(0x1000, 3, &[]), Want::Any).unwrap().unwrap();
        assert_eq!(
            (h.version, h.offset, h.address),
            (Version::One, 0x1000, None)
        );
        // Not 4-byte aligned, or past 8 KiB: not a header.
        assert_eq!(found(&mb1(0x1002, 3, &[]), Want::Any), Ok(None));
        assert_eq!(found(&mb1(8 << 10, 3, &[]), Want::Any), Ok(None));
        assert_eq!(found(b"", Want::Any), Ok(None));
    }

    #[test]
    fn multiboot1_address_fields_and_flags() {
        let f = mb1(
            8,
            0x1_0003,
            &[0x10_0008, 0x10_0000, 0x10_2000, 0x10_4000, 0x10_0020],
        );
        let h = found(&f, Want::Any).unwrap().unwrap();
        assert_eq!(
            h.address,
            Some(AddressFields {
                header_addr: 0x10_0008,
                load_addr: 0x10_0000,
                load_end_addr: 0x10_2000,
                bss_end_addr: 0x10_4000
            })
        );
        assert_eq!(h.entry, Some(0x10_0020));
        // Bits 16-31 other than 16 are optional and ignored.
        assert!(found(&mb1(0, 0x8000_0003, &[]), Want::Any).is_ok());
        assert_eq!(found(&mb1(0, 4, &[]), Want::Any), Err(Problem::NeedsVideo));
        assert_eq!(
            found(&mb1(0, 0x8001, &[]), Want::Any),
            Err(Problem::RequiredFlags(0x8000))
        );
        // Address fields promised, file ends first.
        let f = mb1(0, 0x1_0000, &[0x10_0000, 0x10_0000]);
        assert!(matches!(
            found(&f, Want::Any),
            Err(Problem::HeaderTruncated { needed: 32, .. })
        ));
    }

    #[test]
    fn a_bad_checksum_is_an_error_unless_a_good_header_follows() {
        let mut f = mb1(0, 3, &[]);
        f[8] = f[8].wrapping_add(1);
        let err = found(&f, Want::Any).unwrap_err();
        assert!(matches!(
            err,
            Problem::Checksum {
                version: 1,
                offset: 0,
                sum: 1
            }
        ));
        assert!(err.to_string().contains("checksum"), "{err}");
        f.extend_from_slice(&mb1(0, 3, &[]));
        assert_eq!(found(&f, Want::Any).unwrap().unwrap().offset, 12);
        // The magic at the very end of the file: truncated.
        let f = MB1_MAGIC.to_le_bytes();
        assert!(matches!(
            found(&f, Want::Any),
            Err(Problem::HeaderTruncated { version: 1, .. })
        ));
    }

    #[test]
    fn multiboot2_is_preferred_when_both_are_there() {
        let mut f = mb1(0, 3, &[]);
        f.resize(0x100, 0);
        f.extend_from_slice(&mb2(0, &[])[..]);
        let h = found(&f, Want::Any).unwrap().unwrap();
        assert_eq!((h.version, h.offset), (Version::Two, 0x100));
        let h = found(&f, Want::Only(Version::One)).unwrap().unwrap();
        assert_eq!((h.version, h.offset), (Version::One, 0));
        assert_eq!(found(&mb1(0, 3, &[]), Want::Only(Version::Two)), Ok(None));
        // Multiboot 2 needs 8-byte alignment; it may be as far as 32 KiB in.
        let mut f = vec![0u8; 4];
        f.extend_from_slice(&mb2(0, &[]));
        assert_eq!(found(&f, Want::Any), Ok(None));
        let h = found(&mb2(0x7ff0, &[]), Want::Any).unwrap().unwrap();
        assert_eq!(h.offset, 0x7ff0);
    }

    #[test]
    fn multiboot2_address_and_entry_tags() {
        let f = mb2(
            0,
            &[
                (tag::ADDRESS, 0, &[0x10_0000, 0x10_0000, 0, 0]),
                (tag::ENTRY_ADDRESS, 0, &[0x10_0040]),
                (tag::MODULE_ALIGN, 0, &[]),
                (tag::INFORMATION_REQUEST, 0, &[1, 2, 6]),
                (tag::FRAMEBUFFER, 1, &[0, 0, 0]),
                (77, 1, &[]),
            ],
        );
        let h = found(&f, Want::Any).unwrap().unwrap();
        assert_eq!(h.entry, Some(0x10_0040));
        assert_eq!(h.address.unwrap().header_addr, 0x10_0000);
    }

    #[test]
    fn multiboot2_refuses_what_it_cannot_give() {
        let refused = |tags: &[(u16, u16, &[u32])]| found(&mb2(0, tags), Want::Any).unwrap_err();
        assert_eq!(
            refused(&[(tag::INFORMATION_REQUEST, 0, &[1, 8])]),
            Problem::InformationRequest(8)
        );
        assert_eq!(refused(&[(77, 0, &[])]), Problem::UnknownTag(77));
        assert_eq!(
            refused(&[(tag::FRAMEBUFFER, 0, &[0, 0, 0])]),
            Problem::NeedsFramebuffer
        );
        assert_eq!(
            refused(&[(tag::CONSOLE_FLAGS, 0, &[1])]),
            Problem::NeedsConsole
        );
        assert_eq!(
            refused(&[(tag::ADDRESS, 0, &[0, 0, 0, 0])]),
            Problem::AddressWithoutEntry
        );
        assert!(matches!(
            refused(&[(tag::ENTRY_ADDRESS, 0, &[])]),
            Problem::BadTag {
                kind: 3,
                size: 8,
                ..
            }
        ));
        // An optional information request is a wish, not a requirement.
        assert!(found(&mb2(0, &[(tag::INFORMATION_REQUEST, 1, &[8])]), Want::Any).is_ok());
    }

    #[test]
    fn multiboot2_header_bounds() {
        let mut f = mb2(0, &[]);
        // No end tag: the header length cuts the tags short.
        let length = 16u32;
        f[8..12].copy_from_slice(&length.to_le_bytes());
        f[12..16].copy_from_slice(&0u32.wrapping_sub(MB2_MAGIC + length).to_le_bytes());
        assert_eq!(found(&f, Want::Any), Err(Problem::NoEndTag));
        // Longer than the file.
        let length = 64u32;
        f[8..12].copy_from_slice(&length.to_le_bytes());
        f[12..16].copy_from_slice(&0u32.wrapping_sub(MB2_MAGIC + length).to_le_bytes());
        assert!(matches!(
            found(&f, Want::Any),
            Err(Problem::HeaderTruncated { needed: 64, .. })
        ));
        // Another architecture.
        let mut f = mb2(0, &[]);
        f[4] = 4;
        f[12..16].copy_from_slice(&0u32.wrapping_sub(MB2_MAGIC + 4 + 24).to_le_bytes());
        assert_eq!(found(&f, Want::Any), Err(Problem::Architecture(4)));
        // A tag whose size runs past the header.
        let mut f = mb2(0, &[(tag::MODULE_ALIGN, 0, &[])]);
        f[20..24].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            found(&f, Want::Any),
            Err(Problem::BadTag { size: 100, .. })
        ));
    }
}
