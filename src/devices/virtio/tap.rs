//! A TAP device: the host end of a virtual Ethernet link, read and written one frame at a
//! time through `/dev/net/tun`.
//!
//! The TAP is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a vnet header of 12 bytes
//! (`TUNSETVNETHDRSZ`): every frame read or written starts with a `struct
//! virtio_net_hdr_v1`, the header a virtio 1.x network device shares with its driver, so
//! frames pass between the guest and the TAP without rewriting. No offloads are switched on
//! (`TUNSETOFFLOAD` 0): the host hands over whole, checksummed frames and expects the same.
//!
//! A TAP that does not exist is created by `TUNSETIFF` when kvmini has `CAP_NET_ADMIN`; kvmini
//! then brings it up, and it disappears when kvmini exits (it is not made persistent).
//!
//! Source of truth: the kernel's `Documentation/networking/tuntap.rst` and
//! `drivers/net/tun.c` (`tun_set_iff`, which says which errors mean what).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::SetupError;

/// Bytes of `struct virtio_net_hdr_v1` (with `num_buffers`) before each frame.
pub const VNET_HDR_LEN: usize = 12;

/// The clone device every TUN/TAP is opened through.
const TUN_PATH: &str = "/dev/net/tun";

/// An open TAP device, non-blocking, attached to this process until it is dropped.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Opens (or, with `CAP_NET_ADMIN`, creates and brings up) the TAP device `name`.
    /// Failures are reported for `--net tap=NAME`, with what to do about them.
    pub fn open(name: &str) -> Result<Self, SetupError> {
        let fail = |reason: String| SetupError::new("--net", format!("tap={name}"), reason);
        let ifr_name = ifr_name(name).map_err(fail)?;
        let existed = interface_exists(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| fail(tun_open_error(&e)))?;
        let fd = OwnedFd::from(file);

        let mut ifr = ifreq(ifr_name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
            let e = io::Error::last_os_error();
            return Err(fail(attach_error(name, existed, &e)));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int, which `hdr_len` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            let e = io::Error::last_os_error();
            return Err(fail(format!("cannot set the vnet header size: {e}")));
        }
        // No checksum or segmentation offloads: the argument is the flags themselves.
        // SAFETY: TUNSETOFFLOAD takes its flags by value and touches no memory of ours.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, 0 as libc::c_ulong) } < 0 {
            let e = io::Error::last_os_error();
            return Err(fail(format!("cannot switch the TAP's offloads off: {e}")));
        }
        match bring_up(ifr_name) {
            Ok(()) => {}
            Err(e) if !existed => {
                return Err(fail(format!("created the TAP but cannot bring it up: {e}")))
            }
            Err(_) => eprintln!(
                "kvmini: TAP device {name} is down and kvmini may not bring it up: the guest's \
                 frames go nowhere until `ip link set {name} up`"
            ),
        }
        Ok(Tap {
            fd,
            name: name.to_string(),
        })
    }

    /// The TAP's name (empty for a stand-in).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A TAP stand-in over any non-blocking descriptor that keeps frame boundaries (a
    /// `SOCK_SEQPACKET` socket pair in the tests and the fuzz targets).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn from_fd(fd: OwnedFd) -> Self {
        Tap {
            fd,
            name: String::new(),
        }
    }

    /// Reads one frame (with its vnet header) into `buf`; returns its full length, which is
    /// more than `buf.len()` when the frame did not fit (the rest is lost).
    /// `ErrorKind::WouldBlock` means no frame is waiting.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame (with its vnet header).
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: the kernel reads at most `frame.len()` bytes from `frame`.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `name` as `ifr_name`, refusing what the kernel would refuse or read otherwise (a `%d`
/// template makes the kernel pick the name).
fn ifr_name(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ], String> {
    let bad = name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == b'%' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(
            "not a usable interface name: 1 to 15 bytes, without '/', ':', '%' or spaces".into(),
        );
    }
    let mut out = [0; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

fn ifreq(name: [libc::c_char; libc::IFNAMSIZ]) -> libc::ifreq {
    // SAFETY: `ifreq` is plain data (a name and a union of integers, addresses and a
    // pointer) for which all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = name;
    ifr
}

/// Whether a network interface called `name` exists in kvmini's network namespace.
fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Sets `IFF_UP` on the interface, if it is not up already.
fn bring_up(name: [libc::c_char; libc::IFNAMSIZ]) -> io::Result<()> {
    // SAFETY: a plain socket call; the descriptor is owned at once.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sock` is a new descriptor no one else owns.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS reads and writes one `struct ifreq`, which `ifr` is.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as i16 != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as i16;
    // SAFETY: SIOCSIFFLAGS reads one `struct ifreq`, which `ifr` is.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Why `/dev/net/tun` would not open, and what to do.
fn tun_open_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => format!(
            "cannot open {TUN_PATH} ({e}): this host has no TUN/TAP support; load it with \
             `modprobe tun`"
        ),
        Some(libc::EACCES | libc::EPERM) => format!(
            "cannot open {TUN_PATH} ({e}): let this user read and write it (it is usually \
             mode 0666), or run kvmini as root"
        ),
        _ => format!("cannot open {TUN_PATH}: {e}"),
    }
}

/// What a failed `TUNSETIFF` means (see `tun_set_iff` in `drivers/net/tun.c`).
fn attach_error(name: &str, existed: bool, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) if !existed => format!(
            "there is no TAP device called {name}, and kvmini may not create one (that needs \
             CAP_NET_ADMIN): create it first, as root, with `ip tuntap add {name} mode tap user \
             $USER` and `ip link set {name} up`, or run kvmini with CAP_NET_ADMIN"
        ),
        Some(libc::EPERM) => format!(
            "the TAP device {name} belongs to another user or group: recreate it with `ip \
             tuntap add {name} mode tap user $USER`, or run kvmini with CAP_NET_ADMIN"
        ),
        Some(libc::EBUSY) => format!(
            "the TAP device {name} is in use by another program (another VM?): give each VM \
             a TAP of its own"
        ),
        Some(libc::EINVAL) if existed => {
            let what = match tun_flags(name) {
                Some(flags) if flags & libc::IFF_TUN as u32 != 0 => "a TUN device (IP packets)",
                Some(flags) if flags & libc::IFF_MULTI_QUEUE as u32 != 0 => {
                    "a multi-queue TAP device (kvmini uses one queue)"
                }
                Some(_) => "a TUN/TAP device kvmini cannot attach to",
                None => "not a TUN/TAP device",
            };
            format!(
                "the network interface {name} is {what}, and kvmini needs a single-queue TAP \
                 device: name a TAP device made with `ip tuntap add NAME mode tap`, or a name \
                 no interface has yet"
            )
        }
        _ => format!("cannot attach to the TAP device {name}: {e}"),
    }
}

