//! The VM holder: the process whose PID is the container's (`kvmini oci holder DIR`, started
//! detached by `create`). It starts the VM at once as a child (`kvmini restore` of the OCI
//! snapshot, or `kvmini run` for a cold boot: [`vm_command`]), passes the guest's output on from
//! the ready line of `oci-init`, waits on the exec FIFO until `start`, then sends the guest
//! the byte that starts the process and copies its own standard input to the console.
//! The VM's exit status, which is the process's (port 0xf4), becomes the holder's.
//!
//! Signals: a terminating signal sent to the holder (`kill`) goes to the process in the guest
//! through the console (an escape that `oci-init` turns into kill(2)); the process's end,
//! by it or not, ends the VM as always. Before the process runs, such a signal stops the VM
//! and ends the holder by the same signal (status 128 + N). SIGKILL cannot be caught: the
//! VM dies with the holder, by its parent-death signal. Console input is escaped the same
//! way, and its end is passed on, so the process sees the end of its standard input.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

use crate::config::Plan;
use crate::console::{escape, winsize, Demux, Stream, END, ESC};
use crate::snapshot::{Boot, BINDS_PLACEHOLDER};
use crate::state::{EXEC_FIFO, VM_FILE};
use crate::Error;

/// The line `oci-init` prints when the container is ready to start; output before it is
/// the guest's boot.
pub const READY: &[u8] = b"kvmini-oci: ready\n";

/// Kernel parameters: the serial console, reset on reboot, no kernel messages on the
/// console (they would mix with the process's output).
const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 loglevel=1";

/// Signals the holder turns into the end of the VM.
const FORWARDED: [i32; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
];

/// The Linux guest's kernel and initramfs (with `/bin/oci-init`).
#[derive(Clone, Debug)]
pub struct Guest {
    /// The uncompressed kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// Their directory (where the OCI snapshot is looked for).
    pub dir: PathBuf,
}

/// Finds the guest: `$KVMINI_OCI_GUEST`, else `share/kvmini/guest` beside the binary's
/// directory (`make install`), else `guest/build` in the source tree the binary was built in.
pub fn find_guest() -> Result<Guest, Error> {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::var_os("KVMINI_OCI_GUEST")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if dirs.is_empty() {
        if let Some(bin) = exe.parent() {
            dirs.push(bin.join("../share/kvmini/guest"));
        }
        dirs.extend(exe.ancestors().skip(1).map(|d| d.join("guest/build")));
    }
    let found = dirs
        .iter()
        .find(|d| d.join("vmlinux").is_file() && d.join("initramfs.cpio").is_file());
    match found {
        Some(d) => Ok(Guest {
            kernel: d.join("vmlinux"),
            initramfs: d.join("initramfs.cpio"),
            dir: d.clone(),
        }),
        None => Err(Error::NoGuest(format!(
            "no vmlinux and initramfs.cpio in {}",
            dirs.first().map_or("?".into(), |d| d.display().to_string())
        ))),
    }
}

/// The disks of one container's VM.
#[derive(Clone, Debug)]
pub struct Disks {
    /// The root file system image (/dev/vda).
    pub root: PathBuf,
    /// The process spec (/dev/vdb).
    pub spec: PathBuf,
    /// The bind-mount copies (/dev/vdc).
    pub binds: Option<PathBuf>,
}

