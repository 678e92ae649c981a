//! The runtime's commands, as runc has them: create, start, state, kill, delete, run, list.
//! Each returns `Err` for a failure runc would report (status 1).

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::holder::{self, Disks};
use crate::state::{self, Saved, Status, EXEC_FIFO};
use crate::{config, image, snapshot, spec_disk, terminal, Error, Global};

/// `create` and `run`'s options.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// `--bundle` (the current directory when not given).
    pub bundle: PathBuf,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: where the terminal's master side goes (process.terminal).
    pub console_socket: Option<PathBuf>,
    /// `run` without `-d`: the container's terminal, if any, is the caller's own.
    pub foreground: bool,
}

/// A created container.
#[derive(Debug)]
pub struct Created {
    /// The holder (its PID is the container's).
    pub child: std::process::Child,
    /// Whether the process has a terminal (process.terminal).
    pub terminal: bool,
}

/// `create`: prepares the VM and starts the holder, which boots it and waits for `start`.
pub fn create(g: &Global, id: &str, o: &CreateOptions) -> Result<Created, Error> {
    state::check_id(id)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&g.root)
        .map_err(|e| Error::io(format!("creating the state root {}", g.root.display()), e))?;
    let dir = g.dir(id);
    if dir.exists() {
        return Err(Error::Exists(id.to_string()));
    }
    let bundle = std::path::absolute(&o.bundle)
        .map_err(|e| Error::io(format!("finding the bundle {}", o.bundle.display()), e))?;
    let plan = config::load(&bundle)?;
    for note in &plan.notes {
        g.logger.warn(note);
    }
    terminal::check(!o.foreground, plan.terminal, o.console_socket.is_some())?;
    let guest = holder::find_guest()?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Exists(id.to_string()),
            _ => Error::io(format!("creating {}", dir.display()), e),
        })?;
    let mut saved = Saved {
        id: id.to_string(),
        bundle,
        rootfs: plan.root.clone(),
        pid: 0,
        start_time: 0,
        created: crate::log::rfc3339(SystemTime::now()),
        annotations: plan.annotations.clone(),
    };
    let result = prepare(g, &dir, &plan, &guest, &mut saved, o);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.map(|child| Created {
        child,
        terminal: plan.terminal,
    })
}

fn prepare(
    g: &Global,
    dir: &Path,
    plan: &config::Plan,
    guest: &holder::Guest,
    saved: &mut Saved,
    o: &CreateOptions,
) -> Result<std::process::Child, Error> {
    state::save(dir, saved)?;
    let started = Instant::now();
    let boot = snapshot::choose(&guest.dir, plan)?;
    g.logger.debug(&format!("the VM starts by {boot:?}"));
    // Device nodes and links are made in the /dev tmpfs: no mount point in the image.
    let points: Vec<image::MountPoint> = plan
        .mounts
        .iter()
        .filter(|m| m.kind != "device" && m.kind != "link")
        .map(|m| image::MountPoint {
            path: m.destination.clone(),
            file: m.kind == "file",
        })
        .collect();
    let root = image::root_disk(
        &plan.root,
        &points,
        &g.root.join("cache"),
        snapshot::shares_root_image(&boot, plan),
        snapshot::root_size(&boot),
        &dir.join("rootfs.ext4"),
    )?;
    let spec = dir.join("spec.img");
    spec_disk::write(plan, &spec)?;
    let binds = if plan.bind_sources.is_empty() {
        None
    } else {
        let image = dir.join("binds.ext4");
        let fixed = snapshot::root_size(&boot).map(|_| snapshot::BINDS_BYTES);
        image::bind_disk(&plan.bind_sources, &dir.join("binds"), &image, fixed)?;
        Some(image)
    };
    g.logger
        .debug(&format!("disk images ready in {:?}", started.elapsed()));
    let disks = Disks { root, spec, binds };
    holder::save_vm_command(dir, &holder::vm_command(guest, &boot, &disks, plan))?;
    mkfifo(&dir.join(EXEC_FIFO))?;
    // A terminal for a detached container: its master to the engine first, its slave the
    // holder's standard I/O.
    let tty = match &o.console_socket {
        Some(socket) => {
            let pty = terminal::open(plan.console_size)?;
            terminal::send_master(socket, &pty)?;
            Some(pty.slave)
        }
        None => None,
    };
    let child = holder::spawn(dir, tty)?;
    saved.pid = child.id() as i32;
    saved.start_time = state::start_time(saved.pid);
    state::save(dir, saved)?;
    if let Some(f) = &o.pid_file {
        std::fs::write(f, saved.pid.to_string())
            .map_err(|e| Error::io(format!("writing the pid file {}", f.display()), e))?;
    }
    Ok(child)
}

