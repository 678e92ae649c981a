//! A vCPU's state out of KVM and back in. The order of the setters follows what KVM needs:
//! CPUID before the MSRs it enables, the MP state and registers before the LAPIC, the events
//! last (Firecracker restores in the same order, `vstate/vcpu.rs`).
//!
//! Source of truth: the kernel's KVM API documentation, one section per ioctl.

use kvm_bindings::{kvm_msr_entry, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use super::state::VcpuState;
use super::Error;

/// Bytes of the XSAVE area `KVM_GET_XSAVE` and `KVM_SET_XSAVE` carry.
const XSAVE_LEGACY_SIZE: i32 = 4096;

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { what, source }
}

/// Fails when this host's XSAVE area does not fit the 4 KiB that `KVM_GET_XSAVE` carries
/// (AMX state): a snapshot would lose part of it, and setting it back would not be safe.
pub fn check_xsave_size(kvm: &Kvm) -> Result<(), Error> {
    // 0 when KVM has no KVM_CAP_XSAVE2: then the area is the 4 KiB one.
    let size = kvm.check_extension_int(Cap::Xsave2);
    if size > XSAVE_LEGACY_SIZE {
        return Err(Error::XsaveTooLarge(size));
    }
    Ok(())
}

/// Reads everything of a vCPU that is not running; `msr_index` is KVM's MSR list.
pub fn save(fd: &VcpuFd, msr_index: &[u32], lapic: bool) -> Result<VcpuState, Error> {
    let entries: Vec<kvm_msr_entry> = msr_index
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = Msrs::from_entries(&entries).map_err(|_| Error::TooManyMsrs(entries.len()))?;
    let read = fd.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS"))?;
    if read != entries.len() {
        let index = entries[read].index;
        return Err(Error::Msr { index });
    }
    Ok(VcpuState {
        cpuid: fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec(),
        regs: fd.get_regs().map_err(kvm("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?,
        msrs: msrs.as_slice().to_vec(),
        lapic: lapic
            .then(|| fd.get_lapic().map_err(kvm("KVM_GET_LAPIC")))
            .transpose()?,
        mp_state: fd.get_mp_state().map_err(kvm("KVM_GET_MP_STATE"))?,
        events: fd.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))?,
        debugregs: fd.get_debug_regs().map_err(kvm("KVM_GET_DEBUGREGS"))?,
    })
}

/// Gives a new vCPU the saved state. The caller has checked the XSAVE size
/// ([`check_xsave_size`]) on this host.
pub fn restore(fd: &VcpuFd, state: &VcpuState) -> Result<(), Error> {
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| Error::Corrupt("CPUID entries"))?;
    fd.set_cpuid2(&cpuid).map_err(Error::Cpuid)?;
    fd.set_mp_state(state.mp_state)
        .map_err(kvm("KVM_SET_MP_STATE"))?;
    fd.set_regs(&state.regs).map_err(kvm("KVM_SET_REGS"))?;
    fd.set_sregs(&state.sregs).map_err(kvm("KVM_SET_SREGS"))?;
    // SAFETY: the host's XSAVE area is at most the 4 KiB of `kvm_xsave` (checked by the
    // caller with check_xsave_size), so the kernel reads no more than the struct holds.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(kvm("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(kvm("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&state.debugregs)
        .map_err(kvm("KVM_SET_DEBUGREGS"))?;
    if let Some(lapic) = &state.lapic {
        fd.set_lapic(lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    }
    restore_msrs(fd, &state.msrs)?;
    fd.set_vcpu_events(&state.events)
        .map_err(kvm("KVM_SET_VCPU_EVENTS"))
}

/// Sets the MSRs, in as few calls as it can. KVM stops at the first MSR it refuses; one that
/// already holds the saved value is passed over (a VM without an in-kernel LAPIC, say, refuses
/// any write to the KVM async-PF interrupt MSR, even of the 0 it reads as), any other is an
/// error.
fn restore_msrs(fd: &VcpuFd, saved: &[kvm_msr_entry]) -> Result<(), Error> {
    let mut rest = saved;
    while !rest.is_empty() {
        let msrs = Msrs::from_entries(rest).map_err(|_| Error::Corrupt("MSR entries"))?;
        let written = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if written == rest.len() {
            break;
        }
        let refused = rest[written];
        let mut current = Msrs::from_entries(&[kvm_msr_entry {
            index: refused.index,
            ..Default::default()
        }])
        .map_err(|_| Error::Corrupt("MSR entries"))?;
        let read = fd.get_msrs(&mut current).map_err(kvm("KVM_GET_MSRS"))?;
        if read != 1 || current.as_slice()[0].data != refused.data {
            return Err(Error::Msr {
                index: refused.index,
            });
        }
        rest = &rest[written + 1..];
    }
    Ok(())
}
