//! The `oci` workload's second runtime: `kvmini oci`, the `kvmini-runtime` program beside
//! kvmini (docs/oci.md), run with runc's command line on the very bundle the container side
//! runs; and a bundle of the user's own (`--bundle DIR`) for both sides.
//!
//! Each run is `kvmini-runtime --root ROOT run --bundle DIR ID`, with a state root of its own
//! in the work directory (its root image cache stays there from one comparison to the next)
//! and, should a run fail or be killed, `delete --force ID` after it. The runtime is told the
//! guest directory the comparison checked (`KVMINI_OCI_GUEST`) and to restore the guest's OCI
//! snapshot or fail saying why (`KVMINI_OCI_BOOT=snapshot`): the side measures one kind of
//! start, never a cold boot in its place.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::workload::{OCI_RUNTIME, OCI_SNAPSHOT, PROBE_SCRIPT};
use super::Error;

/// The state root's name in the work directory.
pub const STATE_ROOT: &str = "kvmini-oci-root";

/// How the `kvmini-oci` side runs a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// The `kvmini-runtime` program.
    pub program: PathBuf,
    /// Its state root (`--root`).
    pub root: PathBuf,
    /// The Linux guest's directory, with its OCI snapshot.
    pub guests: PathBuf,
}

impl Runtime {
    /// The runtime beside the kvmini binary `kvmini`, for the guests in `guests` (an
    /// absolute path), with its state root in the work directory `work`.
    pub fn beside(kvmini: &Path, guests: &Path, work: &Path) -> Runtime {
        Runtime {
            program: kvmini.with_file_name(OCI_RUNTIME),
            root: work.join(STATE_ROOT),
            guests: guests.to_path_buf(),
        }
    }

    /// Why the `oci` workload cannot run here, if it cannot: the Linux guest, its OCI
    /// snapshot or kvmini-runtime is missing.
    pub fn missing(&self) -> Option<String> {
        let missing: Vec<String> = ["vmlinux", "initramfs.cpio"]
            .iter()
            .map(|f| self.guests.join(f))
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        let snapshot = self.guests.join(OCI_SNAPSHOT);
        if !missing.is_empty() {
            Some(format!(
                "{} missing: build the Linux guest with `make linux`, then its OCI snapshot \
                 with `make oci-snapshot`",
                missing.join(" and ")
            ))
        } else if !snapshot.join("memory").is_file() || !snapshot.join("state").is_file() {
            Some(format!(
                "{} is missing: `make oci-snapshot` saves it (one Linux boot)",
                snapshot.display()
            ))
        } else if !self.program.is_file() {
            Some(format!(
                "{} is missing: kvmini oci's runtime is built and installed beside kvmini \
                 (`make build`, `make install`)",
                self.program.display()
            ))
        } else {
            None
        }
    }

    /// The arguments of one run of the bundle `bundle` as container `id`.
    pub fn run_args(&self, bundle: &str, id: &str) -> Vec<String> {
        let mut args = self.global();
        args.extend(["run", "--bundle", bundle, id].map(String::from));
        args
    }

    /// The command that removes container `id`, whatever state a failed run left it in.
    pub fn delete_command(&self, id: &str) -> Vec<String> {
        let mut words = vec![self.program.display().to_string()];
        words.extend(self.global());
        words.extend(["delete", "--force", id].map(String::from));
        words
    }

    /// What the runtime's environment gets: this guest, and a restore of its snapshot.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KVMINI_OCI_GUEST".into(), self.guests.display().to_string()),
            ("KVMINI_OCI_BOOT".into(), "snapshot".into()),
        ]
    }

    fn global(&self) -> Vec<String> {
        vec!["--root".into(), self.root.display().to_string()]
    }
}

/// A bundle of the user's own (`--bundle DIR`), which both sides of `oci` run.
#[derive(Clone, Debug)]
pub struct OwnBundle {
    /// Its directory (absolute).
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: Value,
}

impl OwnBundle {
    /// The bundle in `dir`: a directory with a `config.json` that names a process.
    pub fn open(dir: &Path) -> Result<OwnBundle, Error> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Missing {
            path: path.clone(),
            how: format!(
                "cannot read it ({e}): --bundle names an OCI bundle, a directory with \
                 config.json (`runc spec` writes one)"
            ),
        })?;
        let config: Value = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!("{}: not a valid config.json: {e}", path.display()))
        })?;
        if config["process"]["args"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            return Err(Error::Usage(format!(
                "{}: process.args is missing or empty: the bundle must run a program",
                path.display()
            )));
        }
        Ok(OwnBundle { dir, config })
    }

    /// `process.args`.
    pub fn args(&self) -> Vec<String> {
        self.config["process"]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().map_or_else(|| a.to_string(), String::from))
            .collect()
    }

    /// The probe's `config.json`: the bundle's own, running busybox `sh -c PROBE_SCRIPT`
    /// (as `sh` on its `PATH`) without a terminal; the root and relative bind-mount sources,
    /// which a runtime resolves against the bundle's directory, made absolute so that the
    /// probe's bundle can live elsewhere.
    pub fn probe_config(&self) -> Value {
        let mut c = self.config.clone();
        c["process"]["args"] = serde_json::json!(["sh", "-c", PROBE_SCRIPT]);
        c["process"]["terminal"] = false.into();
        let absolute = |v: &Value| {
            v.as_str()
                .filter(|p| !p.starts_with('/'))
                .map(|p| Value::from(self.dir.join(p).display().to_string()))
        };
        if let Some(root) = absolute(&c["root"]["path"]) {
            c["root"]["path"] = root;
        }
        for m in c["mounts"].as_array_mut().into_iter().flatten() {
            if let Some(source) = absolute(&m["source"]).filter(|_| is_bind(m)) {
                m["source"] = source;
            }
        }
        c
    }
}

