//! The virtio fuzz target: a device behind its MMIO transport, driven by register
//! accesses, guest memory contents and the host side of its backend.

use crate::config::{DiskConfig, VsockConfig};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::tap::Tap;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{io_thread, EventRegistry, Interrupt, VirtioDevice};
use crate::devices::{lock, BusDevice};
use crate::memory::{self};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{Epoll, EpollEvent};

use super::{memfd, Input};

/// Guest memory of the virtio target.
const VIRTIO_MEM: u64 = 2 << 20;
/// The register window's registers and configuration space.
const VIRTIO_WINDOW: u16 = 0x1ff;

/// Where queue `q`'s rings are (descriptor table, available ring), and its size, as the
/// target's driver set them up.
#[derive(Clone, Copy)]
struct Rings {
    desc: u64,
    avail: u64,
    size: u16,
}

/// What the host side of a device holds during one input.
#[derive(Default)]
struct HostSide {
    /// The other end of the network device's "TAP".
    net_peer: Option<OwnedFd>,
    /// The vsock device's socket directory, the listener for the guest's connections to
    /// host port 1234, and the streams of host programs.
    vsock: Option<(PathBuf, UnixListener)>,
    streams: Vec<UnixStream>,
    /// The block device's image.
    image: Option<File>,
}

impl Drop for HostSide {
    fn drop(&mut self) {
        if let Some((dir, _)) = &self.vsock {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn vsock_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "kvmini-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn make_device(
    kind: u8,
    flags: u8,
    input: &mut Input<'_>,
    host: &mut HostSide,
) -> Box<dyn VirtioDevice> {
    match kind {
        1 => {
            let (file, path) = memfd(&[]);
            file.set_len(u64::from(input.u8()) * 4096)
                .expect("size a memfd");
            let disk = DiskConfig {
                path,
                read_only: flags & 4 != 0,
                id: (flags & 8 != 0).then(|| "fuzz-disk".into()),
            };
            let block = Block::open(&disk).expect("open a memfd as a disk");
            host.image = Some(file);
            Box::new(block)
        }
        2 => {
            let mut fds = [0; 2];
            let kind = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            // SAFETY: `fds` has room for the two descriptors.
            let r = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) };
            assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
            // SAFETY: both descriptors are new and owned here alone.
            let (ours, theirs) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            host.net_peer = Some(theirs);
            Box::new(Net::new(Tap::from_fd(ours), [2, 0, 0, 0, 0, 1]))
        }
        3 => {
            let dir = vsock_dir();
            std::fs::create_dir_all(&dir).expect("a socket directory");
            let uds = dir.join("v.sock");
            let listener = UnixListener::bind(dir.join("v.sock_1234")).expect("bind");
            listener.set_nonblocking(true).expect("non-blocking");
            host.vsock = Some((dir, listener));
            let config = VsockConfig { cid: 3, uds };
            Box::new(Vsock::open(&config).expect("listen"))
        }
        _ => Box::new(Rng),
    }
}

/// The virtio-mmio transport with one device behind it (entropy, a block device on an image
/// in memory, a network device on a socket pair, or vsock on Unix sockets), driven by
/// register accesses, guest memory contents and descriptor chains from the input, with the
/// I/O thread's dispatch run in line.
///
/// Input: byte 0: bits 0-1: the device (rng, block, net, vsock); 2: a read-only disk; 3: a
/// disk ID; 4: the driver acks EVENT_IDX. For a disk, its size in pages. Then operations, a
/// byte each (low 3 bits), with their arguments:
///
/// - 0: register write: u16 (bits 0-8 offset, 12-13 width 4, 1, 2, 8), u64 value;
/// - 1: register read: u16 as for a write;
/// - 2: guest memory write: u32 address, u8 length, the bytes;
/// - 3: queue set-up as a driver does it: u8 queue, u16 size, u16 x3 ring addresses / 16;
/// - 4: `DRIVER_OK`;
/// - 5: a chain: u8 queue, u8 descriptor count - 1 (up to 4), then per descriptor u32
///   address, u16 length, u8 flags; made available and notified;
/// - 6: the I/O thread's turn: every ready event dispatched;
/// - 7: the host side: net: a frame (u16 length, bytes) from the TAP, or the frames to it
///   read; vsock: a host program connects and writes (u8 length, bytes), or reads.
pub fn virtio(data: &[u8]) {
    virtio_run(data);
}

