//! kvmini's own report of a run (`kvmini run --stats=json`, the last JSON line on standard
//! error): the fields the benchmark reads, typed, and every other field kept as it came, so
//! that the results file holds the whole report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Accesses no device claimed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unclaimed {
    /// Port reads.
    pub port_reads: u64,
    /// Port writes.
    pub port_writes: u64,
    /// MMIO reads.
    pub mmio_reads: u64,
    /// MMIO writes.
    pub mmio_writes: u64,
    /// The first few distinct unclaimed addresses.
    pub addresses: Vec<String>,
}

/// `kvmini run --stats=json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KvminiStats {
    /// Milliseconds from kvmini's start to the first `KVM_RUN`.
    #[serde(default)]
    pub first_run_ms: Option<f64>,
    /// Milliseconds to the first serial byte.
    #[serde(default)]
    pub first_serial_byte_ms: Option<f64>,
    /// Milliseconds to the guest's user-space marker (0x60 on port 0x80).
    #[serde(default)]
    pub userspace_ms: Option<f64>,
    /// Milliseconds to the end of the run.
    #[serde(default)]
    pub total_ms: Option<f64>,
    /// The kernel command line, if any.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Accesses no device claimed.
    #[serde(default)]
    pub unclaimed: Unclaimed,
    /// Every other field of the report.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl KvminiStats {
    /// The report in kvmini's standard error: its last line that is a JSON object.
    pub fn from_stderr(stderr: &str) -> Option<KvminiStats> {
        stderr
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<KvminiStats>(l.trim()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_is_the_report_and_keeps_every_field() {
        let stderr = "warn\n{\"exit_status\":0,\"userspace_ms\":26000.5,\"cmdline\":\"console=ttyS0\",\
                      \"unclaimed\":{\"port_writes\":3,\"mmio_writes\":0,\"addresses\":[\"w 0x99\"]}}\n";
        let s = KvminiStats::from_stderr(stderr).expect("stats");
        assert_eq!(s.userspace_ms, Some(26000.5));
        assert_eq!(s.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(s.unclaimed.port_writes, 3);
        assert_eq!(s.first_run_ms, None);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["exit_status"], 0);
        assert_eq!(back["unclaimed"]["addresses"][0], "w 0x99");
        assert_eq!(KvminiStats::from_stderr("no json\n[1, 2]\n"), None);
    }
}
