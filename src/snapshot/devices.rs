//! A restore's virtio devices: the options it was given (or, without any, the snapshot's
//! own), checked against the saved devices in kind and order before anything is opened, with
//! what the guest already knows of a device carried over (a read-only disk, a MAC). Each
//! device then checks its new backend itself (a disk image's size) as it takes its state.
//! docs/snapshots.md, "Devices", says what a restore may change.

use super::Error;
use crate::config::{DeviceConfig, DiskConfig, NetConfig, VsockConfig};
use crate::devices::virtio::state::{DeviceState, VirtioState};

/// The devices a restore of `saved` gets: `given` when it names any, else the snapshot's own
/// (whose files must still be there).
pub fn resolve(saved: &[VirtioState], given: &DeviceConfig) -> Result<DeviceConfig, Error> {
    if !given.any() {
        return defaults(saved);
    }
    let wanted = kinds(given);
    let mismatch = |why: String| mismatch(saved, why);
    for (i, (name, option)) in wanted.iter().enumerate() {
        let Some(s) = saved.get(i) else {
            return Err(mismatch(format!(
                "this restore gives {} virtio devices and the snapshot has {}: device {i}, a \
                 {name} ({option}), is not in the snapshot",
                wanted.len(),
                saved.len()
            )));
        };
        if s.device.name() != *name {
            return Err(mismatch(format!(
                "device {i} is a {} in the snapshot ({}), and this restore gives a {name} there \
                 ({option})",
                s.device.name(),
                s.device.option()
            )));
        }
    }
    if let Some(s) = saved.get(wanted.len()) {
        return Err(mismatch(format!(
            "this restore gives {} virtio devices and the snapshot has {}: device {}, a {} ({}), \
             is missing",
            wanted.len(),
            saved.len(),
            wanted.len(),
            s.device.name(),
            s.device.option()
        )));
    }
    let mut config = given.clone();
    carry_over(saved, &mut config).map_err(mismatch)?;
    Ok(config)
}

/// What the guest knows of a device and the options cannot change: a read-only disk stays
/// read-only, its ID and a network device's MAC stay the saved ones, the vsock CID too.
fn carry_over(saved: &[VirtioState], config: &mut DeviceConfig) -> Result<(), String> {
    let mut saved = saved.iter().map(|s| &s.device).enumerate();
    let disks = config.root.iter_mut().chain(config.disks.iter_mut());
    for (disk, (i, s)) in disks.zip(saved.by_ref()) {
        let DeviceState::Block { read_only, id, .. } = s else {
            continue;
        };
        disk.read_only |= *read_only;
        if let Some(given) = &disk.id {
            if id_bytes(given) != *id {
                return Err(format!(
                    "device {i} ({}): the disk's ID is '{}' in the snapshot, and the guest may \
                     have read it: leave id= out, or give that one",
                    disk.path.display(),
                    String::from_utf8_lossy(id).trim_end_matches('\0')
                ));
            }
        }
    }
    for (net, (i, s)) in config.nets.iter_mut().zip(saved.by_ref()) {
        let DeviceState::Net { mac, .. } = s else {
            continue;
        };
        match net.mac {
            Some(given) if given != *mac => {
                return Err(format!(
                    "device {i} (--net tap={}): the guest's MAC address is {} in the snapshot; \
                     leave mac= out, or give that one",
                    net.tap,
                    mac_text(mac)
                ))
            }
            _ => net.mac = Some(*mac),
        }
    }
    if let (Some(vsock), Some((i, DeviceState::Vsock { cid, .. }))) = (&config.vsock, saved.next())
    {
        if u64::from(vsock.cid) != *cid {
            return Err(format!(
                "device {i} (--vsock): the guest's context ID is {cid} in the snapshot, and \
                 this restore gives cid={}; give cid={cid}",
                vsock.cid
            ));
        }
    }
    Ok(())
}

/// The snapshot's own devices, for a restore that names none.
fn defaults(saved: &[VirtioState]) -> Result<DeviceConfig, Error> {
    let mut config = DeviceConfig::default();
    for s in saved {
        match &s.device {
            DeviceState::Block {
                path, read_only, ..
            } => {
                if std::fs::metadata(path).is_err() {
                    return Err(mismatch(
                        saved,
                        format!(
                            "this restore names no devices, so it takes the snapshot's, and its \
                             disk {} is not there any more: give the devices, with the images \
                             to use now",
                            path.display()
                        ),
                    ));
                }
                let mut disk = DiskConfig::new(path);
                disk.read_only = *read_only;
                config.disks.push(disk);
            }
            DeviceState::Net { tap, mac } => config.nets.push(NetConfig {
                tap: tap.clone(),
                mac: Some(*mac),
            }),
            DeviceState::Vsock { cid, uds } => {
                let cid = u32::try_from(*cid).map_err(|_| Error::Corrupt("a vsock CID"))?;
                config.vsock = Some(VsockConfig {
                    cid,
                    uds: uds.clone(),
                })
            }
            DeviceState::Rng => config.rng = true,
        }
    }
    Ok(config)
}

/// Each device `config` gives, in the order the guest finds them: its name and its option.
fn kinds(config: &DeviceConfig) -> Vec<(&'static str, String)> {
    let disk =
        |option: &str, d: &DiskConfig| ("virtio-blk", format!("{option} {}", d.path.display()));
    let mut kinds: Vec<_> = config.root.iter().map(|d| disk("--root", d)).collect();
    kinds.extend(config.disks.iter().map(|d| disk("--disk", d)));
    kinds.extend(
        config
            .nets
            .iter()
            .map(|n| ("virtio-net", format!("--net tap={}", n.tap))),
    );
    kinds.extend(config.vsock.iter().map(|v| {
        let option = format!("--vsock cid={},uds={}", v.cid, v.uds.display());
        ("virtio-vsock", option)
    }));
    if config.rng {
        kinds.push(("virtio-rng", "--rng".into()));
    }
    kinds
}

/// How device `index` of a restore is named in messages: its option.
pub fn describe(config: &DeviceConfig, index: usize) -> String {
    kinds(config)
        .into_iter()
        .nth(index)
        .map_or_else(|| format!("device {index}"), |(_, o)| o)
}

/// The error for devices that are not the snapshot's, with the snapshot's list.
pub fn mismatch(saved: &[VirtioState], why: String) -> Error {
    let list: Vec<String> = saved.iter().map(|s| s.device.option()).collect();
    Error::Devices {
        why,
        saved: if list.is_empty() {
            "none".into()
        } else {
            list.join(" ")
        },
    }
}

/// An ID as `GET_ID` answers it: 20 bytes, zero-padded.
fn id_bytes(id: &str) -> [u8; 20] {
    let mut bytes = [0; 20];
    let n = id.len().min(20);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    bytes
}

fn mac_text(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

#[cfg(test)]
#[path = "devices_tests.rs"]
mod tests;
