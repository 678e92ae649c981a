//! The CPUID a guest sees: what KVM supports on this host, with the hypervisor bit set, this
//! vCPU's APIC ID and the VM's topology filled in, and the features the user (or the host)
//! wants hidden cleared.
//!
//! Source of truth: Intel SDM Vol. 2A, "CPUID—CPU Identification" (leaf 1 EBX[31:24] initial
//! APIC ID and EBX[23:16] logical processor count, ECX[31] hypervisor present; leaf 0xB
//! extended topology).

use kvm_bindings::kvm_cpuid_entry2;

/// CPUID.1:ECX bit 31: running under a hypervisor.
pub const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28: more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;

/// An output register of CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// A feature bit that can be hidden by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Name as in `/proc/cpuinfo`.
    pub name: &'static str,
    /// Leaf (EAX input).
    pub leaf: u32,
    /// Subleaf (ECX input).
    pub subleaf: u32,
    /// Register.
    pub reg: Reg,
    /// Bit.
    pub bit: u8,
}

const fn f(name: &'static str, leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> Feature {
    Feature {
        name,
        leaf,
        subleaf,
        reg,
        bit,
    }
}

/// Features `--cpu-features` can hide, with their `/proc/cpuinfo` names.
pub const FEATURES: &[Feature] = &[
    f("pclmulqdq", 1, 0, Reg::Ecx, 1),
    f("ssse3", 1, 0, Reg::Ecx, 9),
    f("fma", 1, 0, Reg::Ecx, 12),
    f("cx16", 1, 0, Reg::Ecx, 13),
    f("pcid", 1, 0, Reg::Ecx, 17),
    f("sse4_1", 1, 0, Reg::Ecx, 19),
    f("sse4_2", 1, 0, Reg::Ecx, 20),
    f("x2apic", 1, 0, Reg::Ecx, 21),
    f("movbe", 1, 0, Reg::Ecx, 22),
    f("popcnt", 1, 0, Reg::Ecx, 23),
    f("tsc_deadline_timer", 1, 0, Reg::Ecx, 24),
    f("aes", 1, 0, Reg::Ecx, 25),
    f("xsave", 1, 0, Reg::Ecx, 26),
    f("avx", 1, 0, Reg::Ecx, 28),
    f("f16c", 1, 0, Reg::Ecx, 29),
    f("rdrand", 1, 0, Reg::Ecx, 30),
    f("fsgsbase", 7, 0, Reg::Ebx, 0),
    f("bmi1", 7, 0, Reg::Ebx, 3),
    f("avx2", 7, 0, Reg::Ebx, 5),
    f("smep", 7, 0, Reg::Ebx, 7),
    f("bmi2", 7, 0, Reg::Ebx, 8),
    f("erms", 7, 0, Reg::Ebx, 9),
    f("invpcid", 7, 0, Reg::Ebx, 10),
    f("avx512f", 7, 0, Reg::Ebx, 16),
    f("rdseed", 7, 0, Reg::Ebx, 18),
    f("adx", 7, 0, Reg::Ebx, 19),
    f("smap", 7, 0, Reg::Ebx, 20),
    f("clflushopt", 7, 0, Reg::Ebx, 23),
    f("sha_ni", 7, 0, Reg::Ebx, 29),
    f("umip", 7, 0, Reg::Ecx, 2),
    f("pku", 7, 0, Reg::Ecx, 3),
    f("la57", 7, 0, Reg::Ecx, 16),
    f("rdpid", 7, 0, Reg::Ecx, 22),
    f("lahf_lm", 0x8000_0001, 0, Reg::Ecx, 0),
    f("abm", 0x8000_0001, 0, Reg::Ecx, 5),
    f("pdpe1gb", 0x8000_0001, 0, Reg::Edx, 26),
    f("rdtscp", 0x8000_0001, 0, Reg::Edx, 27),
    // KVM's paravirtual features (leaf 0x40000001 EAX), named as QEMU's -cpu options.
    f("kvm-pv-unhalt", 0x4000_0001, 0, Reg::Eax, 7),
    f("kvm-pv-ipi", 0x4000_0001, 0, Reg::Eax, 11),
    f("kvm-pv-sched-yield", 0x4000_0001, 0, Reg::Eax, 13),
];

