//! kvmini's own report of a run (`kvmini run --stats=json`, the last JSON line on standard
//! error), read back into the library's own type.

pub use kvmini::stats::{Stats as KvminiStats, Unclaimed};

/// The report in kvmini's standard error: its last line that is a JSON object.
pub fn from_stderr(stderr: &str) -> Option<KvminiStats> {
    stderr
        .lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<KvminiStats>(l.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_is_the_report_and_keeps_every_field() {
        let stderr = "warn\n{\"exit_status\":0,\"userspace_ms\":26000.5,\"cmdline\":\"console=ttyS0\",\
                      \"unclaimed\":{\"port_writes\":3,\"mmio_writes\":0,\"addresses\":[\"w 0x99\"]}}\n";
        let s = from_stderr(stderr).expect("stats");
        assert_eq!(s.userspace_ms, Some(26000.5));
        assert_eq!(s.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(s.unclaimed.port_writes, 3);
        assert_eq!(s.first_run_ms, None);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["exit_status"], 0);
        assert_eq!(back["unclaimed"]["addresses"][0], "w 0x99");
        assert_eq!(from_stderr("no json\n[1, 2]\n"), None);
    }
}
