//! Segment descriptors: encoding GDT entries and the matching `kvm_segment`s.
//!
//! Source of truth: Intel SDM Vol. 3A, 3.4.5 "Segment Descriptors" and 3.4.5.1 "Code- and
//! Data-Segment Descriptor Types".

use kvm_bindings::kvm_segment;

/// Access/flags nibbles of the descriptors kvmini uses, in the layout `gdt_entry` expects:
/// bits 15..12 are G, D/B, L, AVL; bits 7..0 are P, DPL, S, type.
pub mod flags {
    /// 64-bit code, ring 0: G=1, L=1, P=1, DPL=0, S=1, type=execute/read, accessed.
    pub const CODE64: u16 = 0xa09b;
    /// 32-bit code, ring 0: G=1, D=1, P=1, DPL=0, S=1, type=execute/read, accessed.
    pub const CODE32: u16 = 0xc09b;
    /// Flat data, ring 0: G=1, B=1, P=1, DPL=0, S=1, type=read/write, accessed.
    pub const DATA: u16 = 0xc093;
    /// 64-bit code, ring 3.
    pub const USER_CODE64: u16 = 0xa0fb;
    /// Flat data, ring 3.
    pub const USER_DATA: u16 = 0xc0f3;
}

/// Selectors of the GDT that kvmini writes at `layout::GDT_START`.
pub mod selector {
    /// 64-bit kernel code.
    pub const CODE64: u16 = 0x08;
    /// Flat kernel data.
    pub const DATA: u16 = 0x10;
    /// 32-bit kernel code.
    pub const CODE32: u16 = 0x18;
    /// Flat user data (RPL 3).
    pub const USER_DATA: u16 = 0x20 | 3;
    /// 64-bit user code (RPL 3).
    pub const USER_CODE64: u16 = 0x28 | 3;
}

/// The GDT kvmini gives raw protected- and long-mode guests, indexed by selector / 8.
pub const BOOT_GDT: [u64; 6] = [
    0,
    gdt_entry(flags::CODE64, 0, 0xfffff),
    gdt_entry(flags::DATA, 0, 0xfffff),
    gdt_entry(flags::CODE32, 0, 0xfffff),
    gdt_entry(flags::USER_DATA, 0, 0xfffff),
    gdt_entry(flags::USER_CODE64, 0, 0xfffff),
];

/// Encodes one 8-byte segment descriptor.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The hidden part of a segment register, as KVM wants it, for descriptor `entry` loaded
/// through `selector`.
pub fn kvm_segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granularity = ((entry >> 55) & 1) as u8;
    // With G set, the limit counts 4 KiB pages; KVM wants it in bytes.
    let limit = if granularity == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The segment for `selector` in [`BOOT_GDT`].
pub fn boot_segment(selector: u16) -> kvm_segment {
    kvm_segment_from_gdt(BOOT_GDT[usize::from(selector >> 3)], selector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_classic_flat_descriptors() {
        // The well-known values from every x86 boot loader.
        assert_eq!(gdt_entry(flags::CODE64, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(flags::CODE32, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_entry(flags::DATA, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn encodes_base_and_limit_split_fields() {
        let e = gdt_entry(0x4093, 0x1234_5678, 0xabcde);
        assert_eq!(e, 0x124a_9334_5678_bcde);
        let s = kvm_segment_from_gdt(e, 0x10);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde); // G=0: byte granular
        assert_eq!(s.db, 1);
        assert_eq!(s.g, 0);
    }

    #[test]
    fn decodes_the_boot_segments() {
        let cs = boot_segment(selector::CODE64);
        assert_eq!((cs.selector, cs.base, cs.limit), (0x08, 0, 0xffff_ffff));
        assert_eq!(
            (cs.l, cs.db, cs.dpl, cs.s, cs.present, cs.type_),
            (1, 0, 0, 1, 1, 0xb)
        );

        let cs32 = boot_segment(selector::CODE32);
        assert_eq!((cs32.l, cs32.db), (0, 1));

        let ds = boot_segment(selector::DATA);
        assert_eq!((ds.type_, ds.db, ds.g, ds.unusable), (3, 1, 1, 0));

        let ucs = boot_segment(selector::USER_CODE64);
        assert_eq!((ucs.selector, ucs.dpl, ucs.l), (0x2b, 3, 1));
        let uds = boot_segment(selector::USER_DATA);
        assert_eq!((uds.selector, uds.dpl), (0x23, 3));
    }

    #[test]
    fn a_null_descriptor_is_unusable() {
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
    }
}
