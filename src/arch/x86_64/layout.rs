//! Every fixed guest-physical address kvmini uses, each with what lives there.
//!
//! Low memory follows the conventions of the PC and of other small VMMs (Firecracker's
//! `arch/x86_64/layout.rs`, kvmtool's flat-binary loader), so guests written for them
//! find things where they expect them.

/// The global descriptor table kvmini builds for protected- and long-mode entry.
pub const GDT_START: u64 = 0x500;
/// Highest address of kvmini's boot structures (exclusive): raw images in protected or
/// long mode must not overlap `[GDT_START, BOOT_STRUCTURES_END)`.
pub const BOOT_STRUCTURES_END: u64 = 0xf000;
/// `struct hvm_start_info` for the PVH boot protocol (56 bytes).
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map (`hvm_memmap_table_entry` array), right after the start info.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// PVH module list (`hvm_modlist_entry`: the initrd), after the memory map.
pub const PVH_MODLIST_START: u64 = 0x6100;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for protected- and long-mode entry; the stack grows down
/// towards the zero page.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 of the identity map built for long-mode entry.
pub const PML4_START: u64 = 0x9000;
/// The one page-directory-pointer table of the identity map.
pub const PDPTE_START: u64 = 0xa000;
/// Page directories of the identity map, one 4 KiB page per GiB mapped.
pub const PDE_START: u64 = 0xb000;
/// How much of the guest-physical space the identity map covers (2 MiB pages).
pub const IDENTITY_MAP_SIZE: u64 = 4 << 30;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line kvmini places (bytes, including the terminating NUL).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Multiboot kernels: the information structure (Multiboot 1 `multiboot_info` or the
/// Multiboot 2 tags) and everything it points to: the command line, the boot loader's name,
/// the memory map, the module list and the modules' strings. EBX holds this address at entry.
pub const MULTIBOOT_INFO_START: u64 = 0x1_0000;
/// End (exclusive) of the Multiboot information area. A Multiboot kernel must load above
/// it (kvmini refuses one that overlaps `[GDT_START, MULTIBOOT_INFO_END)`); modules go above
/// the kernel.
pub const MULTIBOOT_INFO_END: u64 = 0x8_0000;
/// End of the boot loader's heap that Linux may use below the zero page's real-mode code
/// (`heap_end_ptr`, an offset in the real-mode segment).
pub const BOOT_HEAP_END: u16 = 0xfe00;

/// Default load address of raw real-mode images: kvmtool's flat-binary convention,
/// entered at `CS:IP = 0x1000:0x0000`.
pub const REAL_MODE_LOAD_ADDR: u64 = 0x10000;
/// Initial stack pointer of real-mode entry: top of the image's 64 KiB segment.
pub const REAL_MODE_STACK_POINTER: u64 = 0xfff0;
/// Everything a real-mode image contains must sit below this address.
pub const REAL_MODE_LIMIT: u64 = 0x10_0000;
/// Default load address of raw protected- and long-mode images (1 MiB).
pub const HIGH_LOAD_ADDR: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole: RAM above this size continues at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Three pages the Intel VMX implementation of KVM needs for real-mode emulation on CPUs
/// without "unrestricted guest" (`KVM_SET_TSS_ADDR`); inside the MMIO hole.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// Where the local APICs are (the architectural default; KVM's in-kernel LAPIC sits there).
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// Where KVM's in-kernel IO-APIC is.
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;

/// The first virtio-mmio device's window, in the MMIO hole (where Firecracker puts its own);
/// the next device's is [`VIRTIO_MMIO_SIZE`] higher.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of each virtio-mmio window: the registers, then the device's configuration space.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The first virtio device's interrupt (ISA IRQ 5, GSI 5 on the IO-APIC); the next device
/// gets the next line.
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// The last interrupt line a device may get: the IO-APIC's 24th pin.
pub const VIRTIO_LAST_IRQ: u32 = 23;
/// How many virtio devices fit: one interrupt line each.
pub const VIRTIO_MMIO_MAX_DEVICES: usize = (VIRTIO_LAST_IRQ - VIRTIO_FIRST_IRQ + 1) as usize;

/// The MP floating pointer and configuration table (SMP guests): the last KiB of base
/// memory, where Linux looks for them.
pub const MPTABLE_START: u64 = 0x9fc00;
/// Start of the extended BIOS data area: the guest's memory map reports RAM below it, then
/// a hole up to 1 MiB, as on a PC.
pub const EBDA_START: u64 = 0x9fc00;
