//! How a container's VM starts: by restoring the guest's OCI snapshot (`make oci-snapshot`,
//! `guest/build/oci-snapshot`), or by a cold boot of the guest.
//!
//! The snapshot is the Linux guest booted with three placeholder disks that it has not
//! mounted, saved by `oci-init --snapshot` before it reads a spec: a restore puts the
//! container's images under the disks and `oci-init` goes on with them. Its disks have fixed sizes ([`ROOT_BYTES`], the spec disk's
//! [`crate::spec_disk::SIZE`], [`BINDS_BYTES`]) and its memory and vCPU count are fixed too
//! ([`MEM_MIB`], [`CPUS`]); the Makefile's `oci-snapshot` target makes it with these values.
//!
//! `KVMINI_OCI_BOOT` chooses: `snapshot` (a restore, or an error saying why none can be
//! made), `cold` (a boot), or unset/`auto` (a restore when the snapshot is there and the
//! container's memory and CPU limits are the snapshot's, else a boot).

use std::path::{Path, PathBuf};

use crate::config::Plan;
use crate::Error;

/// The snapshot's directory name in the guest's directory.
pub const DIR: &str = "oci-snapshot";
/// The size of the snapshot's root disk: every root image is built at this size (sparse).
pub const ROOT_BYTES: u64 = 256 << 20;
/// The size of the snapshot's bind-copy disk.
pub const BINDS_BYTES: u64 = 64 << 20;
/// The snapshot's memory, in MiB (a container's default).
pub const MEM_MIB: u64 = crate::config::MIN_MEM_MIB;
/// The snapshot's vCPU count (a container's default).
pub const CPUS: u8 = 1;
/// The placeholder bind-copy image in the snapshot's directory: a container without bind
/// mounts restores with it (read-only, never mounted).
pub const BINDS_PLACEHOLDER: &str = "binds.img";

/// How the VM starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// A restore of the snapshot in this directory.
    Restore(PathBuf),
    /// A cold boot of the guest.
    Cold,
}

/// Chooses how the VM of `plan` starts, given the guest's directory `guest_dir`, by
/// `KVMINI_OCI_BOOT` (see the module's documentation).
pub fn choose(guest_dir: &Path, plan: &Plan) -> Result<Boot, Error> {
    let mode = std::env::var("KVMINI_OCI_BOOT").unwrap_or_default();
    let snap = guest_dir.join(DIR);
    let why_not = if !snap.join("state").is_file() {
        Some(format!(
            "there is no snapshot at {} (make it with `make oci-snapshot`)",
            snap.display()
        ))
    } else if plan.mem_mib != MEM_MIB || plan.cpus != CPUS {
        Some(format!(
            "the container asks for {} MiB and {} vCPU(s), the snapshot has {MEM_MIB} MiB \
             and {CPUS} vCPU",
            plan.mem_mib, plan.cpus
        ))
    } else {
        None
    };
    match (mode.as_str(), why_not) {
        ("cold", _) => Ok(Boot::Cold),
        ("" | "auto", None) | ("snapshot", None) => Ok(Boot::Restore(snap)),
        ("" | "auto", Some(_)) => Ok(Boot::Cold),
        ("snapshot", Some(why)) => Err(Error::NoSnapshot(format!(
            "KVMINI_OCI_BOOT=snapshot, but {why}; unset it (or set cold) for a cold boot"
        ))),
        (other, _) => Err(Error::NoSnapshot(format!(
            "KVMINI_OCI_BOOT={other:?}: give snapshot, cold or auto"
        ))),
    }
}

/// Whether the VM's root disk is the cached image itself, attached read-only: a read-only
/// root of a cold boot. A restored VM attaches its root disk writable, as the snapshot's
/// was, which locks the image for that VM alone, so a read-only root gets a private copy
/// there too (sparse: a few milliseconds), and containers of one image can run at once;
/// oci-init mounts it read-only all the same.
pub fn shares_root_image(boot: &Boot, plan: &Plan) -> bool {
    plan.readonly && *boot == Boot::Cold
}

/// The disk size a restore needs for the root image, if any.
pub fn root_size(boot: &Boot) -> Option<u64> {
    matches!(boot, Boot::Restore(_)).then_some(ROOT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_snapshot_auto_boots_and_snapshot_refuses() {
        let plan = Plan::default();
        let dir = Path::new("/nonexistent");
        std::env::remove_var("KVMINI_OCI_BOOT");
        assert_eq!(choose(dir, &plan).unwrap(), Boot::Cold);
        std::env::set_var("KVMINI_OCI_BOOT", "snapshot");
        let err = choose(dir, &plan).unwrap_err().to_string();
        assert!(err.contains("make oci-snapshot"), "{err}");
        std::env::set_var("KVMINI_OCI_BOOT", "warm");
        assert!(choose(dir, &plan).is_err());
        std::env::remove_var("KVMINI_OCI_BOOT");
    }

    #[test]
    fn the_makefile_makes_the_snapshot_these_values_describe() {
        let makefile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Makefile");
        let text = std::fs::read_to_string(makefile).unwrap();
        for want in [
            format!(
                "truncate -s {}M $(OCI_SNAPSHOT).disks/root.img",
                ROOT_BYTES >> 20
            ),
            format!(
                "truncate -s {}K $(OCI_SNAPSHOT).disks/spec.img",
                crate::spec_disk::SIZE >> 10
            ),
            format!(
                "truncate -s {}M $(OCI_SNAPSHOT).disks/binds.img",
                BINDS_BYTES >> 20
            ),
            format!("--mem {MEM_MIB}M --cpus {CPUS}"),
            format!("$(OCI_SNAPSHOT)/{BINDS_PLACEHOLDER}"),
            "-- /bin/oci-init --snapshot".to_string(),
        ] {
            assert!(text.contains(&want), "the Makefile lacks {want:?}");
        }
    }
}
