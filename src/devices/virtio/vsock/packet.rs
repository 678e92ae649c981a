//! The packet header's vocabulary (VIRTIO 1.2, 5.10.6) and the one way kvmini fills a
//! header for the guest. Packets themselves are `virtio-vsock`'s [`VsockPacket`], built
//! from a descriptor chain with its bounds checks.

use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};

/// The host's context ID: every packet kvmini sends comes from it.
pub const HOST_CID: u64 = 2;

/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type kvmini carries.
pub const TYPE_STREAM: u16 = 1;

/// `VIRTIO_VSOCK_OP_REQUEST`: open a connection.
pub const OP_REQUEST: u16 = 1;
/// `VIRTIO_VSOCK_OP_RESPONSE`: the connection is accepted.
pub const OP_RESPONSE: u16 = 2;
/// `VIRTIO_VSOCK_OP_RST`: the connection is refused or gone.
pub const OP_RST: u16 = 3;
/// `VIRTIO_VSOCK_OP_SHUTDOWN`: the sender stops receiving and/or sending (the flags say).
pub const OP_SHUTDOWN: u16 = 4;
/// `VIRTIO_VSOCK_OP_RW`: data.
pub const OP_RW: u16 = 5;
/// `VIRTIO_VSOCK_OP_CREDIT_UPDATE`: the sender's buffer space, unasked.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// `VIRTIO_VSOCK_OP_CREDIT_REQUEST`: please send a credit update.
pub const OP_CREDIT_REQUEST: u16 = 7;

/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both directions are shut.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// The most data one packet carries, either way (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_DATA: u32 = 64 << 10;

/// A packet on the device's receive queue.
pub type RxPacket<'a> = VsockPacket<'a, ()>;

/// What kvmini says to the guest in one packet, apart from its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// kvmini's port (the source).
    pub local_port: u32,
    /// The guest's port (the destination).
    pub peer_port: u32,
    /// `OP_*`.
    pub op: u16,
    /// Shutdown flags.
    pub flags: u32,
    /// Data bytes that follow the header.
    pub len: u32,
    /// kvmini's receive buffer for the connection.
    pub buf_alloc: u32,
    /// What kvmini has passed on of the guest's data.
    pub fwd_cnt: u32,
}

impl Reply {
    /// A reset of the connection between `local_port` and `peer_port`.
    pub fn reset(local_port: u32, peer_port: u32) -> Self {
        Reply {
            local_port,
            peer_port,
            op: OP_RST,
            ..Reply::default()
        }
    }

    /// Writes the header into `pkt`, from the host to the guest `guest_cid`; returns the
    /// bytes the chain then holds.
    pub fn write(&self, pkt: &mut RxPacket<'_>, guest_cid: u64) -> u32 {
        // The header slice is exactly PKT_HEADER_SIZE bytes: zeroing it cannot fail.
        let _ = pkt.set_header_from_raw(&[0; PKT_HEADER_SIZE]);
        pkt.set_src_cid(HOST_CID)
            .set_dst_cid(guest_cid)
            .set_src_port(self.local_port)
            .set_dst_port(self.peer_port)
            .set_type(TYPE_STREAM)
            .set_op(self.op)
            .set_flags(self.flags)
            .set_len(self.len)
            .set_buf_alloc(self.buf_alloc)
            .set_fwd_cnt(self.fwd_cnt);
        PKT_HEADER_SIZE as u32 + self.len
    }
}
