//! The machine the benchmark runs on: whether KVM is there, what `kvmini check` says of it,
//! the date and load, where the peers are, and how commands are shown.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What the benchmark reads of `kvmini check --json`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Check {
    /// Whether guests can run here.
    pub usable: bool,
    /// Host kind, in words.
    #[serde(default)]
    pub host_kind: String,
    /// `pvm`, `hardware`, `nested` or `unknown`.
    #[serde(default)]
    pub host_kind_short: String,
    /// The probes' results, or (without `io_exit_us`) why there are none.
    #[serde(default)]
    pub measurements: Measurements,
}

/// The part of `kvmini check`'s measurements the benchmark shows.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Measurements {
    /// Median port-I/O exit round trip, microseconds.
    pub io_exit_us: Option<f64>,
}

/// `kvmini check --json`: the host kind, or why KVM cannot be used.
pub fn check(kvmini: &Path) -> Result<Check, Error> {
    let out = std::process::Command::new(kvmini)
        .args(["check", "--json"])
        .output()
        .map_err(|source| Error::Check {
            kvmini: kvmini.into(),
            source,
        })?;
    let check: Check =
        serde_json::from_slice(&out.stdout).map_err(|source| Error::CheckOutput {
            kvmini: kvmini.into(),
            source,
        })?;
    if !check.usable {
        return Err(Error::Unusable(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ));
    }
    Ok(check)
}

/// Whether /dev/kvm can be used; without it the benchmark is skipped (`Ok(false)`), unless
/// KVMINI_REQUIRE_KVM=1 (the same rule as the test suite's).
pub fn kvm_usable() -> Result<bool, Error> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(true),
        Err(e) if std::env::var("KVMINI_REQUIRE_KVM").as_deref() == Ok("1") => Err(Error::NoKvm(e)),
        Err(e) => {
            println!("skipping the benchmark: cannot open /dev/kvm: {e} (set KVMINI_REQUIRE_KVM=1 to make this fail)");
            Ok(false)
        }
    }
}

/// Fails with how to build `path` when it is missing.
pub fn require(path: &Path, how: &'static str) -> Result<(), Error> {
    if path.exists() {
        Ok(())
    } else {
        Err(Error::Missing {
            path: path.into(),
            how,
        })
    }
}

/// The date and time now, UTC.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as libc::time_t;
    // SAFETY: an all-zero tm is a valid buffer for gmtime_r to fill.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::gmtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The 1-minute load average: other work on the machine shows in the spread of the numbers.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// The machine and the time a run took: the head of every results file.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// When the run started.
    pub date: String,
    /// `kvmini check`'s short host kind.
    pub host_kind_short: String,
    /// `kvmini check`'s host kind in words.
    pub host_kind: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Load average before the rounds.
    pub load_average_before: String,
    /// Load average after them.
    pub load_average_after: String,
    /// How long the rounds took, seconds.
    pub elapsed_s: f64,
}

impl Machine {
    /// The machine now, before the rounds.
    pub fn before(check: &Check) -> Machine {
        Machine {
            date: now_utc(),
            host_kind_short: check.host_kind_short.clone(),
            host_kind: check.host_kind.clone(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average_before: load_average(),
            load_average_after: String::new(),
            elapsed_s: 0.0,
        }
    }

    /// Notes the load after the rounds and the time they took.
    pub fn after(&mut self, elapsed_s: f64) {
        self.load_average_after = load_average();
        self.elapsed_s = elapsed_s;
    }

    /// "N CPUs, load average B before and A after; WHAT took S s".
    pub fn line(&self, what: &str) -> String {
        format!(
            "machine: {} CPUs, load average {} before and {} after; {what} took {:.0} s\n",
            self.cpus, self.load_average_before, self.load_average_after, self.elapsed_s
        )
    }
}

/// The first executable called `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `p` is an executable file.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A program that may be absent: its path and why it cannot run here, if it cannot.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The program.
    pub program: String,
    /// Why it cannot run here.
    pub absent: Option<String>,
}

/// QEMU's program (QEMU=/path, else qemu-system-x86_64 on PATH).
pub fn qemu() -> Peer {
    let (program, absent) = match std::env::var("QEMU") {
        Ok(path) if is_executable(Path::new(&path)) => (path, None),
        Ok(path) => (
            path.clone(),
            Some(format!("QEMU={path} is not an executable")),
        ),
        Err(_) => match on_path("qemu-system-x86_64") {
            Some(_) => ("qemu-system-x86_64".to_string(), None),
            None => (
                "qemu-system-x86_64".to_string(),
                Some("qemu-system-x86_64 not on PATH; apt-get install qemu-system-x86".into()),
            ),
        },
    };
    Peer { program, absent }
}

/// A command line as a user would type it in the checkout: the program relative to it.
pub fn shown(program: &str, args: &[String]) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    let program = Path::new(program)
        .strip_prefix(&cwd)
        .map_or(program, |p| p.to_str().unwrap_or(program));
    kvmini_measure::command_line(program, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_relative_to_the_checkout() {
        assert_eq!(
            shown("a/b", &["--x".into(), "two words".into()]),
            "a/b --x 'two words'"
        );
        let cwd = std::env::current_dir().unwrap();
        let inside = cwd.join("target/kvmini").display().to_string();
        assert_eq!(shown(&inside, &[]), "target/kvmini");
    }

    #[test]
    fn a_failed_measurement_is_read_as_no_number() {
        let c: Check = serde_json::from_str(
            r#"{"usable": true, "host_kind": "k", "host_kind_short": "pvm",
                "measurements": {"error": "no /dev/kvm"}}"#,
        )
        .unwrap();
        assert_eq!(c.measurements.io_exit_us, None);
        let c: Check =
            serde_json::from_str(r#"{"usable": true, "measurements": {"io_exit_us": 11.5}}"#)
                .unwrap();
        assert_eq!(c.measurements.io_exit_us, Some(11.5));
    }
}
