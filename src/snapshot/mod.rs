//! Snapshots: a stopped VM written to a directory, and read back to build the same VM in a new
//! process, which goes on where the guest was. A snapshot directory holds two files:
//!
//! - `state`: a header (magic, format version, a fingerprint of the layout of what follows,
//!   length and checksum) and then [`state::VmState`], serde-encoded with bincode;
//! - `memory`: guest RAM, a sparse file (see [`memory`]).
//!
//! Virtio devices are saved with their transport's registers and queues; a restore may put
//! them on new backing files ([`devices`]).
//!
//! Both are written into a temporary directory beside the target and renamed into place when
//! complete, so a failed save never leaves something that restores. docs/snapshots.md tells
//! the format, what is saved and the limits.

pub mod devices;
pub mod memory;
pub mod state;
pub mod vcpu;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use state::VmState;

/// The file of the state.
pub const STATE_FILE: &str = "state";
/// The file of guest memory.
pub const MEMORY_FILE: &str = "memory";
/// Marks a state file.
const MAGIC: [u8; 8] = *b"KVMINISN";
/// The format of the state file; a restore refuses any other. Version 2 added the virtio
/// devices.
pub const FORMAT_VERSION: u32 = 2;
/// magic, version, fingerprint, length, checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;

/// Why a snapshot could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory is not there.
    #[error("{} does not exist", .0.display())]
    NoDirectory(PathBuf),
    /// No state file, or not one of kvmini's.
    #[error("{} is not a kvmini snapshot (no {STATE_FILE} file with kvmini's header)", .0.display())]
    NotASnapshot(PathBuf),
    /// Another format version.
    #[error("the snapshot has format version {found}; this kvmini reads version {FORMAT_VERSION} only: take the snapshot again with this kvmini")]
    Version {
        /// The snapshot's.
        found: u32,
    },
    /// Same version, another layout: a build of kvmini whose saved structures differ.
    #[error("the snapshot was written by a kvmini build whose state layout differs from this one's (fingerprint {found:#x}, here {here:#x})")]
    Build {
        /// The snapshot's fingerprint.
        found: u64,
        /// This build's.
        here: u64,
    },
    /// The state file is shorter than its header says.
    #[error("the state file is truncated: {found} of {expected} bytes")]
    Truncated {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes there are.
        found: u64,
    },
    /// Bytes changed.
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(&'static str),
    /// Taken on another kind of host.
    #[error("the snapshot was taken on a {saved} host, and this one is {here}: a VM resumes only on the same kind of KVM")]
    HostKind {
        /// Where it was taken.
        saved: String,
        /// Here.
        here: String,
    },
    /// Taken at another TSC frequency.
    #[error("the snapshot's vCPUs ran at a TSC of {saved} kHz and this host's run at {here} kHz; without TSC scaling (KVM_CAP_TSC_CONTROL) the guest cannot go on here")]
    TscKhz {
        /// The snapshot's.
        saved: u32,
        /// Here.
        here: u32,
    },
    /// The host cannot give the vCPUs the CPUID they had.
    #[error("this host's KVM refuses the snapshot's CPUID ({0}): it was taken on a CPU this one cannot stand in for")]
    Cpuid(kvm_ioctls::Error),
    /// The memory file has the wrong length.
    #[error("the memory file is {found} bytes, and the snapshot's guest memory is {expected}: it is truncated or not this snapshot's")]
    MemoryFileLength {
        /// From the state.
        expected: u64,
        /// On disk.
        found: u64,
    },
    /// The memory file could not be written, read or mapped.
    #[error("memory file: {0}")]
    MemoryFile(std::io::Error),
    /// The target directory is in use.
    #[error("{} exists and is not empty; a snapshot goes into a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// A file of the snapshot could not be written or read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The XSAVE area does not fit `KVM_GET_XSAVE`.
    #[error("this host's XSAVE area is {0} bytes (AMX state?), more than the 4096 that kvmini saves; snapshots are not supported here")]
    XsaveTooLarge(i32),
    /// More MSRs than a list holds.
    #[error("KVM lists {0} MSRs, more than kvmini can save")]
    TooManyMsrs(usize),
    /// KVM refused one MSR.
    #[error("KVM would not get or set MSR {index:#x}")]
    Msr {
        /// The MSR.
        index: u32,
    },
    /// A KVM call failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// The restore's virtio devices are not the snapshot's.
    #[error("{why}. The snapshot's devices, in order: {saved}")]
    Devices {
        /// Which device differs, and how.
        why: String,
        /// The snapshot's devices, as options.
        saved: String,
    },
}