fn mkfifo(path: &Path) -> Result<(), Error> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::BadConfig("a path holds a NUL byte".into()))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(Error::io(
            format!("creating {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `start`: releases a created container's process.
pub fn start(g: &Global, id: &str) -> Result<(), Error> {
    let s = state::load(g, id)?;
    match state::status(g, &s) {
        Status::Created => {}
        Status::Stopped => {
            return Err(Error::BadStatus(
                "cannot start a container that has stopped".into(),
            ))
        }
        Status::Running => {
            return Err(Error::BadStatus(
                "cannot start an already running container".into(),
            ))
        }
        Status::Creating => {
            return Err(Error::BadStatus(
                "cannot start a container that is still being created".into(),
            ))
        }
    }
    let fifo = g.dir(id).join(EXEC_FIFO);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .map_err(|e| Error::io(format!("opening {}", fifo.display()), e))?;
    // The holder opens the FIFO for writing as soon as it runs; poll until its byte comes.
    let mut byte = [0u8; 1];
    loop {
        match f.read(&mut byte) {
            Ok(1) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::io(format!("reading {}", fifo.display()), e)),
        }
        if !state::alive(&s) {
            return Err(Error::BadStatus(
                "cannot start a container that has stopped".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&fifo).map_err(|e| Error::io(format!("removing {}", fifo.display()), e))
}

/// `state`: the runtime specification's state JSON.
pub fn state(g: &Global, id: &str) -> Result<String, Error> {
    let s = state::load(g, id)?;
    Ok(serde_json::to_string_pretty(&state::to_json(g, &s)).expect("state serializes"))
}

/// `kill`: sends `signal` to the holder (which stops the VM).
pub fn kill(g: &Global, id: &str, signal: &str) -> Result<(), Error> {
    let sig = parse_signal(signal)?;
    let s = state::load(g, id)?;
    if matches!(state::status(g, &s), Status::Stopped | Status::Creating) {
        return Err(Error::BadStatus("container not running".into()));
    }
    // SAFETY: kill takes plain values; the PID was checked against its start time.
    if unsafe { libc::kill(s.pid, sig) } != 0 {
        return Err(Error::io(
            format!("signalling process {}", s.pid),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Signal names (without SIG) and numbers, as `kill -l` lists them.
const SIGNALS: [(&str, i32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
];

/// A signal by name (`TERM`, `SIGTERM`, any case) or number (1-64).
pub fn parse_signal(s: &str) -> Result<i32, Error> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64)
            .contains(&n)
            .then_some(n)
            .ok_or_else(|| Error::BadSignal(s.into()));
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| Error::BadSignal(s.into()))
}

/// `delete`: removes a stopped (or created) container; `force` kills a running one first.
pub fn delete(g: &Global, id: &str, force: bool) -> Result<(), Error> {
    let s = match state::load(g, id) {
        Err(Error::NotFound) if force => return Ok(()),
        other => other?,
    };
    if state::status(g, &s) == Status::Running && !force {
        return Err(Error::BadStatus(format!(
            "cannot delete container {id} that is not stopped: running"
        )));
    }
    if state::alive(&s) {
        // SAFETY: kill takes plain values; the PID was checked against its start time.
        unsafe { libc::kill(s.pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while state::alive(&s) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let dir = g.dir(id);
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))
}

/// `run`: create, start, wait for the process and delete; returns its exit status.
pub fn run(g: &Global, id: &str, o: &CreateOptions, detach: bool) -> Result<i32, Error> {
    let o = CreateOptions {
        foreground: !detach,
        ..o.clone()
    };
    let Created {
        mut child,
        terminal,
    } = create(g, id, &o)?;
    // In the foreground a terminal is the caller's: raw while the guest's does the rest.
    let _raw = (terminal && !detach)
        .then(terminal::RawStdin::new)
        .flatten();
    if let Err(e) = start(g, id) {
        let _ = delete(g, id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for the container", e))?;
    let _ = delete(g, id, true);
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// `list`: every container under the state root, as runc's table, its IDs (`quiet`) or JSON.
pub fn list(g: &Global, quiet: bool, json: bool) -> Result<String, Error> {
    let mut ids: Vec<String> = match std::fs::read_dir(&g.root) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(state::STATE_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(format!("reading {}", g.root.display()), e)),
    };
    ids.sort();
    let states: Vec<serde_json::Value> = ids
        .iter()
        .filter_map(|id| state::load(g, id).ok())
        .map(|s| state::to_json(g, &s))
        .collect();
    if json {
        return Ok(serde_json::Value::Array(states).to_string());
    }
    let mut out = String::new();
    if !quiet {
        out.push_str("ID          PID         STATUS      BUNDLE      CREATED     OWNER\n");
    }
    for s in &states {
        let f = |k: &str| {
            s[k].as_str()
                .map_or_else(|| s[k].to_string(), str::to_string)
        };
        if quiet {
            out.push_str(&format!("{}\n", f("id")));
        } else {
            out.push_str(&format!(
                "{:<12}{:<12}{:<12}{:<12}{:<12}{}\n",
                f("id"),
                f("pid"),
                f("status"),
                f("bundle"),
                f("created"),
                f("owner")
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("BOGUS").is_err());
    }
}
