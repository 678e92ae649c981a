//! Whether a Linux boot did what it must: the user-space line, then a `uname -r` line, then
//! `/init`'s exit status 0, and the VMM's exit status 0; for kvmini also its `--stats=json`
//! report with the port-0x80 marker.

use kvmini_measure::runner::{Run, Status};

use super::super::tail;
use crate::kvmini_stats::KvminiStats;

/// The line `/init` prints first.
pub const USERSPACE_LINE: &str = "kvmini-init: user space up";
/// How the `uname -r` line of the guest kernel starts (any 6.x kernel: guest/linux builds
/// from any linux-source-6.x or a tree given with KERNEL_SRC).
pub const RELEASE_PREFIX: &str = "6.";
/// What `/init` prints when the command has ended, before the status.
const EXIT_LINE: &str = "kvmini-init: exit status ";

/// What a boot's output says.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Why the boot does not count, if it does not.
    pub failure: Option<String>,
    /// The `uname -r` line.
    pub release: Option<String>,
    /// kvmini's `--stats=json` report.
    pub stats: Option<KvminiStats>,
}

/// The exit status `/init` reported after the user-space line, if any.
fn init_status(after_up: &str) -> Option<i32> {
    let rest = &after_up[after_up.find(EXIT_LINE)? + EXIT_LINE.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<i32>().ok()
}

/// Whether a boot did what it must; `kvmini` adds the checks of kvmini's statistics.
pub fn verdict(kvmini: bool, run: &Run) -> Verdict {
    let stats = kvmini
        .then(|| crate::kvmini_stats::from_stderr(&run.stderr_text()))
        .flatten();
    let text = run.stdout_text();
    let after_up = text.find(USERSPACE_LINE).map(|p| &text[p..]);
    let release = after_up.and_then(|t| {
        t.lines()
            .map(|l| l.trim_matches(|c: char| c == '\r' || c.is_whitespace()))
            .find(|l| l.starts_with(RELEASE_PREFIX))
            .map(String::from)
    });
    let init_status = after_up.and_then(init_status);
    let outputs = || {
        format!(
            "stdout: {}; stderr: {}",
            tail(&run.stdout, 3),
            tail(&run.stderr, 2)
        )
    };
    let failure = if run.status == Status::TimedOut {
        Some(format!("{}; {}", run.status, outputs()))
    } else if after_up.is_none() {
        Some(format!(
            "no '{USERSPACE_LINE}' ({}); {}",
            run.status,
            outputs()
        ))
    } else if release.is_none() {
        Some(format!(
            "no line starting with '{RELEASE_PREFIX}' (uname -r) after '{USERSPACE_LINE}' ({}); {}",
            run.status,
            outputs()
        ))
    } else if init_status != Some(0) {
        Some(format!(
            "/init reported {} (expected exit status 0); {}",
            init_status.map_or("no exit status".into(), |s| format!("exit status {s}")),
            outputs()
        ))
    } else if run.status != Status::Code(0) {
        Some(format!(
            "{} (expected exit status 0); {}",
            run.status,
            outputs()
        ))
    } else if kvmini && stats.is_none() {
        Some(format!(
            "no --stats=json object on stderr; stderr: {}",
            tail(&run.stderr, 3)
        ))
    } else if kvmini && stats.as_ref().is_some_and(|s| s.userspace_ms.is_none()) {
        Some("kvmini saw no user-space marker (0x60 on port 0x80): userspace_ms is null".into())
    } else {
        None
    };
    Verdict {
        failure,
        release,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(status: Status, stdout: &str, stderr: &str) -> Run {
        Run {
            fork_to_exec: Duration::ZERO,
            exit: Duration::from_secs(30),
            status,
            user: Duration::ZERO,
            sys: Duration::ZERO,
            maxrss_kib: 0,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            arrivals: vec![
                (10, Duration::from_secs(3)),
                (stdout.len(), Duration::from_secs(25)),
            ],
            memory: None,
        }
    }

    const GOOD: &str = "[    0.000000] Linux version 6.1.0 (x@y)\r\nkvmini-init: user space up\r\n\
                        6.1.158\r\nkvmini-init: exit status 0\r\n";

    #[test]
    fn a_good_boot_counts_with_its_release_and_statistics() {
        let stats =
            r#"{"exit_status":0,"userspace_ms":26000.5,"cmdline":"console=ttyS0 -- uname -r"}"#;
        let v = verdict(
            true,
            &run(Status::Code(0), GOOD, &format!("warn\n{stats}\n")),
        );
        assert_eq!(v.failure, None, "a good boot");
        assert_eq!(v.release.as_deref(), Some("6.1.158"));
        assert_eq!(v.stats.expect("stats").userspace_ms, Some(26000.5));
        let r = run(Status::Code(0), GOOD, "");
        assert!(verdict(true, &r).failure.is_some(), "kvmini without stats");
        assert_eq!(verdict(false, &r).failure, None, "QEMU needs no stats");
        assert_eq!(
            r.arrival_of(USERSPACE_LINE),
            Some(Duration::from_secs(25)),
            "the line arrived in the second chunk"
        );
    }

    #[test]
    fn a_boot_that_misses_a_step_does_not_count() {
        // The banner's "6.1." does not count for uname -r.
        let no_uname =
            "Linux version 6.1.0\r\nkvmini-init: user space up\r\nkvmini-init: exit status 0\r\n";
        assert!(verdict(false, &run(Status::Code(0), no_uname, ""))
            .failure
            .expect("fails")
            .contains("uname"));
        let bad_status = GOOD.replace("exit status 0", "exit status 127");
        assert!(verdict(false, &run(Status::Code(0), &bad_status, ""))
            .failure
            .expect("fails")
            .contains("exit status 127"));
        assert!(verdict(false, &run(Status::TimedOut, GOOD, ""))
            .failure
            .is_some());
        assert!(verdict(false, &run(Status::Code(122), GOOD, ""))
            .failure
            .is_some());
    }
}