impl Error {
    /// Whether the error is the user's input (a directory, a snapshot) rather than kvmini
    /// or KVM failing.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            Error::Kvm { .. } | Error::TooManyMsrs(_) | Error::Msr { .. }
        )
    }
}

/// FNV-1a, 64-bit: enough to tell a damaged state file, and fast on a few KiB.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A fingerprint of the layout of the saved structures: a build whose structures differ
/// writes another one, which a restore refuses before decoding anything.
fn fingerprint() -> u64 {
    use kvm_bindings::*;
    let sizes = [
        std::mem::size_of::<kvm_regs>(),
        std::mem::size_of::<kvm_sregs>(),
        std::mem::size_of::<kvm_xsave>(),
        std::mem::size_of::<kvm_xcrs>(),
        std::mem::size_of::<kvm_msr_entry>(),
        std::mem::size_of::<kvm_cpuid_entry2>(),
        std::mem::size_of::<kvm_lapic_state>(),
        std::mem::size_of::<kvm_vcpu_events>(),
        std::mem::size_of::<kvm_debugregs>(),
        std::mem::size_of::<kvm_irqchip>(),
        std::mem::size_of::<kvm_pit_state2>(),
        std::mem::size_of::<kvm_clock_data>(),
        std::mem::size_of::<state::SerialState>(),
        std::mem::size_of::<state::Machine>(),
        std::mem::size_of::<state::HostState>(),
        std::mem::size_of::<state::VcpuState>(),
        std::mem::size_of::<state::PlatformState>(),
        std::mem::size_of::<state::MemoryLayout>(),
        std::mem::size_of::<crate::devices::virtio::state::QueueSaved>(),
        std::mem::size_of::<crate::devices::virtio::state::TransportState>(),
        std::mem::size_of::<crate::devices::virtio::state::DeviceState>(),
        std::mem::size_of::<state::VmState>(),
    ];
    let bytes: Vec<u8> = sizes
        .iter()
        .flat_map(|s| (*s as u64).to_le_bytes())
        .collect();
    checksum(&bytes)
}

/// The state file's bytes: header, then the encoded state.
pub fn encode(state: &VmState) -> Vec<u8> {
    frame(&bincode::serialize(state).expect("plain data always encodes"))
}

/// An encoded state behind the header this build writes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&fingerprint().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The state from a state file's bytes, after every check of the header; `dir` is for
/// messages.
pub fn decode(bytes: &[u8], dir: &Path) -> Result<VmState, Error> {
    let not_a_snapshot = || Error::NotASnapshot(dir.to_path_buf());
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(not_a_snapshot());
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::Version { found: version });
    }
    let (found, here) = (word(12), fingerprint());
    if found != here {
        return Err(Error::Build { found, here });
    }
    let (len, sum) = (word(20), word(28));
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) < len {
        return Err(Error::Truncated {
            expected: len,
            found: payload.len() as u64,
        });
    }
    let payload = &payload[..len as usize];
    if checksum(payload) != sum {
        return Err(Error::Corrupt("the state file's checksum does not match"));
    }
    bincode::deserialize(payload).map_err(|_| Error::Corrupt("the state does not decode"))
}

/// Refuses a snapshot taken on another kind of host.
pub fn check_host_kind(saved: &state::HostState, here: &str) -> Result<(), Error> {
    if saved.kind == here {
        Ok(())
    } else {
        Err(Error::HostKind {
            saved: saved.kind.clone(),
            here: here.to_string(),
        })
    }
}

