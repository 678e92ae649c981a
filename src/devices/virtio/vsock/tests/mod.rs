//! The vsock device driven as a guest would drive it, against real Unix sockets: the test
//! plays the guest's driver on the queues and the host programs on the sockets, and runs
//! the I/O thread's loop itself ([`Guest::pump`]).

mod flows;
mod hostile;
mod restore;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::EpollEvent;

use super::packet::*;
use super::{Vsock, RX_QUEUE, TX_QUEUE};
use crate::config::VsockConfig;
use crate::devices::virtio::test_util::{desc, Harness, BUFFERS, NEXT, WRITE};
use crate::devices::virtio::VirtioDevice;

/// The guest's CID in every test.
pub const GUEST_CID: u64 = 3;
/// Where the test puts a transmitted packet's header, and its data.
const TX_HDR: u64 = BUFFERS;
const TX_DATA: u64 = BUFFERS + 0x1000;
/// Where receive buffer `slot` lies (header, then data at +0x100); 8 slots of 2 descriptors
/// fill the 16-entry queue.
const RX_BASE: u64 = BUFFERS + 0x2_0000;
const RX_STRIDE: u64 = 0x2_0000;
const RX_SLOTS: u16 = 8;

/// A scratch directory for the sockets, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kvmini-vsock-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A packet header, as the guest writes and reads it (VIRTIO 1.2, 5.10.6: 44 bytes, little
/// endian), encoded here independently of the device's own code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hdr {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Hdr {
    /// A stream packet from the guest's `src_port` to the host's `dst_port`, with 64 KiB of
    /// buffer space and nothing forwarded.
    pub fn to_host(op: u16, src_port: u32, dst_port: u32) -> Self {
        Hdr {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 64 << 10,
            ..Hdr::default()
        }
    }

    fn encode(&self) -> [u8; 44] {
        let mut b = [0u8; 44];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    fn decode(b: &[u8; 44]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Hdr {
            src_cid: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            dst_cid: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16::from_le_bytes([b[28], b[29]]),
            op: u16::from_le_bytes([b[30], b[31]]),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// The device under test and the guest's side of its queues.
pub struct Guest {
    pub h: Harness,
    pub dev: Vsock,
    pub dir: TempDir,
    rx_next: u16,
    rx_seen: u16,
    /// The data room of each receive buffer given from now on.
    pub rx_len: u32,
}

impl Guest {
    /// An activated device listening in a fresh directory.
    pub fn new() -> Self {
        let dir = TempDir::new();
        let config = VsockConfig {
            cid: GUEST_CID as u32,
            uds: dir.0.join("v.sock"),
        };
        let mut dev = Vsock::open(&config).unwrap();
        let mut h = Harness::new(3);
        dev.activate(&mut h.ctx()).unwrap();
        Guest {
            h,
            dev,
            dir,
            rx_next: 0,
            rx_seen: 0,
            rx_len: 4096,
        }
    }

    /// The socket host programs connect to.
    pub fn uds(&self) -> PathBuf {
        self.dir.0.join("v.sock")
    }

    /// A host program connected to `uds`, with timeouts so that a test fails, not hangs.
    pub fn host_connect(&self) -> UnixStream {
        timeouts(UnixStream::connect(self.uds()).unwrap())
    }

    /// Gives the device `n` receive buffers and notifies the receive queue.
    pub fn give_rx(&mut self, n: u16) {
        for _ in 0..n {
            let slot = self.rx_next % RX_SLOTS;
            self.rx_next = self.rx_next.wrapping_add(1);
            let (hdr, data) = rx_slot(slot);
            self.h.add(
                RX_QUEUE,
                &[
                    desc(hdr, 44, WRITE | NEXT, slot * 2 + 1),
                    desc(data, self.rx_len, WRITE, 0),
                ],
                slot * 2,
            );
        }
        self.dev.process_queue(RX_QUEUE, &mut self.h.ctx()).unwrap();
    }

    /// Sends one packet with `data` (its `len` set to the data's).
    pub fn send(&mut self, mut hdr: Hdr, data: &[u8]) {
        hdr.len = data.len() as u32;
        self.h
            .mem
            .write_slice(&hdr.encode(), GuestAddress(TX_HDR))
            .unwrap();
        if data.is_empty() {
            self.h.add(TX_QUEUE, &[desc(TX_HDR, 44, 0, 0)], 0);
        } else {
            self.h.mem.write_slice(data, GuestAddress(TX_DATA)).unwrap();
            self.h.add(
                TX_QUEUE,
                &[
                    desc(TX_HDR, 44, NEXT, 1),
                    desc(TX_DATA, data.len() as u32, 0, 0),
                ],
                0,
            );
        }
        self.dev.process_queue(TX_QUEUE, &mut self.h.ctx()).unwrap();
    }

    /// The packets the device put in receive buffers since the last call.
    pub fn recv(&mut self) -> Vec<(Hdr, Vec<u8>)> {
        let (idx, used) = self.h.used(RX_QUEUE);
        let mut packets = Vec::new();
        assert!(
            idx.wrapping_sub(self.rx_seen) <= 16,
            "used {idx}, seen {}",
            self.rx_seen
        );
        while self.rx_seen != idx {
            let (id, len) = used[usize::from(self.rx_seen)];
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let (hdr_at, data_at) = rx_slot(id as u16 / 2);
            let mut bytes = [0u8; 44];
            self.h
                .mem
                .read_slice(&mut bytes, GuestAddress(hdr_at))
                .unwrap();
            let hdr = Hdr::decode(&bytes);
            assert_eq!(len, 44 + hdr.len, "used length of {hdr:?}");
            let mut data = vec![0; hdr.len as usize];
            self.h
                .mem
                .read_slice(&mut data, GuestAddress(data_at))
                .unwrap();
            packets.push((hdr, data));
        }
        packets
    }

    /// Runs the I/O thread's loop until the sockets are quiet.
    pub fn pump(&mut self) {
        let mut events = vec![EpollEvent::default(); 16];
        loop {
            let n = self.h.epoll.wait(20, &mut events).unwrap();
            if n == 0 {
                return;
            }
            for e in &events[..n] {
                let source = e.data() as u32;
                let set = e.event_set();
                self.dev
                    .process_event(source, set, &mut self.h.ctx())
                    .unwrap();
            }
        }
    }

    /// Whether the epoll set reports anything within a short while.
    pub fn epoll_quiet(&self) -> bool {
        let mut events = vec![EpollEvent::default(); 4];
        self.h.epoll.wait(50, &mut events).unwrap() == 0
    }

    /// A host program's connection to guest port `port`, accepted by the guest: the
    /// program's stream and kvmini's local port.
    pub fn host_initiated(&mut self, port: u32) -> (UnixStream, u32) {
        use std::io::Write;
        let mut host = self.host_connect();
        host.write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        self.pump();
        let pkts = self.recv();
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let request = pkts[0].0;
        assert_eq!(request.op, OP_REQUEST);
        let local = request.src_port;
        self.send(Hdr::to_host(OP_RESPONSE, port, local), &[]);
        assert_eq!(read_line(&mut host), format!("OK {local}"));
        (host, local)
    }
}

/// Where receive slot `slot`'s header and data are.
fn rx_slot(slot: u16) -> (u64, u64) {
    let base = RX_BASE + u64::from(slot) * RX_STRIDE;
    (base, base + 0x100)
}

/// `stream` with two-second timeouts.
pub fn timeouts(stream: UnixStream) -> UnixStream {
    let t = Some(Duration::from_secs(2));
    stream.set_read_timeout(t).unwrap();
    stream.set_write_timeout(t).unwrap();
    stream
}

/// One line from `stream`, without its newline.
pub fn read_line(stream: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        stream.read_exact(&mut byte).unwrap();
        if byte[0] == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(byte[0]);
    }
}

/// Whether kvmini closed `stream`'s other end: it reads 0, or a reset if kvmini closed its
/// end with data unread.
pub fn at_eof(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8];
    match stream.read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// The path of `<uds>_<port>`.
pub fn port_path(uds: &Path, port: u32) -> PathBuf {
    super::host::port_path(uds, port)
}
