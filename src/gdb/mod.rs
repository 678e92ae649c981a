//! kvmini's GDB remote stub (`--gdb`, `--gdb-wait`): GDB debugs the guest as it would a
//! program, over TCP or a Unix socket, as with QEMU's `-s -S`.
//!
//! - [`Stub::listen`] binds the socket while the VM is built (a port in use, a path that
//!   exists: bad input), before the guest runs.
//! - [`Stub::start`] starts the GDB thread (`server.rs`): one debugger at a time, gdbstub's
//!   protocol state machine over the connection, under its own seccomp role.
//! - The vCPU thread keeps its side (`link.rs`): it stops on `KVM_EXIT_DEBUG`, on the
//!   debugger's Ctrl-C (a kick), before the first instruction with `--gdb-wait`, and at a
//!   crash while a debugger is attached, and then serves register writes and resumes; it
//!   makes every KVM call (`KVM_SET_GUEST_DEBUG`, registers).
//! - `session.rs` keeps the debugger's view (breakpoints, stops, resumes), `target.rs` is
//!   gdbstub's target, `regs.rs` the register layouts and target descriptions,
//!   `debugregs.rs` DR0-DR3, `memory.rs` guest memory by linear address.
//!
//! Which breakpoints work depends on the host ([`crate::host::DebugSupport`]): on
//! `kvm_pvm`, `int3` cannot run in guest ring 0, so software breakpoints become hardware
//! ones. docs/gdb.md is the user's guide; the protocol is the GDB manual's "Remote Protocol"
//! appendix, guest debugging the kernel's KVM API document (`KVM_SET_GUEST_DEBUG`).

mod debugregs;
mod link;
mod memory;
mod regs;
mod server;
mod session;
mod target;

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use kvm_bindings::{KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_BLOCKIRQ};
use kvm_ioctls::{Cap, Kvm};

pub use link::{Next, VcpuDebug};
pub use server::Server;

use crate::config::{GdbAddress, GdbConfig, ImageFormat, SeccompMode};
use crate::memory::GuestMem;
use server::Listener;
use session::{Options, Session};

/// Why the stub cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Unix socket's path is taken.
    #[error("--gdb {address}: {} already exists; remove it or choose another path (kvmini creates the socket and removes it at exit)", .path.display())]
    Exists {
        /// The option's value.
        address: GdbAddress,
        /// The path.
        path: PathBuf,
    },
    /// The TCP port is taken.
    #[error("--gdb {address}: the port is in use (another program listens there); choose another port, or port 0 for any free one")]
    InUse {
        /// The option's value.
        address: GdbAddress,
    },
    /// Any other reason the socket cannot listen.
    #[error("--gdb {address}: cannot listen there: {source}")]
    Bind {
        /// The option's value.
        address: GdbAddress,
        /// Why.
        source: std::io::Error,
    },
    /// This KVM cannot debug guests.
    #[error(
        "--gdb: this KVM has no KVM_CAP_SET_GUEST_DEBUG, so it cannot stop a guest for a debugger"
    )]
    NoGuestDebug,
    /// The GDB thread could not start.
    #[error("cannot start the GDB thread: {0}")]
    Thread(std::io::Error),
}

impl Error {
    /// Whether the user's input is at fault (status 120) rather than the host.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Exists { .. } | Error::InUse { .. } | Error::Bind { .. }
        )
    }

    /// The system error behind this one, if any.
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            Error::Bind { source, .. } | Error::Thread(source) => Some(source),
            _ => None,
        }
    }
}

/// Whether GDB gets the x86-64 description whatever the guest's mode: an ELF64 or bzImage
/// kernel is 64-bit code, whose file GDB loads (a Multiboot kernel is 32-bit).
pub fn is_64bit_kernel(format: ImageFormat) -> bool {
    matches!(format, ImageFormat::Elf | ImageFormat::BzImage)
}

/// Removes the Unix socket kvmini created, when dropped.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A listening stub, not started yet.
#[derive(Debug)]
pub struct Stub {
    listener: Listener,
    wait: bool,
    /// What to give GDB's `target remote`.
    target: String,
    socket_file: Option<SocketFile>,
}

impl Stub {
    /// Binds the socket `config` names.
    pub fn listen(config: &GdbConfig) -> Result<Self, Error> {
        let address = config.address.clone();
        let bind_err = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::AddrInUse => Error::InUse {
                address: address.clone(),
            },
            _ => Error::Bind {
                address: address.clone(),
                source,
            },
        };
        let (listener, target, socket_file) = match &config.address {
            GdbAddress::Tcp(addr) => {
                let l = TcpListener::bind(addr).map_err(bind_err)?;
                let target = l.local_addr().map_err(bind_err)?.to_string();
                (Listener::Tcp(l), target, None)
            }
            GdbAddress::Unix(path) => {
                if path.symlink_metadata().is_ok() {
                    return Err(Error::Exists {
                        address,
                        path: path.clone(),
                    });
                }
                let l = UnixListener::bind(path).map_err(bind_err)?;
                let file = SocketFile(path.clone());
                (Listener::Unix(l), path.display().to_string(), Some(file))
            }
        };
        Ok(Stub {
            listener,
            wait: config.wait,
            target,
            socket_file,
        })
    }

    /// What to give GDB's `target remote`: `HOST:PORT` (the port the system chose, for
    /// port 0) or the socket's path.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the guest waits for the debugger before its first instruction.
    pub fn waits(&self) -> bool {
        self.wait
    }

    /// Starts the GDB thread; the returned side goes to the vCPU. `kernel_image`: the image
    /// is a 64-bit kernel (GDB gets the x86-64 registers whatever the mode).
    pub fn start(
        self,
        kvm: &Kvm,
        mem: GuestMem,
        kernel_image: bool,
        seccomp: SeccompMode,
    ) -> Result<(VcpuDebug, Running), Error> {
        if !kvm.check_extension(Cap::SetGuestDebug) {
            return Err(Error::NoGuestDebug);
        }
        let flags = kvm.check_extension_raw(libc::c_ulong::from(KVM_CAP_SET_GUEST_DEBUG2));
        let options = Options {
            host: crate::host::DebugSupport::for_host(crate::host::kind()),
            block_irq: flags > 0 && (flags as u32) & KVM_GUESTDBG_BLOCKIRQ != 0,
            kernel_image,
        };
        let (vcpu, gdb) = link::pair(self.wait).map_err(Error::Thread)?;
        let session = Session::new(gdb, mem, options);
        let server = Server::start(self.listener, session, seccomp).map_err(Error::Thread)?;
        Ok((
            vcpu,
            Running {
                server,
                _socket_file: self.socket_file,
            },
        ))
    }
}

/// The started stub: the GDB thread, and the socket file to remove at the end.
#[derive(Debug)]
pub struct Running {
    server: Server,
    _socket_file: Option<SocketFile>,
}

impl Running {
    /// After the VM ended: lets the GDB thread tell GDB, then removes the socket file.
    pub fn finish(self) {
        self.server.finish();
    }
}
