//! The virtio devices a VM gets, as the user names them (`--disk PATH,ro`,
//! `--net tap=NAME`, `--vsock cid=N,uds=PATH`, `--rng`), parsed and checked before the host
//! is touched. Opening the files and devices they name happens when the VM is built.

use std::path::PathBuf;
use std::str::FromStr;

use super::Error;

/// A disk image for a virtio block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image (a file or a host block device).
    pub path: PathBuf,
    /// The guest may only read it.
    pub read_only: bool,
    /// What `GET_ID` answers (20 bytes at most); the file name when `None`.
    pub id: Option<String>,
}

impl DiskConfig {
    /// A read-write disk on `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DiskConfig {
            path: path.into(),
            read_only: false,
            id: None,
        }
    }
}

/// `PATH[,ro][,id=ID]`.
impl FromStr for DiskConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::DeviceOption {
            option: "--disk",
            value: s.to_string(),
            why: why.to_string(),
        };
        let mut parts = s.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or(bad("no path"))?;
        let mut disk = DiskConfig::new(path);
        for part in parts {
            match part.split_once('=') {
                None if part == "ro" => disk.read_only = true,
                None if part == "rw" => disk.read_only = false,
                Some(("id", id)) if id.len() <= 20 && !id.is_empty() => {
                    disk.id = Some(id.to_string())
                }
                Some(("id", _)) => return Err(bad("an id has 1 to 20 bytes")),
                _ => return Err(bad(&format!("unknown setting '{part}'; known: ro, id=ID"))),
            }
        }
        Ok(disk)
    }
}

/// A virtio network device on a TAP device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP device's name; kvmini creates it when it does not exist and it may.
    pub tap: String,
    /// The guest's MAC address; one derived from the TAP's name when `None`.
    pub mac: Option<[u8; 6]>,
}

/// `tap=NAME[,mac=MAC]`.
impl FromStr for NetConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::DeviceOption {
            option: "--net",
            value: s.to_string(),
            why: why.to_string(),
        };
        let (mut tap, mut mac) = (None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                // IFNAMSIZ is 16 with the NUL.
                Some(("tap", name)) if !name.is_empty() && name.len() < 16 => {
                    tap = Some(name.to_string())
                }
                Some(("tap", _)) => return Err(bad("a TAP name has 1 to 15 bytes")),
                Some(("mac", m)) => {
                    mac =
                        Some(parse_mac(m).ok_or(bad("a MAC is six hex bytes, 02:00:00:00:00:01"))?)
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown setting '{part}'; known: tap=NAME, mac=MAC"
                    )))
                }
            }
        }
        let tap = tap.ok_or(bad("tap=NAME is required"))?;
        Ok(NetConfig { tap, mac })
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A virtio vsock device with Firecracker's Unix-socket convention on the host side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID (3 and up: 0-2 are the hypervisor, local and host).
    pub cid: u32,
    /// The Unix socket host programs connect to (`CONNECT <port>\n`); a guest's connection
    /// to the host's port P goes to `<uds>_P`.
    pub uds: PathBuf,
}

/// The lowest context ID a guest may have.
pub const MIN_GUEST_CID: u32 = 3;

/// `cid=N,uds=PATH`.
impl FromStr for VsockConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::DeviceOption {
            option: "--vsock",
            value: s.to_string(),
            why: why.to_string(),
        };
        let (mut cid, mut uds) = (None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("cid", n)) => {
                    let n = super::parse_u64(n).map_err(|_| bad("cid is a number"))?;
                    match u32::try_from(n) {
                        Ok(n) if (MIN_GUEST_CID..u32::MAX).contains(&n) => cid = Some(n),
                        _ => return Err(bad(
                            "a guest's cid is 3 or more (0-2 are reserved) and below 4294967295",
                        )),
                    }
                }
                Some(("uds", p)) if !p.is_empty() => uds = Some(PathBuf::from(p)),
                _ => {
                    return Err(bad(&format!(
                        "unknown setting '{part}'; known: cid=N, uds=PATH"
                    )))
                }
            }
        }
        Ok(VsockConfig {
            cid: cid.ok_or(bad("cid=N is required"))?,
            uds: uds.ok_or(bad("uds=PATH is required"))?,
        })
    }
}

/// The virtio devices of a VM (Linux guests only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The root disk: the first block device (`/dev/vda`), named as `root=` on the kernel
    /// command line.
    pub root: Option<DiskConfig>,
    /// Further disks, in order (`/dev/vdb`, ... after a root disk).
    pub disks: Vec<DiskConfig>,
    /// Network devices.
    pub nets: Vec<NetConfig>,
    /// The vsock device.
    pub vsock: Option<VsockConfig>,
    /// An entropy device.
    pub rng: bool,
}