impl Feature {
    /// Whether the feature's bit is set in the (EAX, EBX, ECX, EDX) CPUID returned.
    pub fn is_set(&self, regs: [u32; 4]) -> bool {
        let [eax, ebx, ecx, edx] = regs;
        let reg = match self.reg {
            Reg::Eax => eax,
            Reg::Ebx => ebx,
            Reg::Ecx => ecx,
            Reg::Edx => edx,
        };
        reg & (1 << self.bit) != 0
    }

    /// Whether the feature lives in CPUID `leaf`, `subleaf`.
    pub fn is_in(&self, leaf: u32, subleaf: u32) -> bool {
        leaf == self.leaf && subleaf == self.subleaf
    }
}

/// Looks a feature up by name.
pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// Every name `--cpu-features` accepts.
pub fn feature_names() -> Vec<&'static str> {
    FEATURES.iter().map(|f| f.name).collect()
}

/// Bits needed to number `n` things (x2APIC ID shift).
fn bits_for(n: u8) -> u32 {
    (u32::from(n.max(1)) - 1)
        .checked_ilog2()
        .map_or(0, |b| b + 1)
}

/// Adjusts the supported-CPUID entries for vCPU `apic_id` of a VM with `cpus` vCPUs in one
/// package, and clears the `hide` features.
pub fn filter_entries(entries: &mut [kvm_cpuid_entry2], apic_id: u8, cpus: u8, hide: &[&Feature]) {
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (1, _) => {
                e.ecx |= ECX_HYPERVISOR;
                e.ebx =
                    (e.ebx & 0x0000_ffff) | (u32::from(apic_id) << 24) | (u32::from(cpus) << 16);
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                }
            }
            (0xb | 0x1f, level) => {
                e.edx = u32::from(apic_id);
                match level {
                    // SMT level: one thread per core.
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (1 << 8) | level;
                    }
                    // Core level: every vCPU is a core of the one package.
                    1 => {
                        e.eax = bits_for(cpus);
                        e.ebx = u32::from(cpus);
                        e.ecx = (2 << 8) | level;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = level;
                    }
                }
            }
            _ => {}
        }
        let (leaf, subleaf) = (e.function, e.index);
        for f in hide.iter().filter(|f| f.is_in(leaf, subleaf)) {
            let reg = match f.reg {
                Reg::Eax => &mut e.eax,
                Reg::Ebx => &mut e.ebx,
                Reg::Ecx => &mut e.ecx,
                Reg::Edx => &mut e.edx,
            };
            *reg &= !(1 << f.bit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<kvm_cpuid_entry2> {
        vec![
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0a01_0800,
                ecx: 1 << 13 | 1 << 23,
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
                ebx: 0xffff_ffff,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn sets_hypervisor_bit_apic_id_and_count() {
        let mut e = entries();
        filter_entries(&mut e, 3, 4, &[]);
        assert_eq!(e[0].ebx, 0x0304_0800);
        assert_eq!(e[0].ecx & ECX_HYPERVISOR, ECX_HYPERVISOR);
        assert_eq!(e[0].edx & EDX_HTT, EDX_HTT);
        assert_eq!((e[1].edx, e[1].ebx, e[1].ecx), (3, 1, 0x100));
        assert_eq!((e[2].edx, e[2].ebx, e[2].eax, e[2].ecx), (3, 4, 2, 0x201));
        assert_eq!(e[3].ebx, 0xffff_ffff);
    }

    #[test]
    fn hides_named_features_only() {
        let mut e = entries();
        let hide = [feature("cx16").unwrap(), feature("smap").unwrap()];
        filter_entries(&mut e, 0, 1, &hide);
        assert_eq!(e[0].ecx & (1 << 13), 0);
        assert_eq!(e[0].ecx & (1 << 23), 1 << 23, "popcnt stays");
        assert_eq!(e[3].ebx, !(1 << 20));
        assert_eq!(e[0].edx & EDX_HTT, 0, "one vCPU: no HTT");
    }

    #[test]
    fn hides_kvm_paravirtual_features_in_eax() {
        let mut e = [kvm_cpuid_entry2 {
            function: 0x4000_0001,
            eax: 0xffff,
            ..Default::default()
        }];
        filter_entries(&mut e, 0, 1, &[feature("kvm-pv-ipi").unwrap()]);
        assert_eq!(e[0].eax, 0xffff & !(1 << 11));
    }

    #[test]
    fn topology_shift_counts_bits() {
        assert_eq!(
            [
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(5),
                bits_for(32)
            ],
            [0, 1, 2, 2, 3, 5]
        );
        assert!(feature("avx9").is_none());
        assert!(feature_names().contains(&"cx16"));
    }
}
