//! The host's KVM: opening it with errors a user can act on, telling what kind of KVM it is
//! (hardware VMX/SVM, nested, or the software `kvm_pvm`), and what a Linux guest needs on top
//! on such a host ([`Workarounds`]): everything kvmini knows about `kvm_pvm` is here.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

use crate::config::HostWorkarounds;
use crate::device_access;

/// The KVM API version every KVM since Linux 2.6.22 reports.
pub const KVM_API_VERSION: i32 = 12;

/// Capabilities kvmini cannot run without, with what it uses them for.
pub const REQUIRED_CAPS: [(Cap, &str); 2] = [
    (Cap::UserMemory, "guest memory from the VMM's own mappings"),
    (
        Cap::ImmediateExit,
        "stopping a running vCPU without races (--timeout)",
    ),
];

/// Why KVM is not usable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No device node.
    #[error("/dev/kvm does not exist: this host has no KVM. On a machine with VT-x or AMD-V, load the module (modprobe kvm_intel or kvm_amd); in a VM, enable nested virtualization")]
    NoDevice,
    /// Not permitted.
    #[error("/dev/kvm is not readable and writable by {0}")]
    NoPermission(String),
    /// Some other failure opening it.
    #[error("cannot open /dev/kvm: {0}")]
    Open(kvm_ioctls::Error),
    /// A KVM that speaks another API.
    #[error("/dev/kvm reports KVM API version {0}, kvmini needs {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// A capability is missing.
    #[error("this KVM lacks {name} ({why}); a newer host kernel has it")]
    MissingCap {
        /// Capability.
        name: String,
        /// What kvmini needs it for.
        why: &'static str,
    },
    /// `KVM_CREATE_VM` failed.
    #[error("KVM refused to create a VM: {0} (is another hypervisor holding VT-x/AMD-V?)")]
    CreateVm(kvm_ioctls::Error),
}

/// Opens `/dev/kvm`, telling a missing device and a missing permission apart.
pub fn open_device() -> Result<Kvm, Error> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::NoDevice,
        libc::EACCES | libc::EPERM => Error::NoPermission(
            device_access::advice(Path::new("/dev/kvm")).unwrap_or_else(|| {
                "this user: add the user to the kvm group (sudo usermod -aG kvm $USER, then log \
                 in again) or run as root"
                    .to_string()
            }),
        ),
        _ => Error::Open(e),
    })
}

/// Opens `/dev/kvm` and checks the API version and the capabilities kvmini needs.
pub fn open_kvm() -> Result<Kvm, Error> {
    let kvm = open_device()?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(Error::ApiVersion(version));
    }
    for (cap, why) in REQUIRED_CAPS {
        if !kvm.check_extension(cap) {
            return Err(Error::MissingCap {
                name: format!("{cap:?}"),
                why,
            });
        }
    }
    Ok(kvm)
}

/// What kind of KVM this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// `kvm_pvm`: software, pagetable-based virtualization; guest ring 0 is emulated.
    Pvm,
    /// Hardware virtualization (`kvm_intel` / `kvm_amd`) on bare metal.
    Hardware(&'static str),
    /// Hardware virtualization inside another hypervisor.
    Nested(&'static str),
    /// No KVM module seen.
    Unknown,
}

impl std::fmt::Display for HostKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKind::Pvm => write!(f, "kvm_pvm: software virtualization (pagetable-based, no VMX/SVM); guest ring-0 code runs in KVM's instruction emulator, ring-3 code natively"),
            HostKind::Hardware(vendor) => write!(f, "hardware {vendor} on bare metal"),
            HostKind::Nested(vendor) => write!(f, "nested: hardware {vendor} inside another hypervisor"),
            HostKind::Unknown => write!(f, "unknown (no kvm_intel, kvm_amd or kvm_pvm module loaded)"),
        }
    }
}

impl HostKind {
    /// A short name for reports: `pvm`, `hardware`, `nested`, `unknown`.
    pub fn short(&self) -> &'static str {
        match self {
            HostKind::Pvm => "pvm",
            HostKind::Hardware(_) => "hardware",
            HostKind::Nested(_) => "nested",
            HostKind::Unknown => "unknown",
        }
    }
}

/// Whether this CPU runs under a hypervisor (CPUID.1:ECX bit 31).
pub fn under_hypervisor() -> bool {
    let leaf1 = std::arch::x86_64::__cpuid(1);
    leaf1.ecx & (1 << 31) != 0
}

/// Tells the kind of KVM from the loaded modules (and CPUID for nesting).
pub fn kind() -> HostKind {
    kind_from(Path::new("/sys/module"), under_hypervisor())
}

fn kind_from(modules: &Path, hypervisor: bool) -> HostKind {
    if modules.join("kvm_pvm").exists() {
        return HostKind::Pvm;
    }
    let vendor = if modules.join("kvm_intel").exists() {
        "VMX (kvm_intel)"
    } else if modules.join("kvm_amd").exists() {
        "SVM (kvm_amd)"
    } else {
        return HostKind::Unknown;
    };
    if hypervisor {
        HostKind::Nested(vendor)
    } else {
        HostKind::Hardware(vendor)
    }
}

/// A line for crash reports of emulation failures when this host's emulator is the reason.
pub fn emulator_note() -> Option<&'static str> {
    (kind() == HostKind::Pvm).then_some(
        "this host's KVM is kvm_pvm, which runs guest ring-0 code in KVM's instruction emulator; that emulator cannot run some instructions (int3, popcnt, xrstor, fwait, cmpxchg16b, ...) that hardware runs. `kvmini check` describes the host",
    )
}

