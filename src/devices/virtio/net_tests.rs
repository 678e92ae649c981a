use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::state::DeviceState;
use crate::devices::virtio::test_util::{desc, Harness, BUFFERS, MEM_SIZE, NEXT, WRITE};
use crate::devices::virtio::INT_VRING;

const HEADER: u64 = BUFFERS;
const FRAME: u64 = BUFFERS + 0x1000;
const RX_BUF: u64 = BUFFERS + 0x10_0000;
/// A local experimental EtherType (IEEE 802), which no host stack answers or sends.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// An Ethernet frame to the broadcast address with `payload`, padded to the 60-byte
/// minimum.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// A frame as the TAP gives and takes it: a zero vnet header first.
fn with_header(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0; VNET_HDR_LEN];
    v.extend_from_slice(frame);
    v
}

/// A device on one end of a `SOCK_SEQPACKET` socket pair, which keeps frame boundaries as a
/// TAP does; the other end plays the host.
fn device() -> (Net, OwnedFd) {
    let mut fds = [0; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0);
    // SAFETY: both descriptors are new and owned here alone.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let net = Net::new(Tap::from_fd(ours), [2, 0, 0, 0, 0, 1]);
    (net, theirs)
}

fn send(fd: &OwnedFd, bytes: &[u8]) {
    // SAFETY: the kernel reads `bytes.len()` bytes from `bytes`.
    let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(n, bytes.len() as isize);
}