/// [`virtio`]; returns the chains the device answered.
pub(super) fn virtio_run(data: &[u8]) -> u64 {
    let mut input = Input(data);
    let flags = input.u8();
    let mut host = HostSide::default();
    let device = make_device(flags & 3, flags, &mut input, &mut host);
    let queues = device.queue_max_sizes().len();
    let features = device.features();
    let mem = memory::create(VIRTIO_MEM).expect("map guest memory");
    let epoll = Arc::new(Epoll::new().expect("epoll"));
    let transport = MmioTransport::new(
        device,
        mem.clone(),
        Interrupt::new(None),
        EventRegistry::new(epoll.clone(), 0),
    )
    .expect("eventfd");
    let devices = [Arc::new(Mutex::new(transport))];
    io_thread::watch_queues(&epoll, &devices).expect("epoll_ctl");
    let write_reg = |offset: u64, bytes: &[u8]| {
        lock(&devices[0]).write(offset, bytes);
    };
    let write32 = |offset: u32, value: u32| write_reg(u64::from(offset), &value.to_le_bytes());
    let mut rings: Vec<Option<Rings>> = vec![None; queues];
    let mut avail_idx = vec![0u16; queues];

    while !input.is_empty() {
        match input.u8() & 7 {
            0 => {
                let at = input.u16();
                let value = input.u64().to_le_bytes();
                let width = [4, 1, 2, 8][usize::from(at >> 12) & 3];
                write_reg(u64::from(at & VIRTIO_WINDOW), &value[..width]);
            }
            1 => {
                let at = input.u16();
                let mut bytes = vec![0u8; [4, 1, 2, 8][usize::from(at >> 12) & 3]];
                lock(&devices[0]).read(u64::from(at & VIRTIO_WINDOW), &mut bytes);
            }
            2 => {
                let addr = u64::from(input.u32()) % VIRTIO_MEM;
                let len = usize::from(input.u8());
                let _ = mem.write_slice(input.take(len), GuestAddress(addr));
            }
            3 => {
                let (q, r) = set_up_queue(&mut input, &write32, queues, features, flags);
                rings[q] = Some(r);
                avail_idx[q] = 0;
            }
            4 => write32(
                virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS,
                1 | 2 | 8 | 4,
            ),
            5 => {
                let q = add_chain(&mut input, &mem, &rings, &mut avail_idx);
                write32(
                    virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY,
                    q as u32,
                );
            }
            6 => {
                let mut events = [EpollEvent::default(); 16];
                // Bounded: a device that keeps itself ready must not spin the target.
                for _ in 0..4 {
                    let n = epoll.wait(0, &mut events).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    for e in &events[..n] {
                        io_thread::dispatch(&devices, e.data(), e.event_set());
                    }
                }
            }
            _ => host_side(&mut input, &mut host),
        }
    }
    let transport = lock(&devices[0]);
    let _ = transport.fault();
    transport.requests()
}

