//! Messages as runc writes them: `time="..." level=error msg="..."` on stderr, or with `--log
//! FILE` into that file (one JSON object per line with `--log-format json`) and the bare
//! message on stderr. Container engines read the log file to report a runtime's failure.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// logrus's text form.
    #[default]
    Text,
    /// One JSON object per line: level, msg, time.
    Json,
}

/// Where messages go.
#[derive(Clone, Debug, Default)]
pub struct Logger {
    /// `--log FILE`: appended to.
    pub file: Option<PathBuf>,
    /// `--log-format`.
    pub format: LogFormat,
    /// `--debug`: debug messages too.
    pub debug: bool,
}

impl Logger {
    /// An error: to the log file (if any) and stderr.
    pub fn error(&self, msg: &str) {
        self.write("error", msg);
        if self.file.is_some() {
            eprintln!("{msg}");
        }
    }

    /// A warning: something the configuration asked for that the VM boundary makes moot
    /// (a mount type the guest kernel has no use for).
    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
    }

    /// Progress, with `--debug` only.
    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
        }
    }

    fn write(&self, level: &str, msg: &str) {
        let time = rfc3339(SystemTime::now());
        let line = match self.format {
            LogFormat::Json => {
                serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
            }
            LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}"),
        };
        match &self.file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path);
                if let Ok(mut f) = file {
                    let _ = writeln!(f, "{line}");
                }
            }
            None => eprintln!("{line}"),
        }
    }
}

/// `t` as RFC 3339 in UTC, to the second (what runc's logs and `state` show).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t = kvmini_measure::date::utc(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199); // leap year, end of Feb
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59Z");
    }
}