/// The `IFF_*` flags a TUN/TAP device was made with, from sysfs.
fn tun_flags(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The interface name in `ifr` (for messages in tests).
#[cfg(test)]
fn name_of(ifr: &libc::ifreq) -> String {
    // SAFETY: `ifr_name` is NUL-padded: `ifr_name()` leaves at least one NUL at the end.
    unsafe { std::ffi::CStr::from_ptr(ifr.ifr_name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_would_refuse_or_rename_are_refused() {
        for bad in [
            "",
            "a/b",
            "tap%d",
            "a b",
            "a:b",
            ".",
            "..",
            "0123456789abcdef",
        ] {
            assert!(ifr_name(bad).is_err(), "{bad:?}");
        }
        let ifr = ifreq(ifr_name("tap0").unwrap());
        assert_eq!(name_of(&ifr), "tap0");
        assert_eq!(
            name_of(&ifreq(ifr_name("0123456789abcde").unwrap())).len(),
            15
        );
    }

    #[test]
    fn an_interface_that_is_not_a_tap_is_refused_with_the_reason() {
        if !std::path::Path::new(TUN_PATH).exists() {
            eprintln!("skipping: no {TUN_PATH} on this host");
            return;
        }
        // The loopback interface exists everywhere; the kernel refuses it before it looks at
        // capabilities.
        let e = Tap::open("lo").unwrap_err().to_string();
        assert!(e.starts_with("--net tap=lo: "), "{e}");
        assert!(
            e.contains("not a TUN/TAP device") || e.contains("cannot open /dev/net/tun"),
            "{e}"
        );
    }
}