/// The next frame the device sent, if any.
fn recv(fd: RawFd) -> Option<Vec<u8>> {
    let mut buf = vec![0; MAX_FRAME + 1];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// Two queues, ready: receive (0) and transmit (1).
fn harness() -> Harness {
    Harness::new(2)
}

/// Puts `bytes` as a transmit chain of a header descriptor and a frame descriptor.
fn add_tx(h: &Harness, bytes: &[u8], at: u16) {
    let (hdr, rest) = bytes.split_at(VNET_HDR_LEN);
    h.mem.write_slice(hdr, GuestAddress(HEADER)).unwrap();
    h.mem.write_slice(rest, GuestAddress(FRAME)).unwrap();
    h.add(
        TX,
        &[
            desc(HEADER, VNET_HDR_LEN as u32, NEXT, at + 1),
            desc(FRAME, rest.len() as u32, 0, 0),
        ],
        at,
    );
}

/// Offers a receive chain of one writable buffer of `len` bytes at `addr`.
fn add_rx(h: &Harness, addr: u64, len: u32, at: u16) {
    h.add(RX, &[desc(addr, len, WRITE, 0)], at);
}

fn read_guest(h: &Harness, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    h.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

#[test]
fn offers_a_mac_and_two_queues_and_derives_a_stable_unicast_mac() {
    let (net, _peer) = device();
    assert_eq!(net.device_type(), 1);
    assert_eq!(net.queue_max_sizes(), &[256, 256]);
    assert_eq!(net.features(), 1 << VIRTIO_NET_F_MAC);
    // The bus zeroes what a device reads into; beyond the MAC the device writes nothing.
    let mut config = [0; 8];
    net.read_config(0, &mut config);
    assert_eq!(config, [2, 0, 0, 0, 0, 1, 0, 0]);
    let mut tail = [0; 2];
    net.read_config(4, &mut tail);
    assert_eq!(tail, [0, 1]);

    let mac = mac_for("tap0");
    assert_eq!(mac, mac_for("tap0"), "the same name gives the same MAC");
    assert_ne!(mac, mac_for("tap1"));
    assert_eq!(mac[0], 0x02, "locally administered and unicast");
}

#[test]
fn a_multicast_mac_is_refused() {
    let config = NetConfig {
        tap: "kvmini-x".into(),
        mac: Some([0x01, 0, 0x5e, 0, 0, 1]),
    };
    let e = Net::open(&config).unwrap_err().to_string();
    assert!(
        e.starts_with("--net tap=kvmini-x: ") && e.contains("unicast"),
        "{e}"
    );
}

#[test]
fn a_transmitted_frame_reaches_the_tap_with_a_zero_header() {
    let (mut net, peer) = device();
    let mut h = harness();
    let mut bytes = with_header(&frame(b"hello from the guest"));
    // Offload bits the driver may not set are not passed on.
    bytes[0] = 1;
    add_tx(&h, &bytes, 0);
    net.process_queue(TX, &mut h.ctx()).unwrap();
    bytes[0] = 0;
    assert_eq!(recv(peer.as_raw_fd()).as_deref(), Some(&bytes[..]));
    assert_eq!(h.used(TX), (1, vec![(0, 0)]));
    assert_eq!(h.interrupt.status(), INT_VRING);
    assert_eq!(net.counters().tx_frames, 1);
}

#[test]
fn malformed_transmit_chains_are_dropped_and_returned() {
    let (mut net, peer) = device();
    let mut h = harness();
    let outside = MEM_SIZE as u64 + 0x1000;
    // Shorter than a header.
    h.add(TX, &[desc(HEADER, 8, 0, 0)], 0);
    // A writable buffer in a frame to send.
    h.add(
        TX,
        &[desc(HEADER, 12, NEXT, 2), desc(FRAME, 60, WRITE, 0)],
        1,
    );
    // Outside guest memory.
    h.add(TX, &[desc(HEADER, 12, NEXT, 4), desc(outside, 60, 0, 0)], 3);
    // Larger than any frame: two buffers of 40,000 bytes.
    h.add(
        TX,
        &[desc(HEADER, 40_000, NEXT, 6), desc(FRAME, 40_000, 0, 0)],
        5,
    );
    // A length that runs far past the end of memory.
    h.add(TX, &[desc(HEADER, u32::MAX, 0, 0)], 7);
    net.process_queue(TX, &mut h.ctx()).unwrap();
    let (idx, used) = h.used(TX);
    assert_eq!(idx, 5, "every chain goes back to the driver");
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert_eq!(recv(peer.as_raw_fd()), None, "nothing reached the TAP");
    assert_eq!(net.counters().tx_dropped, 5);

    // A chain that loops back on itself ends at the queue size (virtio-queue's limit):
    // what it holds is bounded and goes out as one frame of garbage, as from a guest that
    // sends garbage.
    h.add(TX, &[desc(HEADER, 12, NEXT, 8)], 8);
    net.process_queue(TX, &mut h.ctx()).unwrap();
    assert_eq!(h.used(TX).0, 6);
    assert!(recv(peer.as_raw_fd()).is_some_and(|f| f.len() <= 16 * 12));

    // The device goes on.
    let bytes = with_header(&frame(b"after"));
    add_tx(&h, &bytes, 9);
    net.process_queue(TX, &mut h.ctx()).unwrap();
    assert_eq!(recv(peer.as_raw_fd()).as_deref(), Some(&bytes[..]));
}

#[test]
fn a_received_frame_fills_a_buffer_with_one_num_buffers() {
    let (mut net, peer) = device();
    let mut h = harness();
    net.activate(&mut h.ctx()).unwrap();
    add_rx(&h, RX_BUF, 1526, 0);
    let bytes = with_header(&frame(b"hello from the host"));
    send(&peer, &bytes);
    net.process_event(TAP_SOURCE, EventSet::IN, &mut h.ctx())
        .unwrap();
    let (idx, used) = h.used(RX);
    assert_eq!((idx, used[0]), (1, (0, bytes.len() as u32)));
    let got = read_guest(&h, RX_BUF, bytes.len());
    assert_eq!(&got[..10], &[0; 10]);
    assert_eq!(&got[10..12], &[1, 0], "num_buffers");
    assert_eq!(&got[12..], &bytes[12..]);
    assert_eq!(h.interrupt.status(), INT_VRING);
    assert_eq!(net.counters().rx_frames, 1);
}

#[test]
fn without_buffers_frames_wait_in_the_tap_until_the_driver_adds_some() {
    let (mut net, peer) = device();
    let mut h = harness();
    net.activate(&mut h.ctx()).unwrap();
    let (first, second) = (with_header(&frame(b"one")), with_header(&frame(b"two")));
    send(&peer, &first);
    send(&peer, &second);
    // Readiness with no buffer: nothing is read, nothing used, and the call returns.
    net.process_event(TAP_SOURCE, EventSet::IN, &mut h.ctx())
        .unwrap();
    assert_eq!(h.used(RX).0, 0);
    assert_eq!(net.counters().rx_frames + net.counters().rx_dropped, 0);
    // The driver asks to be told... and is, once it adds a buffer: one frame per buffer.
    add_rx(&h, RX_BUF, 1526, 0);
    net.process_queue(RX, &mut h.ctx()).unwrap();
    assert_eq!(h.used(RX), (1, vec![(0, first.len() as u32)]));
    assert_eq!(&read_guest(&h, RX_BUF + 14 + 12, 3), b"one");
    add_rx(&h, RX_BUF + 0x1000, 1526, 1);
    net.process_queue(RX, &mut h.ctx()).unwrap();
    assert_eq!(h.used(RX).0, 2);
    assert_eq!(&read_guest(&h, RX_BUF + 0x1000 + 14 + 12, 3), b"two");
    // The TAP is empty now: a buffer waits for the next frame.
    add_rx(&h, RX_BUF + 0x2000, 1526, 2);
    net.process_queue(RX, &mut h.ctx()).unwrap();
    assert_eq!(h.used(RX).0, 2);
    let third = with_header(&frame(b"three"));
    send(&peer, &third);
    net.process_event(TAP_SOURCE, EventSet::IN, &mut h.ctx())
        .unwrap();
    assert_eq!(h.used(RX), (3, vec![(0, 72), (1, 72), (2, 72)]));
    assert_eq!(&read_guest(&h, RX_BUF + 0x2000 + 14 + 12, 5), b"three");
}

#[test]
fn a_frame_larger_than_the_buffer_is_dropped_and_the_next_one_fits() {
    let (mut net, peer) = device();
    let mut h = harness();
    net.activate(&mut h.ctx()).unwrap();
    add_rx(&h, RX_BUF, 100, 0);
    send(&peer, &with_header(&[0xee; 1514]));
    let small = with_header(&frame(b"small"));
    send(&peer, &small);
    net.process_event(TAP_SOURCE, EventSet::IN, &mut h.ctx())
        .unwrap();
    assert_eq!(h.used(RX), (1, vec![(0, small.len() as u32)]));
    assert_eq!(&read_guest(&h, RX_BUF + 26, 5), b"small");
    assert_eq!(net.counters().rx_dropped, 1);
}

#[test]
fn hostile_receive_chains_go_back_empty_and_lose_no_frame() {
    let (mut net, peer) = device();
    let mut h = harness();
    net.activate(&mut h.ctx()).unwrap();
    let outside = MEM_SIZE as u64 + 0x1000;
    // A buffer the device may only read.
    h.add(RX, &[desc(RX_BUF, 1526, 0, 0)], 0);
    // Outside guest memory.
    add_rx(&h, outside, 1526, 1);
    // Too small for the header.
    add_rx(&h, RX_BUF, 4, 2);
    // Straddling the end of memory.
    add_rx(&h, MEM_SIZE as u64 - 8, 1526, 3);
    // A good one.
    add_rx(&h, RX_BUF, 1526, 4);
    let bytes = with_header(&frame(b"survivor"));
    send(&peer, &bytes);
    net.process_event(TAP_SOURCE, EventSet::IN, &mut h.ctx())
        .unwrap();
    let (idx, used) = h.used(RX);
    assert_eq!(idx, 5);
    assert_eq!(&used[..4], &[(0, 0), (1, 0), (2, 0), (3, 0)]);
    assert_eq!(used[4], (4, bytes.len() as u32));
    assert_eq!(&read_guest(&h, RX_BUF + 26, 8), b"survivor");
    assert_eq!(net.counters().rx_bad_chains, 4);
}

#[test]
fn a_reset_stops_receiving_and_activation_works_again_even_without_one() {
    let (mut net, peer) = device();
    let mut h = harness();
    net.activate(&mut h.ctx()).unwrap();
    // A device that faulted is activated again without a reset: the TAP is registered
    // once more, not refused as already there.
    net.activate(&mut h.ctx()).unwrap();
    net.reset(&h.events);
    send(&peer, &with_header(&frame(b"late")));
    add_rx(&h, RX_BUF, 1526, 0);
    // After a reset the device reads nothing until it is activated again.
    net.process_queue(RX, &mut h.ctx()).unwrap();
    assert_eq!(h.used(RX).0, 0);
    net.activate(&mut h.ctx()).unwrap();
    net.process_queue(RX, &mut h.ctx()).unwrap();
    assert_eq!(h.used(RX).0, 1);
}

#[test]
fn a_queue_that_is_not_ready_is_left_alone() {
    let (mut net, peer) = device();
    let mut h = harness();
    h.queues[RX].set_ready(false);
    net.activate(&mut h.ctx()).unwrap();
    send(&peer, &with_header(&frame(b"x")));
    net.process_event(TAP_SOURCE, EventSet::IN, &mut h.ctx())
        .unwrap();
    assert_eq!(net.counters(), NetCounters::default());
}

/// Runs `f` on a thread of its own in a new network namespace, where TAPs made do not touch
/// the host's; `None` when this process may not make one (not root).
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipping TAP test: cannot make a network namespace ({}): needs root \
                 (CAP_SYS_ADMIN and CAP_NET_ADMIN)",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(f())
    })
    .join()
    .unwrap()
}