/// The arguments of `kvmini` that start the container's VM: a restore of the OCI snapshot
/// with the container's disks, or a cold boot of the guest with them.
pub fn vm_command(guest: &Guest, boot: &Boot, disks: &Disks, plan: &Plan) -> Vec<String> {
    let mut args: Vec<String> = match boot {
        Boot::Restore(snap) => vec!["restore".into(), snap.display().to_string()],
        Boot::Cold => vec![
            "run".into(),
            guest.kernel.display().to_string(),
            "--initrd".into(),
            guest.initramfs.display().to_string(),
            "--mem".into(),
            format!("{}M", plan.mem_mib),
            "--cpus".into(),
            plan.cpus.to_string(),
            "--cmdline".into(),
            CMDLINE.into(),
        ],
    };
    let ro = if crate::snapshot::shares_root_image(boot, plan) {
        ",ro"
    } else {
        ""
    };
    args.extend(["--disk".into(), format!("{}{ro}", disks.root.display())]);
    args.extend(["--disk".into(), format!("{},ro", disks.spec.display())]);
    let binds = match (&disks.binds, boot) {
        (Some(b), _) => Some(b.clone()),
        (None, Boot::Restore(snap)) => Some(snap.join(BINDS_PLACEHOLDER)),
        (None, Boot::Cold) => None,
    };
    if let Some(b) = binds {
        args.extend(["--disk".into(), format!("{},ro", b.display())]);
    }
    // A restore goes on inside oci-init, which the snapshot was saved in (`oci-init
    // --snapshot`); a boot runs it as /init's command.
    if *boot == Boot::Cold {
        args.extend(["--".into(), "/bin/oci-init".into()]);
    }
    args
}

/// Writes the VM's arguments for the holder.
pub fn save_vm_command(dir: &Path, args: &[String]) -> Result<(), Error> {
    let path = dir.join(VM_FILE);
    std::fs::write(
        &path,
        serde_json::to_string(args).expect("strings serialize"),
    )
    .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Starts the holder for the state directory `dir`, detached in its own session, with this
/// process's standard I/O, or with `tty` (a terminal's slave side) as its standard I/O and
/// controlling terminal. Returns it (its PID is the container's).
pub fn spawn(dir: &Path, tty: Option<OwnedFd>) -> Result<std::process::Child, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the kvmini binary", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("holder").arg(dir);
    let has_tty = tty.is_some();
    if let Some(t) = tty {
        let dup = |t: &OwnedFd| {
            t.try_clone()
                .map_err(|e| Error::io("passing the terminal to the holder", e))
        };
        cmd.stdin(dup(&t)?).stdout(dup(&t)?).stderr(t);
    }
    // SAFETY: setsid and ioctl are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // The terminal's hang-up (SIGHUP) and resizes (SIGWINCH) then reach the holder.
            if has_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::io("starting the container's holder process", e))
}

/// The holder's `main`: returns its exit status, or ends by the signal it was sent.
pub fn main(dir: &Path) -> i32 {
    match hold(dir) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("kvmini oci holder: {e}");
            kvmini::status::INTERNAL
        }
    }
}