/// Whether a `mounts` entry is a bind mount (its type, or an option, says so).
fn is_bind(mount: &Value) -> bool {
    let bind = |s: &str| s == "bind" || s == "rbind";
    mount["type"].as_str().is_some_and(bind)
        || mount["options"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o.as_str().is_some_and(bind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kvmini-oci-side-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_run_names_its_own_state_root_and_deletes_by_the_same_id() {
        let rt = Runtime {
            program: "/k/kvmini-runtime".into(),
            root: "/w/kvmini-oci-root".into(),
            guests: "/g".into(),
        };
        assert_eq!(
            rt.run_args("/w/bundles/oci", "id-7"),
            [
                "--root",
                "/w/kvmini-oci-root",
                "run",
                "--bundle",
                "/w/bundles/oci",
                "id-7"
            ]
        );
        assert_eq!(
            rt.delete_command("id-7"),
            [
                "/k/kvmini-runtime",
                "--root",
                "/w/kvmini-oci-root",
                "delete",
                "--force",
                "id-7"
            ]
        );
        let env = rt.env();
        assert!(env.contains(&("KVMINI_OCI_GUEST".into(), "/g".into())));
        assert!(env.contains(&("KVMINI_OCI_BOOT".into(), "snapshot".into())));
    }

    #[test]
    fn the_workload_is_skipped_saying_what_is_missing() {
        let dir = scratch("find");
        let rt = Runtime::beside(
            &dir.join("bin/kvmini"),
            &dir.join("guests"),
            &dir.join("work"),
        );
        assert_eq!(rt.program, dir.join("bin/kvmini-runtime"));
        assert_eq!(rt.root, dir.join("work").join(STATE_ROOT));
        std::fs::create_dir_all(dir.join("guests").join(OCI_SNAPSHOT)).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let why = rt.missing().unwrap();
        assert!(
            why.contains("vmlinux and") && why.contains("make linux"),
            "{why}"
        );
        for f in ["vmlinux", "initramfs.cpio", "oci-snapshot/memory"] {
            std::fs::write(dir.join("guests").join(f), b"").unwrap();
        }
        let why = rt.missing().unwrap();
        assert!(
            why.contains("oci-snapshot is missing") && why.contains("make oci-snapshot"),
            "{why}"
        );
        std::fs::write(dir.join("guests/oci-snapshot/state"), b"").unwrap();
        let why = rt.missing().unwrap();
        assert!(why.contains("bin/kvmini-runtime is missing"), "{why}");
        std::fs::write(&rt.program, b"").unwrap();
        assert_eq!(rt.missing(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_own_bundle_is_checked_and_probed_with_absolute_paths() {
        let dir = scratch("own");
        let e = OwnBundle::open(&dir).unwrap_err();
        assert!(matches!(e, Error::Missing { .. }), "{e}");
        assert!(e.to_string().contains("runc spec"), "{e}");
        std::fs::write(dir.join("config.json"), "{").unwrap();
        let e = OwnBundle::open(&dir).unwrap_err();
        assert!(e.to_string().contains("not a valid config.json"), "{e}");
        std::fs::write(dir.join("config.json"), r#"{"process": {"args": []}}"#).unwrap();
        let e = OwnBundle::open(&dir).unwrap_err();
        assert!(e.to_string().contains("process.args"), "{e}");

        let config = json!({
            "process": { "args": ["/app", "--serve"], "terminal": true },
            "root": { "path": "rootfs" },
            "mounts": [
                { "destination": "/data", "type": "bind", "source": "data" },
                { "destination": "/etc/x", "type": "none", "source": "x", "options": ["rbind", "ro"] },
                { "destination": "/abs", "type": "bind", "source": "/srv/abs" },
                { "destination": "/proc", "type": "proc", "source": "proc" },
            ],
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let own = OwnBundle::open(&dir).unwrap();
        assert_eq!(own.args(), ["/app", "--serve"]);
        let probe = own.probe_config();
        assert_eq!(probe["process"]["args"], json!(["sh", "-c", PROBE_SCRIPT]));
        assert_eq!(probe["process"]["terminal"], false);
        let at = |p: &str| dir.join(p).display().to_string();
        assert_eq!(probe["root"]["path"], at("rootfs"));
        let sources: Vec<&str> = probe["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["source"].as_str().unwrap())
            .collect();
        assert_eq!(sources, [at("data").as_str(), &at("x"), "/srv/abs", "proc"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
