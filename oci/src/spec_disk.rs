//! The process spec as the guest's `oci-init` reads it from its second disk (/dev/vdb):
//! "KVMOCI1\0", the length of what follows (32-bit little-endian), then one record per item:
//! a tag byte, the value's length (32-bit little-endian), the value and a NUL.
//!
//! | tag | value |
//! |---|---|
//! | `A` | one argument, in order |
//! | `E` | one environment entry, `NAME=value` |
//! | `C` | the working directory |
//! | `U`, `G` | uid, gid (decimal) |
//! | `g` | one additional gid (decimal) |
//! | `K` | the umask (decimal) |
//! | `H` | the host name |
//! | `L` | an rlimit: resource NUL soft NUL hard (decimal) |
//! | `M` | a mount: type NUL source NUL destination NUL flags (decimal) NUL data |
//! | `S` | a sysctl: key NUL value |
//! | `R` | the root disk is read-only (empty) |
//! | `B` | the bind image is /dev/vdc (empty) |
//! | `T` | the process runs on a terminal (empty) |
//! | `W` | the terminal's size: rows NUL columns (decimal) |
//!
//! The disk has a fixed size ([`SIZE`]), so that a VM restored from a snapshot can be handed
//! a new spec disk in the place of the one it was saved with.

use std::path::Path;

use crate::config::Plan;
use crate::Error;

/// The spec disk's size: the guest reads it whole.
pub const SIZE: usize = 64 * 1024;
const MAGIC: &[u8; 8] = b"KVMOCI1\0";

/// The disk's contents for `plan` (padded to [`SIZE`]).
pub fn encode(plan: &Plan) -> Result<Vec<u8>, Error> {
    if has_inner_nul(plan) {
        return Err(Error::BadConfig(
            "a string in config.json holds a NUL byte".into(),
        ));
    }
    let mut body = Vec::new();
    let mut put = |tag: u8, value: &[u8]| {
        body.push(tag);
        body.extend_from_slice(&(value.len() as u32).to_le_bytes());
        body.extend_from_slice(value);
        body.push(0);
    };
    for a in &plan.args {
        put(b'A', a.as_bytes());
    }
    for e in &plan.env {
        put(b'E', e.as_bytes());
    }
    put(b'C', plan.cwd.as_bytes());
    put(b'U', plan.uid.to_string().as_bytes());
    put(b'G', plan.gid.to_string().as_bytes());
    for g in &plan.additional_gids {
        put(b'g', g.to_string().as_bytes());
    }
    if let Some(mask) = plan.umask {
        put(b'K', mask.to_string().as_bytes());
    }
    if plan.terminal {
        put(b'T', b"");
    }
    if let Some((rows, cols)) = plan.console_size {
        put(b'W', format!("{rows}\0{cols}").as_bytes());
    }
    if let Some(h) = &plan.hostname {
        put(b'H', h.as_bytes());
    }
    for (resource, soft, hard) in &plan.rlimits {
        put(b'L', format!("{resource}\0{soft}\0{hard}").as_bytes());
    }
    for m in &plan.mounts {
        let value = format!(
            "{}\0{}\0{}\0{}\0{}",
            m.kind, m.source, m.destination, m.flags, m.data
        );
        put(b'M', value.as_bytes());
    }
    for (key, value) in &plan.sysctls {
        put(b'S', format!("{key}\0{value}").as_bytes());
    }
    if plan.readonly {
        put(b'R', b"");
    }
    if !plan.bind_sources.is_empty() {
        put(b'B', b"");
    }
    let mut disk = Vec::with_capacity(SIZE);
    disk.extend_from_slice(MAGIC);
    disk.extend_from_slice(&(body.len() as u32).to_le_bytes());
    disk.extend_from_slice(&body);
    if disk.len() > SIZE {
        return Err(Error::BadConfig(format!(
            "the process spec takes {} bytes; kvmini passes at most {} (fewer or shorter args, env entries or mounts)",
            disk.len(),
            SIZE
        )));
    }
    disk.resize(SIZE, 0);
    Ok(disk)
}

fn has_inner_nul(plan: &Plan) -> bool {
    let strings = plan.args.iter().chain(&plan.env).chain([&plan.cwd]);
    let mounts = plan
        .mounts
        .iter()
        .flat_map(|m| [&m.kind, &m.source, &m.destination, &m.data]);
    strings
        .chain(mounts)
        .chain(plan.hostname.as_ref())
        .chain(plan.sysctls.iter().flat_map(|(k, v)| [k, v]))
        .any(|s| s.contains('\0'))
}

/// Writes the spec disk for `plan` to `path`.
pub fn write(plan: &Plan, path: &Path) -> Result<(), Error> {
    let disk = encode(plan)?;
    std::fs::write(path, disk).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_tag_length_value_nul() {
        let plan = Plan {
            args: vec!["echo".into(), "hi".into()],
            cwd: "/".into(),
            readonly: true,
            ..Plan::default()
        };
        let d = encode(&plan).unwrap();
        assert_eq!(d.len(), SIZE);
        assert_eq!(&d[..8], MAGIC);
        let len = u32::from_le_bytes(d[8..12].try_into().unwrap()) as usize;
        let body = &d[12..12 + len];
        assert_eq!(&body[..10], b"A\x04\0\0\0echo\0");
        assert!(body.ends_with(b"R\0\0\0\0\0"));
    }

    #[test]
    fn too_large_and_nul_bytes_are_refused() {
        let big = Plan {
            args: vec!["x".repeat(SIZE)],
            ..Plan::default()
        };
        assert!(matches!(encode(&big), Err(Error::BadConfig(_))));
        let nul = Plan {
            args: vec!["a\0b".into()],
            ..Plan::default()
        };
        assert!(matches!(encode(&nul), Err(Error::BadConfig(_))));
    }
}