/// Operation 3 of [`virtio`]: the driver's set-up of one queue (VIRTIO 1.2, 3.1.1), with the
/// features the device offers; returns the queue and where its rings are.
fn set_up_queue(
    input: &mut Input<'_>,
    write32: &dyn Fn(u32, u32),
    queues: usize,
    features: u64,
    flags: u8,
) -> (usize, Rings) {
    use virtio_bindings::virtio_mmio::*;
    let q = usize::from(input.u8()) % queues;
    let size = input.u16();
    let [desc, avail, used] = [(); 3].map(|_| u64::from(input.u16()) * 16);
    let event_idx = if flags & 0x10 != 0 {
        crate::devices::virtio::F_EVENT_IDX
    } else {
        0
    };
    let acked = crate::devices::virtio::F_VERSION_1 | features | event_idx;
    write32(VIRTIO_MMIO_STATUS, 1);
    write32(VIRTIO_MMIO_STATUS, 1 | 2);
    for sel in 0..2 {
        write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        write32(VIRTIO_MMIO_DRIVER_FEATURES, (acked >> (32 * sel)) as u32);
    }
    write32(VIRTIO_MMIO_STATUS, 1 | 2 | 8);
    write32(VIRTIO_MMIO_QUEUE_SEL, q as u32);
    write32(VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
    write32(VIRTIO_MMIO_QUEUE_DESC_LOW, desc as u32);
    write32(VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail as u32);
    write32(VIRTIO_MMIO_QUEUE_USED_LOW, used as u32);
    write32(VIRTIO_MMIO_QUEUE_READY, 1);
    (q, Rings { desc, avail, size })
}

/// Operation 5 of [`virtio`]: a chain of up to four descriptors made available on a queue;
/// returns the queue, for its notification.
fn add_chain(
    input: &mut Input<'_>,
    mem: &crate::memory::GuestMem,
    rings: &[Option<Rings>],
    avail_idx: &mut [u16],
) -> usize {
    let q = usize::from(input.u8()) % rings.len();
    let count = usize::from(input.u8() % 4) + 1;
    let Rings { desc, avail, size } = rings[q].unwrap_or(Rings {
        desc: 0x10000 * q as u64,
        avail: 0x10000 * q as u64 + 0x8000,
        size: 16,
    });
    let size = u64::from(size.max(1));
    let head = u64::from(avail_idx[q]) % size;
    for i in 0..count as u64 {
        let addr = u64::from(input.u32()) % (2 * VIRTIO_MEM);
        let len = u32::from(input.u16());
        let mut dflags = u16::from(input.u8() & 7);
        let index = (head + i) % size;
        // NEXT links to the following entry; the last ends the chain.
        let next = (index + 1) % size;
        if i + 1 == count as u64 {
            dflags &= !1;
        } else {
            dflags |= 1;
        }
        let entry = desc + index * 16;
        let _ = mem.write_obj(addr, GuestAddress(entry));
        let _ = mem.write_obj(len, GuestAddress(entry + 8));
        let _ = mem.write_obj(dflags, GuestAddress(entry + 12));
        let _ = mem.write_obj(next as u16, GuestAddress(entry + 14));
    }
    let slot = avail + 4 + (u64::from(avail_idx[q]) % size) * 2;
    let _ = mem.write_obj(head as u16, GuestAddress(slot));
    avail_idx[q] = avail_idx[q].wrapping_add(1);
    let _ = mem.write_obj(avail_idx[q], GuestAddress(avail + 2));
    q
}

/// Operation 7 of [`virtio`]: what the host does at the device's other end.
fn host_side(input: &mut Input<'_>, host: &mut HostSide) {
    let op = input.u8();
    if let Some(peer) = &host.net_peer {
        if op & 1 == 0 {
            let len = usize::from(input.u16());
            let frame = input.take(len);
            // SAFETY: the kernel reads at most `frame.len()` bytes from `frame`.
            unsafe {
                libc::send(
                    peer.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    libc::MSG_DONTWAIT,
                )
            };
        } else {
            let mut buf = vec![0u8; 1 << 17];
            for _ in 0..64 {
                // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
                let n = unsafe {
                    libc::recv(
                        peer.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    break;
                }
            }
        }
    } else if let Some((dir, listener)) = &host.vsock {
        use std::io::Read;
        match op & 3 {
            0 => {
                let len = usize::from(input.u8());
                let bytes = input.take(len);
                if let Ok(mut s) = UnixStream::connect(dir.join("v.sock")) {
                    let _ = s.set_nonblocking(true);
                    let _ = s.write_all(bytes);
                    host.streams.push(s);
                }
            }
            1 => {
                let len = usize::from(input.u8());
                let bytes = input.take(len);
                if let Some(s) = host.streams.last_mut() {
                    let _ = s.write_all(bytes);
                }
            }
            2 => {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(true);
                    host.streams.push(s);
                }
            }
            _ => {
                let mut buf = [0u8; 4096];
                for s in &mut host.streams {
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
                // A host program that hangs up.
                if op & 4 != 0 {
                    host.streams.pop();
                }
            }
        }
    }
}