/// Refuses a snapshot whose vCPUs ran at another TSC frequency than this host's.
pub fn check_tsc_khz(saved: &state::HostState, here: u32) -> Result<(), Error> {
    if saved.tsc_khz == here {
        Ok(())
    } else {
        Err(Error::TscKhz {
            saved: saved.tsc_khz,
            here,
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A directory to write a snapshot into, renamed to its final name only when complete.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    tmp: PathBuf,
}

/// Refuses a target directory that exists and is not empty.
fn check_target(dir: &Path) -> Result<(), Error> {
    let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
    if empty {
        Ok(())
    } else {
        Err(Error::NotEmpty(dir.to_path_buf()))
    }
}

impl Writer {
    /// Refuses a target that exists and is not empty, and makes the temporary directory.
    pub fn create(dir: &Path) -> Result<Writer, Error> {
        check_target(dir)?;
        let name = dir.file_name().unwrap_or(dir.as_os_str()).to_string_lossy();
        let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        // Messages name the directory the user gave, not the temporary one beside it.
        std::fs::create_dir_all(&tmp).map_err(io(dir))?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            tmp,
        })
    }

    /// The memory file, created.
    pub fn memory_file(&self) -> Result<File, Error> {
        let path = self.tmp.join(MEMORY_FILE);
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))
    }

    /// Writes the state and puts the directory in place; returns the state file's size.
    pub fn finish(self, state: &VmState) -> Result<u64, Error> {
        let path = self.tmp.join(STATE_FILE);
        let mut file = File::create(&path).map_err(io(&path))?;
        let bytes = encode(state);
        file.write_all(&bytes).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        std::fs::rename(&self.tmp, &self.dir).map_err(io(&self.dir))?;
        Ok(bytes.len() as u64)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Gone already after a successful rename; otherwise nothing half-written stays.
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Reads and checks a snapshot's state; returns it with the opened memory file.
pub fn open(dir: &Path) -> Result<(VmState, File), Error> {
    if !dir.is_dir() {
        return Err(Error::NoDirectory(dir.to_path_buf()));
    }
    let path = dir.join(STATE_FILE);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io(&path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotASnapshot(dir.to_path_buf()))
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let state = decode(&bytes, dir)?;
    let path = dir.join(MEMORY_FILE);
    let memory = File::open(&path).map_err(io(&path))?;
    Ok((state, memory))
}

#[cfg(test)]
mod tests {
    use super::state::*;
    use super::*;

    fn sample() -> VmState {
        VmState {
            host: HostState {
                kind: "pvm".into(),
                tsc_khz: 2_445_412,
            },
            machine: Machine {
                mem_size: 16 << 20,
                cpus: 1,
                pc_platform: false,
                unclaimed_mmio: crate::config::UnclaimedMmio::Fatal,
                boot_summary: "raw image, long mode".into(),
                cmdline: None,
                hidden_cpu_features: vec![],
                debug_exit: None,
            },
            vcpus: vec![],
            platform: None,
            serial: SerialState::default(),
            devices: vec![],
            memory: MemoryLayout {
                regions: vec![(0, 16 << 20)],
                resident: vec![(0x10_0000, 0x1000)],
                checksum: 0x1234,
            },
        }
    }

    #[test]
    fn a_snapshot_resumes_only_on_the_same_kind_of_host_and_tsc() {
        let saved = sample().host;
        assert!(check_host_kind(&saved, "pvm").is_ok());
        let err = check_host_kind(&saved, "hardware").unwrap_err();
        assert!(err
            .to_string()
            .contains("taken on a pvm host, and this one is hardware"));
        assert!(err.is_bad_input());
        assert!(Error::Cpuid(kvm_ioctls::Error::new(libc::EINVAL)).is_bad_input());
        assert!(!Error::Kvm {
            what: "KVM_SET_REGS",
            source: kvm_ioctls::Error::new(libc::EINVAL)
        }
        .is_bad_input());
        assert!(check_tsc_khz(&saved, 2_445_412).is_ok());
        let err = check_tsc_khz(&saved, 2_000_000).unwrap_err();
        assert!(err.to_string().contains("2445412 kHz"), "{err}");
        assert!(err.is_bad_input());
    }

    #[test]
    fn the_state_file_round_trips_and_every_damage_is_told() {
        let dir = Path::new("snap");
        let bytes = encode(&sample());
        let back = decode(&bytes, dir).unwrap();
        assert_eq!(back.machine, sample().machine);
        assert_eq!(back.memory, sample().memory);

        assert!(matches!(decode(b"hello", dir), Err(Error::NotASnapshot(_))));
        // A snapshot of version 1 (before the virtio devices) is refused, with what to do.
        let mut v1 = bytes.clone();
        v1[8] = 1;
        let err = decode(&v1, dir).unwrap_err();
        assert!(matches!(err, Error::Version { found: 1 }));
        assert!(err.to_string().contains("take the snapshot again"), "{err}");
        let mut other = bytes.clone();
        other[12] ^= 1;
        assert!(matches!(decode(&other, dir), Err(Error::Build { .. })));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3], dir),
            Err(Error::Truncated { .. })
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(decode(&flipped, dir), Err(Error::Corrupt(_))));
    }
}
