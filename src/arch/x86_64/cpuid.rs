//! The CPUID a guest sees: what KVM supports on this host, with the hypervisor bit set and
//! this vCPU's APIC ID filled in.
//!
//! Source of truth: Intel SDM Vol. 2A, "CPUID—CPU Identification" (leaf 1 EBX[31:24] initial
//! APIC ID, ECX[31] hypervisor present; leaves 0xB/0x1F x2APIC ID in EDX).

use kvm_bindings::kvm_cpuid_entry2;

/// CPUID.1:ECX bit 31: running under a hypervisor.
pub const ECX_HYPERVISOR: u32 = 1 << 31;

/// Adjusts the supported-CPUID entries for vCPU `apic_id`.
pub fn filter_entries(entries: &mut [kvm_cpuid_entry2], apic_id: u8) {
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ecx |= ECX_HYPERVISOR;
                e.ebx = (e.ebx & 0x00ff_ffff) | (u32::from(apic_id) << 24);
            }
            0xb | 0x1f => e.edx = u32::from(apic_id),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_hypervisor_bit_and_apic_ids() {
        let mut entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0a01_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                edx: 7,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                edx: 7,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: 0xffff,
                ..Default::default()
            },
        ];
        filter_entries(&mut entries, 3);
        assert_eq!(entries[0].ebx, 0x0301_0800);
        assert_eq!(entries[0].ecx & ECX_HYPERVISOR, ECX_HYPERVISOR);
        assert_eq!((entries[1].edx, entries[2].edx), (3, 3));
        assert_eq!(entries[3].ebx, 0xffff);
    }
}
