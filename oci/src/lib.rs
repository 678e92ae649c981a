//! `kvmini oci`: an OCI runtime with runc's command line that runs each container's process
//! in a kvmini microVM with the project's Linux guest (docs/oci.md).
//!
//! A container's life, step by step:
//!
//! 1. `create --bundle DIR ID` reads `DIR/config.json` ([`config`]): every field is either
//!    honoured, satisfied by the VM boundary, or refused with an error; nothing is dropped
//!    silently. The result is a [`config::Plan`].
//! 2. The root file system becomes an ext4 image ([`image`]), cached by the tree's metadata
//!    under the state root; bind-mount sources are copied into a second image; the process
//!    spec is written to a small third disk ([`spec_disk`]).
//! 3. `create` makes the state directory ([`state`]) with its exec FIFO, and starts the
//!    holder ([`holder`]): a detached `kvmini oci holder` process with the caller's standard
//!    I/O, whose PID is the container's. The holder starts the VM at once
//!    ([`holder::vm_command`]: a restore of the guest's OCI snapshot with the container's
//!    images as its disks, or a cold boot, chosen by [`snapshot::choose`]; the guest's
//!    `oci-init` mounts the disks and waits) and blocks on the FIFO.
//! 4. `start ID` opens the FIFO: the holder sends the guest one byte and the process runs;
//!    its input, output, error and signals travel over the serial console ([`console`]);
//!    its exit status ends the VM (port 0xf4) and becomes the holder's.
//! 5. `state`, `kill`, `delete`, `list` act on the state directory and the holder ([`commands`]).

pub mod commands;
pub mod config;
pub mod console;
pub mod holder;
pub mod image;
mod log;
pub mod snapshot;
pub mod spec_disk;
pub mod state;
pub mod terminal;

use std::path::PathBuf;

pub use log::{LogFormat, Logger};

/// The state root when `--root` is not given (runc's is /run/runc).
pub const DEFAULT_ROOT: &str = "/run/kvmini-oci";

/// The OCI runtime specification version this runtime implements.
pub const OCI_VERSION: &str = "1.0.2";

/// What fails in `kvmini oci`: each message says what to do. Every one exits with status 1,
/// as runc's failures do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with this ID under the state root.
    #[error("container does not exist")]
    NotFound,
    /// `create` with an ID that is taken.
    #[error("container with given ID already exists: {0}")]
    Exists(String),
    /// An ID that cannot name a directory.
    #[error(
        "invalid container id {0:?}: use letters, digits, '_', '-', '+' and '.' (not only dots)"
    )]
    BadId(String),
    /// The bundle has no config.json.
    #[error("JSON specification file config.json not found in {0}")]
    NoConfig(PathBuf),
    /// config.json does not parse or has a wrong type.
    #[error("config.json: {0}")]
    BadConfig(String),
    /// A field of config.json that would change behaviour and that kvmini cannot honour.
    #[error("config.json: {field} is not supported by kvmini oci: {why}")]
    Unsupported {
        /// JSON path of the field.
        field: String,
        /// Why, and what to do instead.
        why: String,
    },
    /// The command does not fit the container's status.
    #[error("{0}")]
    BadStatus(String),
    /// A terminal option that does not fit the others (runc's messages).
    #[error("{0}")]
    Terminal(String),
    /// A signal name or number kvmini does not know.
    #[error("unknown signal {0:?}: give a name (TERM, SIGKILL) or a number 1-64")]
    BadSignal(String),
    /// The Linux guest (kernel and initramfs with oci-init) is not where kvmini looks.
    #[error("the Linux guest is missing: {0}; build it with `make linux`, or set KVMINI_OCI_GUEST to a directory with vmlinux and initramfs.cpio")]
    NoGuest(String),
    /// The OCI snapshot cannot be used, and `KVMINI_OCI_BOOT` asks for it (or has a bad value).
    #[error("the guest's OCI snapshot cannot be used: {0}")]
    NoSnapshot(String),
    /// The root file system (or the bind-mount copies) does not fit the snapshot's disk.
    #[error("{what} needs {need_mib} MiB, more than the {have_mib} MiB of the OCI snapshot's disk: set KVMINI_OCI_BOOT=cold to boot the guest with a disk of its size")]
    TooBig {
        /// The root file system or the bind-mount copies.
        what: &'static str,
        /// The image size the tree needs, in MiB.
        need_mib: u64,
        /// The snapshot's root disk, in MiB.
        have_mib: u64,
    },
    /// A host tool (mkfs.ext4, cp) failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The command.
        tool: String,
        /// Its status and error output.
        detail: String,
    },
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// The global options every command shares (runc's).
#[derive(Clone, Debug)]
pub struct Global {
    /// State root: one directory per container.
    pub root: PathBuf,
    /// Where errors (and with `debug`, progress) are logged.
    pub logger: Logger,
}

impl Global {
    /// The state directory of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
}
