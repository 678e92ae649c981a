//! What a snapshot holds besides guest memory: plain data, serialized with serde. Each part
//! is what one owner gives and takes back: a vCPU ([`VcpuState`]), the in-kernel PC platform
//! ([`PlatformState`]), the UART ([`SerialState`]), each virtio device
//! ([`VirtioState`](crate::devices::virtio::state::VirtioState)), and the machine they form
//! ([`Machine`]).

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use serde::{Deserialize, Serialize};

/// The machine the state belongs to: a restore builds the same one before setting the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// Number of vCPUs.
    pub cpus: u8,
    /// A Linux guest: the in-kernel PIC, IO-APIC, LAPICs and PIT, and the UART's IRQ.
    pub pc_platform: bool,
    /// What an access to unclaimed MMIO means.
    pub unclaimed_mmio: crate::config::UnclaimedMmio,
    /// What was booted, for `--stats`.
    pub boot_summary: String,
    /// The kernel command line, for `--stats`.
    pub cmdline: Option<String>,
    /// CPUID features hidden from the guest, for `--stats` (the CPUID itself is per vCPU).
    pub hidden_cpu_features: Vec<String>,
    /// QEMU's debug-exit device in place of kvmini's exit port.
    pub debug_exit: Option<crate::devices::debug_exit::DebugExitConfig>,
}

/// The host a snapshot was taken on, as far as a restore must match it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// `pvm`, `hardware`, `nested` or `unknown`.
    pub kind: String,
    /// The vCPUs' TSC frequency: without TSC scaling a guest can only go on at the same one.
    pub tsc_khz: u32,
}

/// One vCPU, everything `KVM_GET_*` gives.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID the vCPU was given.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// The XSAVE area: x87, SSE and the extended state (KVM_GET_FPU would say the same again).
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Every MSR KVM lists.
    pub msrs: Vec<kvm_msr_entry>,
    /// The local APIC, with the PC platform.
    pub lapic: Option<kvm_lapic_state>,
    /// Running, halted, waiting for SIPI...
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts and NMIs.
    pub events: kvm_vcpu_events,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
}

/// The in-kernel PC platform of a Linux guest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlatformState {
    /// The PICs (master, slave) and the IO-APIC, in `KVM_IRQCHIP_*` order.
    pub irqchips: Vec<kvm_irqchip>,
    /// The PIT.
    pub pit: kvm_pit_state2,
    /// The KVM clock.
    pub clock: kvm_clock_data,
}

/// The 8250 UART's registers and receive FIFO (vm-superio's `SerialState`, as plain data).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    /// Divisor latch, low and high byte.
    pub baud_divisor: [u8; 2],
    /// IER.
    pub interrupt_enable: u8,
    /// IIR.
    pub interrupt_identification: u8,
    /// LCR.
    pub line_control: u8,
    /// LSR.
    pub line_status: u8,
    /// MCR.
    pub modem_control: u8,
    /// MSR.
    pub modem_status: u8,
    /// SCR.
    pub scratch: u8,
    /// Received bytes the guest has not read.
    pub in_buffer: Vec<u8>,
    /// A guest driver has enabled the receive interrupt (kvmini's own console state).
    pub input_ready: bool,
}

/// Where guest memory is in the memory file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLayout {
    /// The RAM regions, in order: (guest-physical start, size); each lies in the file right
    /// after the one before.
    pub regions: Vec<(u64, u64)>,
    /// The ranges of the file that hold data (offset, length); the rest are holes that read
    /// as zeros. A restore reads these ahead.
    pub resident: Vec<(u64, u64)>,
    /// A checksum of the data in those ranges, in order: a restore reads them anyway (that
    /// warms the page cache for the guest) and refuses a memory file whose data changed.
    pub checksum: u64,
}

impl MemoryLayout {
    /// The memory file's length (`u64::MAX` for regions whose sizes overflow, which no file
    /// and no machine matches).
    pub fn file_len(&self) -> u64 {
        self.regions
            .iter()
            .try_fold(0u64, |sum, (_, size)| sum.checked_add(*size))
            .unwrap_or(u64::MAX)
    }

    /// Whether the data ranges are in order, apart, and inside the file, as a save writes
    /// them (a state file is checksummed against damage, not made safe against forgery).
    pub fn ranges_are_sound(&self) -> bool {
        let mut end = 0;
        self.resident.iter().all(|&(offset, len)| {
            let ok = offset >= end
                && offset
                    .checked_add(len)
                    .is_some_and(|e| e <= self.file_len());
            end = offset.saturating_add(len);
            ok
        })
    }
}

/// Everything but guest memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// The host it was taken on.
    pub host: HostState,
    /// The machine.
    pub machine: Machine,
    /// The vCPUs, by index.
    pub vcpus: Vec<VcpuState>,
    /// The PC platform, for Linux guests.
    pub platform: Option<PlatformState>,
    /// The UART.
    pub serial: SerialState,
    /// The virtio devices, in slot order (`src/devices/virtio/state.rs`).
    pub devices: Vec<crate::devices::virtio::state::VirtioState>,
    /// The memory file's layout.
    pub memory: MemoryLayout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_memory_layout_is_refused_not_overflowed() {
        let mut layout = MemoryLayout {
            regions: vec![(0, 16 << 20)],
            resident: vec![(0, 0x1000), (0x10_0000, 0x2000)],
            checksum: 0,
        };
        assert_eq!(layout.file_len(), 16 << 20);
        assert!(layout.ranges_are_sound());
        layout.resident = vec![(0x10_0000, 0x1000), (0, 0x10)];
        assert!(!layout.ranges_are_sound(), "out of order");
        layout.resident = vec![(u64::MAX, 2)];
        assert!(!layout.ranges_are_sound(), "past the end of u64");
        layout.resident = vec![((16 << 20) - 0x1000, 0x1001)];
        assert!(!layout.ranges_are_sound(), "past the end of the file");
        layout.regions.push((4 << 30, u64::MAX));
        assert_eq!(layout.file_len(), u64::MAX);
    }
}