fn hold(dir: &Path) -> Result<i32, Error> {
    let path = dir.join(VM_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let args: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e.into()))?;
    let mask = block_signals();
    // The VM is `kvmini run`, from the directory of this program (kvmini-runtime).
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the kvmini binary", e))?;
    let mut cmd = Command::new(exe.with_file_name("kvmini"));
    cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped());
    let holder = std::process::id() as i32;
    // SAFETY: prctl and getppid are async-signal-safe; they only set and read this child's
    // own attributes.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // A holder killed before the prctl would leave the VM running unseen.
            if libc::getppid() != holder {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut vm = cmd.spawn().map_err(|e| Error::io("starting the VM", e))?;
    let vm_pid = vm.id() as i32;
    let console: Console = Arc::new(Mutex::new(None));
    let for_signals = console.clone();
    std::thread::spawn(move || forward_signals(mask, vm_pid, &for_signals));
    let (ready_tx, ready_rx) = mpsc::channel();
    let out = vm.stdout.take().expect("piped");
    let output = std::thread::spawn(move || pass_output(out, ready_tx));
    let mut stdin = vm.stdin.take().expect("piped");
    wait_for_start(dir)?;
    if ready_rx.recv().is_ok() && stdin.write_all(b"g").is_ok() {
        *console.lock().unwrap_or_else(|e| e.into_inner()) = Some(stdin);
        pass_size(&console);
        std::thread::spawn(move || pass_input(&console));
    }
    let status = vm.wait().map_err(|e| Error::io("waiting for the VM", e))?;
    let _ = output.join();
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Blocks the signals the holder forwards, in this thread and every thread it starts, so
/// that only [`forward_signals`] receives them. Returns the set.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the calls only write it and this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGWINCH);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// The guest's console input once the process runs (None before): shared by the input
/// copy and the signal forwarding.
type Console = Arc<Mutex<Option<ChildStdin>>>;

/// Writes `bytes` to the console; false when it is gone or not there yet.
fn to_console(console: &Console, bytes: &[u8]) -> bool {
    let mut guard = console.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_mut().is_some_and(|c| c.write_all(bytes).is_ok())
}

/// The size of the holder's terminal, if it has one, to the process's (at the start and at
/// each resize).
fn pass_size(console: &Console) {
    if let Some((rows, cols)) = crate::terminal::size(0) {
        to_console(console, &winsize(rows, cols));
    }
}

/// Copies the holder's standard input to the process, escaped, then says where it ends.
fn pass_input(console: &Console) {
    let mut buf = [0u8; 8192];
    let mut input = std::io::stdin().lock();
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !to_console(console, &escape(&buf[..n])) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    to_console(console, &[ESC, END]);
}

/// Waits for forwarded signals. Once the process runs each goes to it through the console;
/// before, or should the console be gone, the signal stops the VM and ends the holder by the
/// same signal.
fn forward_signals(set: libc::sigset_t, vm: i32, console: &Console) {
    let mut sig = 0;
    loop {
        // SAFETY: `set` and `sig` are valid for sigwait to read and write.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        // A resize of the holder's terminal goes to the process's; never ends anything.
        if sig == libc::SIGWINCH {
            pass_size(console);
            continue;
        }
        if !to_console(console, &[ESC, sig as u8]) {
            break;
        }
    }
    // SAFETY: kill, signal and pthread_sigmask take plain values; the VM is this process's
    // child, so its PID is not reused before the holder waits for it.
    unsafe {
        libc::kill(vm, libc::SIGKILL);
        libc::signal(sig, libc::SIG_DFL);
        let mut one: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut one);
        libc::sigaddset(&mut one, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig);
}

/// Drops the guest's boot output up to [`READY`], then passes the process's output and error
/// on to the holder's. Should the VM end before it is ready, its output goes to stderr: it
/// says why.
fn pass_output(mut out: impl Read, ready: mpsc::Sender<()>) {
    let mut boot = Vec::new();
    let mut is_ready = false;
    let mut demux = Demux::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let tail;
        let mut chunk = &buf[..n];
        if !is_ready {
            boot.extend_from_slice(chunk);
            let Some(at) = find(&boot, READY) else {
                if boot.len() > 1 << 20 {
                    boot.drain(..boot.len() - (1 << 16));
                }
                continue;
            };
            is_ready = true;
            let _ = ready.send(());
            tail = boot.split_off(at + READY.len());
            chunk = &tail;
        }
        demux.feed(chunk, |stream, bytes| {
            let _ = match stream {
                Stream::Out => std::io::stdout().lock().write_all(bytes),
                Stream::Err => std::io::stderr().lock().write_all(bytes),
            };
        });
        let _ = std::io::stdout().flush();
    }
    if !is_ready {
        let _ = std::io::stderr().write_all(&boot);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Opens the exec FIFO for writing (which blocks until `start` opens it) and writes the byte
/// `start` waits for.
fn wait_for_start(dir: &Path) -> Result<(), Error> {
    let fifo = dir.join(EXEC_FIFO);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .map_err(|e| Error::io(format!("opening {}", fifo.display()), e))?;
    f.write_all(b"0")
        .map_err(|e| Error::io(format!("writing {}", fifo.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_is_found_in_boot_output() {
        assert_eq!(find(b"boot\nkvmini-oci: ready\nout", READY), Some(5));
        assert_eq!(find(b"kvmini-oci: rea", READY), None);
    }
}
