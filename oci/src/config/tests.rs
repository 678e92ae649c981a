use super::*;
use serde_json::json;

fn bundle_with_rootfs() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmini-oci-config-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    dir
}

fn base() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": { "args": ["sh"], "cwd": "/" },
        "root": { "path": "rootfs" },
    })
}

#[test]
fn runc_spec_style_config_becomes_a_plan() {
    let b = bundle_with_rootfs();
    let mut c = base();
    c["process"]["env"] = json!(["PATH=/bin", "A=b"]);
    c["process"]["user"] = json!({ "uid": 1000, "gid": 100, "additionalGids": [5, 6] });
    c["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048 }]);
    c["process"]["capabilities"] = json!({ "bounding": ["CAP_KILL"] });
    c["root"]["readonly"] = json!(true);
    c["hostname"] = json!("box");
    c["mounts"] = json!([
        { "destination": "/proc", "type": "proc", "source": "proc" },
        { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"] },
        { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue" },
    ]);
    c["linux"] = json!({
        "namespaces": [{ "type": "pid" }, { "type": "mount" }],
        "resources": { "memory": { "limit": 300_000_000 }, "cpu": { "quota": 150_000, "period": 100_000 } },
        "maskedPaths": ["/proc/kcore"],
        "sysctl": { "net.ipv4.ping_group_range": "0 0" },
    });
    let p = plan(&c, &b).unwrap();
    assert_eq!(p.args, ["sh"]);
    assert_eq!(
        (p.uid, p.gid, p.additional_gids.clone()),
        (1000, 100, vec![5, 6])
    );
    assert_eq!(p.rlimits, [(7, 1024, 2048)]);
    assert!(p.readonly);
    assert_eq!(p.hostname.as_deref(), Some("box"));
    assert_eq!(p.mem_mib, 287);
    assert_eq!(p.cpus, 2);
    assert_eq!(p.mounts[1].flags, 2);
    assert_eq!(p.mounts[1].data, "mode=755");
    // /dev as tmpfs brings runc's six device nodes and four links (no ptmx link without
    // devpts); mqueue is skipped with a note.
    assert_eq!(p.mounts.len(), 2 + 6 + 4);
    assert_eq!(
        (p.mounts[2].kind.as_str(), p.mounts[2].source.as_str()),
        ("device", "1:3")
    );
    assert_eq!(p.mounts[2].destination, "/dev/null");
    assert_eq!(p.mounts[11].kind, "link");
    assert_eq!(
        (
            p.mounts[11].source.as_str(),
            p.mounts[11].destination.as_str()
        ),
        ("/proc/self/fd/2", "/dev/stderr")
    );
    assert_eq!(p.notes.len(), 1);
    assert_eq!(p.sysctls["net.ipv4.ping_group_range"], "0 0");
}

#[test]
fn behaviour_changing_fields_are_refused_by_name() {
    let b = bundle_with_rootfs();
    for (path, value, field) in [
        (
            "/linux/uidMappings",
            json!([{ "containerID": 0, "hostID": 1000, "size": 1 }]),
            "linux.uidMappings",
        ),
        (
            "/linux/namespaces",
            json!([{ "type": "network", "path": "/proc/1/ns/net" }]),
            "linux.namespaces[].path",
        ),
        (
            "/hooks",
            json!({ "prestart": [{ "path": "/bin/true" }] }),
            "hooks",
        ),
        ("/linux/frobnicate", json!(1), "linux.frobnicate"),
    ] {
        let mut c = base();
        c["linux"] = json!({});
        let (parent, key) = path.rsplit_once('/').unwrap();
        c.pointer_mut(parent).unwrap()[key] = value;
        match plan(&c, &b) {
            Err(Error::Unsupported { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[test]
fn a_terminal_and_its_size_reach_the_plan() {
    let b = bundle_with_rootfs();
    let mut c = base();
    c["process"]["terminal"] = json!(true);
    c["process"]["consoleSize"] = json!({ "height": 40, "width": 132 });
    let p = plan(&c, &b).unwrap();
    assert!(p.terminal);
    assert_eq!(p.console_size, Some((40, 132)));
    c["process"]["consoleSize"] = json!({ "height": 70000, "width": 80 });
    let e = plan(&c, &b).unwrap_err().to_string();
    assert!(e.contains("consoleSize.height"), "{e}");
}

#[test]
fn other_major_versions_and_missing_roots_are_errors() {
    let b = bundle_with_rootfs();
    let mut c = base();
    c["ociVersion"] = json!("2.0.0");
    assert!(matches!(plan(&c, &b), Err(Error::Unsupported { .. })));
    let mut c = base();
    c["root"]["path"] = json!("nowhere");
    assert!(matches!(plan(&c, &b), Err(Error::BadConfig(_))));
}

#[test]
fn cpu_lists_count_their_cpus() {
    assert_eq!(cpu_list_len("0-3,6"), Some(5));
    assert_eq!(cpu_list_len("2"), Some(1));
    assert_eq!(cpu_list_len("3-1"), None);
}
