use std::path::PathBuf;

use super::*;
use crate::devices::virtio::state::TransportState;

fn saved(device: DeviceState) -> VirtioState {
    VirtioState {
        device,
        transport: TransportState::default(),
    }
}

fn disk(path: &str, read_only: bool) -> VirtioState {
    let mut id = [0; 20];
    id[..4].copy_from_slice(b"data");
    saved(DeviceState::Block {
        path: path.into(),
        capacity: 1 << 20,
        read_only,
        id,
    })
}

fn vsock(cid: u64) -> VirtioState {
    saved(DeviceState::Vsock {
        cid,
        uds: "/run/v.sock".into(),
    })
}

/// Resolving `given` against `snapshot` fails, saying `says` and listing the snapshot's
/// devices.
fn refused(snapshot: &[VirtioState], given: &DeviceConfig, says: &str) -> String {
    let text = resolve(snapshot, given).unwrap_err().to_string();
    assert!(text.contains("The snapshot's devices, in order:"), "{text}");
    assert!(text.contains(says), "want {says:?} in {text}");
    text
}

#[test]
fn the_devices_given_must_be_the_snapshots_in_kind_and_order() {
    let snapshot = [disk("/a.img", false), vsock(3)];
    let two = DeviceConfig {
        disks: vec![DiskConfig::new("/new.img")],
        vsock: Some(VsockConfig {
            cid: 3,
            uds: "/new.sock".into(),
        }),
        ..Default::default()
    };
    let config = resolve(&snapshot, &two).unwrap();
    assert_eq!(config.disks[0].path, PathBuf::from("/new.img"));

    let mut missing = two.clone();
    missing.vsock = None;
    let text = refused(
        &snapshot,
        &missing,
        "gives 1 virtio devices and the snapshot has 2: device 1, a virtio-vsock (--vsock cid=3,uds=/run/v.sock), is missing",
    );
    assert!(
        text.ends_with("--disk /a.img --vsock cid=3,uds=/run/v.sock"),
        "{text}"
    );

    let mut extra = two.clone();
    extra.rng = true;
    refused(
        &snapshot,
        &extra,
        "device 2, a virtio-rng (--rng), is not in the snapshot",
    );

    let mut other = two.clone();
    other.disks.clear();
    other.rng = true;
    refused(
        &snapshot,
        &other,
        "device 0 is a virtio-blk in the snapshot (--disk /a.img), and this restore gives a virtio-vsock there",
    );

    let mut cid = two;
    cid.vsock.as_mut().unwrap().cid = 4;
    refused(&snapshot, &cid, "context ID is 3 in the snapshot");
}

#[test]
fn what_the_guest_knows_of_a_device_is_carried_over() {
    let snapshot = [
        disk("/a.img", true),
        saved(DeviceState::Net {
            tap: "tap0".into(),
            mac: [2, 0, 0, 0, 0, 7],
        }),
    ];
    let mut given = DeviceConfig {
        root: Some(DiskConfig::new("/b.img")),
        nets: vec!["tap=tap9".parse().unwrap()],
        ..Default::default()
    };
    let config = resolve(&snapshot, &given).unwrap();
    assert!(config.root.as_ref().unwrap().read_only, "read-only stays");
    assert_eq!(config.nets[0].mac, Some([2, 0, 0, 0, 0, 7]));
    assert_eq!(config.nets[0].tap, "tap9");

    given.root.as_mut().unwrap().id = Some("data".into());
    assert!(
        resolve(&snapshot, &given).is_ok(),
        "the saved ID given again"
    );
    given.root.as_mut().unwrap().id = Some("other".into());
    refused(&snapshot, &given, "the disk's ID is 'data' in the snapshot");
    given.root.as_mut().unwrap().id = None;
    given.nets[0].mac = Some([2, 0, 0, 0, 0, 8]);
    refused(&snapshot, &given, "MAC address is 02:00:00:00:00:07");
}

#[test]
fn without_options_a_restore_takes_the_snapshots_own_devices_if_their_files_are_there() {
    let image = std::env::temp_dir().join(format!("kvmini-default-{}.img", std::process::id()));
    std::fs::write(&image, [0u8; 512]).unwrap();
    let snapshot = [
        disk(image.to_str().unwrap(), true),
        vsock(5),
        saved(DeviceState::Rng),
    ];
    let config = resolve(&snapshot, &DeviceConfig::default()).unwrap();
    assert_eq!(
        config.disks,
        vec![DiskConfig {
            path: image.clone(),
            read_only: true,
            id: None
        }]
    );
    assert_eq!(config.vsock.as_ref().unwrap().cid, 5);
    assert!(config.rng);
    assert_eq!(describe(&config, 1), "--vsock cid=5,uds=/run/v.sock");

    std::fs::remove_file(&image).unwrap();
    let gone = format!("disk {} is not there any more", image.display());
    refused(&snapshot, &DeviceConfig::default(), &gone);
}