/// A raw packet socket on interface `name`: it sees what the host receives on it and sends
/// frames out through it.
fn packet_socket(name: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: a plain socket call; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor no one else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: `sockaddr_ll` is plain data; zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    // SAFETY: `cname` is a NUL-terminated string.
    addr.sll_ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
    assert!(addr.sll_ifindex > 0);
    // SAFETY: `addr` is a valid `sockaddr_ll` of the length given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    fd
}

/// Waits up to two seconds for `fd` to be readable.
fn wait_readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 2000) == 1 }
}

#[test]
fn frames_pass_both_ways_through_a_real_tap() {
    let result = in_new_netns(|| {
        let config = NetConfig {
            tap: "kvmini-t0".into(),
            mac: None,
        };
        // Not there yet: kvmini makes it, and brings it up.
        let mut net = Net::open(&config).unwrap();
        let up = interface_is_up("kvmini-t0");
        let sock = packet_socket("kvmini-t0");
        let mut h = harness();
        net.activate(&mut h.ctx()).unwrap();

        // Guest to host.
        let sent = frame(b"kvmini tx");
        add_tx(&h, &with_header(&sent), 0);
        net.process_queue(TX, &mut h.ctx()).unwrap();
        assert_eq!(net.counters().tx_frames, 1, "{:?}", net.counters());
        let mut seen = false;
        while !seen && wait_readable(sock.as_raw_fd()) {
            seen = recv(sock.as_raw_fd()).is_some_and(|f| f == sent);
        }
        assert!(seen, "the frame never showed up on the host's side");

        // Host to guest: the host's own packets (IPv6 neighbour discovery) may come first.
        let back = frame(b"kvmini rx");
        send(&sock, &back);
        let mut got = None;
        for at in 0..8u16 {
            if !wait_readable(net.tap.as_raw_fd()) {
                break;
            }
            let addr = RX_BUF + u64::from(at) * 0x1000;
            add_rx(&h, addr, 1526, at);
            net.process_event(TAP_SOURCE, EventSet::IN, &mut h.ctx())
                .unwrap();
            let (_, used) = h.used(RX);
            let Some(&(_, len)) = used.last() else {
                continue;
            };
            let f = read_guest(&h, addr, len as usize);
            if f[VNET_HDR_LEN..] == back[..] {
                got = Some(f);
                break;
            }
        }
        let got = got.expect("the host's frame never reached the guest");
        assert_eq!(&got[10..12], &[1, 0]);
        up
    });
    if let Some(up) = result {
        assert!(up, "kvmini brought the TAP up");
    }
}

