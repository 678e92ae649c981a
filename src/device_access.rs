//! Why this user cannot open `/dev/kvm`, and the one fix that applies: join the device's group,
//! log in again, give the group access first, or look past the file mode (a container or a
//! security policy). Read from the device's mode and owner and from `/etc/passwd` and
//! `/etc/group` (not NSS: kvmini is a static executable), only when opening failed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What decides whether a user may open the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The device's permission bits (`st_mode & 0o777`).
    pub mode: u32,
    /// Owner and group of the device, by name where the databases have one.
    pub owner: String,
    /// The device's group, by name where `/etc/group` has one.
    pub group: String,
    /// The device's group id.
    pub gid: u32,
    /// The user, by name where `/etc/passwd` has one.
    pub user: String,
    /// `/etc/group` lists the user in the device's group (or it is the user's primary group).
    pub member: bool,
    /// This process runs with the device's group (effective or supplementary).
    pub in_process: bool,
}

/// The advice for `path` (`/dev/kvm`), for this process's user: what the device allows and
/// what to do. `None` when the device cannot even be looked at.
pub fn advice(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    Some(advice_for(&facts(&meta)))
}

fn facts(meta: &std::fs::Metadata) -> Facts {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let user_entry = find_entry(&passwd, uid);
    let user = user_entry
        .as_ref()
        .map_or(uid.to_string(), |e| e[0].to_string());
    let primary_gid = user_entry.and_then(|e| e.get(3)?.parse::<u32>().ok());
    let group_entry = find_entry(&groups, meta.gid());
    let group = group_entry
        .as_ref()
        .map_or(meta.gid().to_string(), |e| e[0].to_string());
    let listed = group_entry
        .and_then(|e| e.get(3).copied())
        .is_some_and(|members| members.split(',').any(|m| m == user));
    Facts {
        mode: meta.mode() & 0o777,
        owner: find_entry(&passwd, meta.uid()).map_or(meta.uid().to_string(), |e| e[0].into()),
        group,
        gid: meta.gid(),
        user,
        member: listed || primary_gid == Some(meta.gid()),
        in_process: egid == meta.gid() || supplementary_groups().contains(&meta.gid()),
    }
}

/// The `name:x:id:...` line of `/etc/passwd` or `/etc/group` whose id is `id`, split at `:`.
fn find_entry(db: &str, id: u32) -> Option<Vec<&str>> {
    db.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2].parse() == Ok(id))
}

fn supplementary_groups() -> Vec<u32> {
    // SAFETY: with a size of 0, getgroups writes nothing and returns how many groups there are.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups = vec![0; n.max(0) as usize];
    // SAFETY: `groups` has room for the `n` ids the call may write.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(n.max(0) as usize);
    groups
}

/// `crw-rw----`-style permission bits.
fn mode_string(mode: u32) -> String {
    let bits = ['r', 'w', 'x'];
    let mut s = String::from("c");
    for shift in [6, 3, 0] {
        for (i, c) in bits.iter().enumerate() {
            s.push(if mode >> (shift + 2 - i) & 1 == 1 {
                *c
            } else {
                '-'
            });
        }
    }
    s
}

/// The advice for these facts (pure, for the tests).
pub fn advice_for(f: &Facts) -> String {
    let what = format!(
        "this user ({}; the device is {} {}:{})",
        f.user,
        mode_string(f.mode),
        f.owner,
        f.group
    );
    let group_rw = f.mode & 0o060 == 0o060 && f.gid != 0;
    let fix = if f.mode & 0o006 == 0o006 || (group_rw && f.in_process) {
        "its mode allows this user, so something else denies it: in a container, pass the device \
         in (docker/podman run --device /dev/kvm); otherwise check ACLs and the security policy \
         (SELinux, AppArmor)"
            .to_string()
    } else if group_rw && f.member {
        format!(
            "{} is in group {} but this login session started before that: log in again (or run \
             `newgrp {}`)",
            f.user, f.group, f.group
        )
    } else if group_rw {
        format!(
            "add the user to the {g} group (sudo usermod -aG {g} {u}, then log in again) or run \
             as root",
            g = f.group,
            u = f.user
        )
    } else {
        format!(
            "only its owner may use it: give the kvm group access (sudo groupadd -f kvm; sudo \
             chgrp kvm /dev/kvm; sudo chmod 660 /dev/kvm; to keep it across reboots, the udev \
             rule KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\" in \
             /etc/udev/rules.d/99-kvm.rules), then add the user to it (sudo usermod -aG kvm {}, \
             then log in again); or run as root",
            f.user
        )
    };
    format!("{what}: {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(mode: u32, gid: u32, group: &str, member: bool, in_process: bool) -> Facts {
        Facts {
            mode,
            owner: "root".into(),
            group: group.into(),
            gid,
            user: "alice".into(),
            member,
            in_process,
        }
    }

    #[test]
    fn a_user_outside_the_devices_group_is_told_to_join_it() {
        let a = advice_for(&facts(0o660, 108, "kvm", false, false));
        assert!(
            a.starts_with("this user (alice; the device is crw-rw---- root:kvm)"),
            "{a}"
        );
        assert!(
            a.contains("sudo usermod -aG kvm alice, then log in again"),
            "{a}"
        );
    }

    #[test]
    fn a_member_whose_session_predates_it_is_told_to_log_in_again() {
        let a = advice_for(&facts(0o660, 108, "kvm", true, false));
        assert!(
            a.contains("alice is in group kvm but this login session"),
            "{a}"
        );
        assert!(a.contains("newgrp kvm"), "{a}");
    }

    #[test]
    fn a_root_only_device_needs_group_access_first() {
        let a = advice_for(&facts(0o600, 0, "root", false, false));
        assert!(a.contains("crw------- root:root"), "{a}");
        assert!(a.contains("chmod 660 /dev/kvm"), "{a}");
        assert!(a.contains("GROUP=\"kvm\", MODE=\"0660\""), "{a}");
        assert!(a.contains("usermod -aG kvm alice"), "{a}");
        // Group rw for root's own group does not help a user either.
        let a = advice_for(&facts(0o660, 0, "root", false, false));
        assert!(a.contains("chmod 660"), "{a}");
    }

    #[test]
    fn when_the_mode_allows_it_the_advice_looks_elsewhere() {
        for f in [
            facts(0o666, 108, "kvm", false, false),
            facts(0o660, 108, "kvm", true, true),
        ] {
            let a = advice_for(&f);
            assert!(a.contains("--device /dev/kvm"), "{a}");
            assert!(!a.contains("usermod"), "{a}");
        }
    }

    #[test]
    fn database_entries_are_found_by_id() {
        let db = "root:x:0:0:root:/root:/bin/sh\nkvm:x:108:\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        assert_eq!(find_entry(db, 108).unwrap()[0], "kvm");
        assert_eq!(find_entry(db, 1000).unwrap()[0], "bob");
        assert!(find_entry(db, 7).is_none());
        assert_eq!(mode_string(0o640), "crw-r-----");
    }
}