impl DeviceConfig {
    /// Whether the VM has any virtio device.
    pub fn any(&self) -> bool {
        self.root.is_some()
            || !self.disks.is_empty()
            || !self.nets.is_empty()
            || self.vsock.is_some()
            || self.rng
    }

    /// The option that asks for the first device, for messages.
    pub fn first_option(&self) -> Option<&'static str> {
        [
            ("--root", self.root.is_some()),
            ("--disk", !self.disks.is_empty()),
            ("--net", !self.nets.is_empty()),
            ("--vsock", self.vsock.is_some()),
            ("--rng", self.rng),
        ]
        .into_iter()
        .find_map(|(o, set)| set.then_some(o))
    }

    /// Every disk, the root first.
    pub fn all_disks(&self) -> impl Iterator<Item = &DiskConfig> {
        self.root.iter().chain(&self.disks)
    }

    /// How many devices there are.
    pub fn count(&self) -> usize {
        self.all_disks().count()
            + self.nets.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.rng)
    }

    /// Checks what can be checked without opening anything: the same image twice, the same
    /// TAP twice, the vsock socket path.
    pub fn validate(&self) -> Result<(), Error> {
        let disks: Vec<_> = self.all_disks().collect();
        for (i, d) in disks.iter().enumerate() {
            let writable = |o: &&&DiskConfig| !(o.read_only && d.read_only);
            if disks[..i].iter().filter(writable).any(|o| o.path == d.path) {
                return Err(Error::DeviceOption {
                    option: "--disk",
                    value: d.path.display().to_string(),
                    why: "the same image is given twice, and not read-only (ro) both times".into(),
                });
            }
        }
        for (i, n) in self.nets.iter().enumerate() {
            if self.nets[..i].iter().any(|o| o.tap == n.tap) {
                return Err(Error::DeviceOption {
                    option: "--net",
                    value: n.tap.clone(),
                    why: "the same TAP device is given twice".into(),
                });
            }
        }
        if let Some(v) = &self.vsock {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(meta) = std::fs::symlink_metadata(&v.uds) {
                if !meta.file_type().is_socket() {
                    return Err(Error::DeviceOption {
                        option: "--vsock",
                        value: v.uds.display().to_string(),
                        why: "the path exists and is not a Unix socket".into(),
                    });
                }
            }
        }
        if self.count() > crate::arch::x86_64::layout::VIRTIO_MMIO_MAX_DEVICES {
            return Err(Error::TooManyDevices(self.count()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_parse_with_their_settings() {
        let d: DiskConfig = "img.raw,ro,id=data".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("img.raw"));
        assert!(d.read_only);
        assert_eq!(d.id.as_deref(), Some("data"));
        assert!(!"a.img".parse::<DiskConfig>().unwrap().read_only);
        for bad in [
            "",
            ",ro",
            "a.img,rx",
            "a.img,id=",
            "a.img,id=123456789012345678901",
        ] {
            assert!(bad.parse::<DiskConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nets_need_a_tap_and_take_a_mac() {
        let n: NetConfig = "tap=tap0,mac=02:00:00:00:00:0a".parse().unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 10]));
        for bad in [
            "",
            "mac=02:00:00:00:00:01",
            "tap=",
            "tap=0123456789abcdef",
            "tap=t,mac=1:2:3:4:5:6",
            "tap=t,mac=02:00:00:00:00",
            "tap=t,x=1",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn vsock_cids_below_3_are_refused() {
        let v: VsockConfig = "cid=3,uds=/tmp/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.uds), (3, PathBuf::from("/tmp/v.sock")));
        for bad in [
            "cid=2,uds=/tmp/v",
            "cid=0,uds=/tmp/v",
            "cid=4294967295,uds=/tmp/v",
            "uds=/tmp/v",
            "cid=3",
            "cid=x,uds=/tmp/v",
        ] {
            let e = bad.parse::<VsockConfig>().unwrap_err();
            assert!(e.to_string().starts_with("--vsock"), "{e}");
        }
    }

    #[test]
    fn the_same_image_twice_and_a_path_that_is_no_socket_are_refused() {
        let mut devices = DeviceConfig {
            root: Some(DiskConfig::new("/tmp/a.img")),
            disks: vec![DiskConfig::new("/tmp/a.img")],
            ..Default::default()
        };
        assert!(devices
            .validate()
            .unwrap_err()
            .to_string()
            .contains("twice"));
        devices.disks.clear();
        devices.vsock = Some(VsockConfig {
            cid: 3,
            uds: std::env::temp_dir(),
        });
        assert!(devices
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not a Unix socket"));
    }
}