/// Whether interface `name` is up (`IFF_UP`), in this thread's network namespace (sysfs
/// shows the namespace it was mounted in).
fn interface_is_up(name: &str) -> bool {
    // SAFETY: a plain socket call; the descriptor is owned at once.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(sock >= 0);
    // SAFETY: a new descriptor no one else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: `ifreq` is plain data; zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (o, b) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads and writes one `struct ifreq`.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    assert_eq!(r, 0);
    // SAFETY: SIOCGIFFLAGS filled in the flags.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    flags & libc::IFF_UP as i16 != 0
}

/// Drops CAP_NET_ADMIN from the calling thread's effective capabilities.
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills two `Data` for version 3; pid 0 is this thread.
    let r = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    assert_eq!(r, 0);
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above; capset changes only this thread.
    let r = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    assert_eq!(r, 0);
}

#[test]
fn a_missing_tap_kvmini_may_not_create_is_refused_with_what_to_do() {
    let result = in_new_netns(|| {
        drop_net_admin();
        Tap::open("kvmini-t1").map(|_| ()).unwrap_err().to_string()
    });
    if let Some(e) = result {
        assert!(e.starts_with("--net tap=kvmini-t1: "), "{e}");
        assert!(
            e.contains("ip tuntap add kvmini-t1 mode tap") && e.contains("CAP_NET_ADMIN"),
            "{e}"
        );
    }
}

#[test]
fn a_restored_device_keeps_the_mac_on_its_new_tap_and_takes_the_frames_waiting_there() {
    let (old, _) = device();
    let saved = old.save();
    assert_eq!(
        saved,
        DeviceState::Net {
            tap: String::new(),
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
    let (mut net, peer) = device();
    net.config = mac_for("another-tap");
    net.restore(&saved).unwrap();
    let mut mac = [0; 6];
    net.read_config(0, &mut mac);
    assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
    let mut h = harness();
    add_rx(&h, RX_BUF, 1526, 0);
    send(&peer, &with_header(&frame(b"waiting in the new TAP")));
    net.resume(&mut h.ctx()).unwrap();
    net.process_queue(RX, &mut h.ctx()).unwrap();
    assert_eq!(h.used(RX).0, 1);
    assert!(net.restore(&DeviceState::Rng).is_err());
}