/// Why a debugger gets no `int3` here (for messages).
pub const INT3_NOTE: &str =
    "kvm_pvm runs guest ring-0 code in KVM's instruction emulator, which cannot run int3";
/// Why watchpoints are refused here (for messages).
pub const WATCHPOINT_NOTE: &str = "on kvm_pvm data breakpoints do not fire: KVM's emulator ignores them in ring 0 and ring-3 code runs natively without them";
/// Why ring-3 code cannot be stepped here (for messages).
pub const RING3_DEBUG_NOTE: &str =
    "kvm_pvm runs it natively and hands its debug exceptions to the guest";

/// What a debugger (`--gdb`) can use on a host. Measured on `kvm_pvm` (docs/gdb.md): single-step
/// and instruction breakpoints in DR0-DR3 work for the code its emulator runs (ring 0, real
/// and protected mode); `int3` there is an emulation failure; data breakpoints never fire;
/// ring-3 code runs natively, where a single step raises #DB inside the guest and debug
/// registers do not fire. Hardware virtualization (VMX, SVM) has it all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DebugSupport {
    /// Software breakpoints are `int3` bytes (`KVM_GUESTDBG_USE_SW_BP`); without, the stub
    /// sets them in debug registers, four at most with the hardware ones and watchpoints.
    pub int3: bool,
    /// Watchpoints (data breakpoints in DR0-DR3) fire.
    pub watchpoints: bool,
    /// Single steps and breakpoints reach ring-3 guest code.
    pub ring3: bool,
}

impl DebugSupport {
    /// Hardware virtualization: every kind.
    pub const FULL: DebugSupport = DebugSupport {
        int3: true,
        watchpoints: true,
        ring3: true,
    };

    /// `kvm_pvm`: instruction breakpoints and single steps, in code its emulator runs.
    pub const PVM: DebugSupport = DebugSupport {
        int3: false,
        watchpoints: false,
        ring3: false,
    };

    /// What a host of this kind supports.
    pub fn for_host(kind: HostKind) -> Self {
        if kind == HostKind::Pvm {
            DebugSupport::PVM
        } else {
            DebugSupport::FULL
        }
    }
}

/// What kvmini adds to a Linux guest on a host with a software KVM (`kvm_pvm`), which runs
/// guest ring 0 in KVM's instruction emulator. Everything kvmini knows about such hosts lives
/// here and in [`emulator_note`]; docs/linux-guest.md says why each is needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Workarounds {
    /// Kernel parameters added after the command line.
    pub cmdline: Option<&'static str>,
    /// CPUID features hidden from the guest (names of [`crate::arch::x86_64::cpuid::feature`]).
    pub hidden_cpu_features: &'static [&'static str],
}

impl Workarounds {
    /// Nothing added: hardware virtualization, or a guest that is not Linux.
    pub const NONE: Workarounds = Workarounds {
        cmdline: None,
        hidden_cpu_features: &[],
    };

    /// What Linux needs on `kvm_pvm`: no XSAVE (XRSTOR cannot be emulated and CPUID cannot
    /// hide it), no POPCNT and SMAP (alternatives would patch in instructions the emulator
    /// cannot run), the guest-side workarounds of kvmini's guest kernel (`pvm_workarounds`,
    /// see docs/linux-guest.md); and, in CPUID, no CMPXCHG16B (SLUB's cmpxchg_double cannot be
    /// emulated) and none of KVM's hypercall features (VMCALL for PV IPIs, PV unhalt and PV
    /// yield never returns there).
    pub const PVM: Workarounds = Workarounds {
        cmdline: Some("noxsave clearcpuid=popcnt,smap pvm_workarounds"),
        hidden_cpu_features: &["cx16", "kvm-pv-unhalt", "kvm-pv-ipi", "kvm-pv-sched-yield"],
    };

    /// What a Linux guest gets under `setting`; `Auto` looks at the host (only kernels pay for
    /// that look).
    pub fn for_linux(setting: HostWorkarounds) -> Self {
        let on = match setting {
            HostWorkarounds::On => true,
            HostWorkarounds::Off => false,
            HostWorkarounds::Auto => kind() == HostKind::Pvm,
        };
        if on {
            Workarounds::PVM
        } else {
            Workarounds::NONE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_read_from_the_module_directory() {
        let dir = std::env::temp_dir().join(format!("kvmini-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(kind_from(&dir, false), HostKind::Unknown);
        std::fs::create_dir_all(dir.join("kvm_intel")).unwrap();
        assert_eq!(
            kind_from(&dir, false),
            HostKind::Hardware("VMX (kvm_intel)")
        );
        assert_eq!(kind_from(&dir, true), HostKind::Nested("VMX (kvm_intel)"));
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(kind_from(&dir, true), HostKind::Pvm);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_say_what_to_do() {
        let advice = device_access::advice_for(&device_access::Facts {
            mode: 0o660,
            owner: "root".into(),
            group: "kvm".into(),
            gid: 108,
            user: "alice".into(),
            member: false,
            in_process: false,
        });
        let message = Error::NoPermission(advice).to_string();
        assert!(message.starts_with("/dev/kvm is not readable and writable by this user (alice"));
        assert!(message.contains("usermod -aG kvm alice"), "{message}");
        assert!(Error::NoDevice.to_string().contains("modprobe"));
    }
}
