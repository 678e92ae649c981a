//! virtio-vsock: stream sockets between the guest and host programs, over Unix sockets on
//! the host in Firecracker's convention (its `docs/vsock.md`).
//!
//! kvmini listens on the Unix socket `uds` (`--vsock cid=N,uds=PATH`):
//!
//! - A host program connects to `uds` and writes `CONNECT <port>\n`; kvmini asks the guest
//!   for a connection to `<port>` from the host (CID 2) and a local port of its own (from
//!   2^30 up). When the guest accepts, the program reads `OK <local port>\n`, then the
//!   stream is the connection; if nobody listens in the guest, the stream closes.
//! - A guest that connects to the host's port P reaches whatever listens on the Unix socket
//!   `<uds>_P`, or is refused.
//!
//! Every host socket is non-blocking and watched, edge-triggered, by the I/O thread. Data
//! to the guest is read from a host socket straight into a receive buffer, as far as the
//! guest's credit goes and only while it has buffers; data from the guest is written to the
//! host socket at once, and what it does not take waits (up to the credit kvmini gave the
//! guest) until it is writable again. The guest is never trusted: a packet that is not
//! from its CID, not for the host, of another type or malformed is dropped or answered with
//! a reset, and every queue and buffer of kvmini's is bounded.
//!
//! Source of truth: VIRTIO 1.2, section 5.10 (socket device): 5.10.4 (configuration),
//! 5.10.6 (operation: packets, 5.10.6.3 flow control, 5.10.6.6 stream sockets).

mod conn;
mod host;
mod muxer;
mod packet;

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_vsock::packet::VsockPacket;
use vmm_sys_util::epoll::EventSet;

use super::{Context, DeviceError, EventRegistry, SetupError, VirtioDevice};
use crate::config::VsockConfig;
use host::HostListener;
use muxer::Muxer;
use packet::MAX_PKT_DATA;

/// The receive queue: packets for the guest.
pub const RX_QUEUE: usize = 0;
/// The transmit queue: packets from the guest.
pub const TX_QUEUE: usize = 1;
/// Size of each queue: receive, transmit, and the event queue (transport resets), on
/// which kvmini sends nothing.
const QUEUE_SIZE: u16 = 256;

/// The vsock device.
#[derive(Debug)]
pub struct Vsock {
    cid: u64,
    muxer: Muxer,
}

impl Vsock {
    /// Listens on `config.uds` for host programs, replacing a stale socket file there.
    pub fn open(config: &VsockConfig) -> Result<Self, SetupError> {
        let listener = HostListener::bind(&config.uds).map_err(|e| {
            SetupError::new(
                "--vsock",
                config.uds.display(),
                format!("cannot listen on this Unix socket: {e}"),
            )
        })?;
        let cid = u64::from(config.cid);
        Ok(Vsock {
            cid,
            muxer: Muxer::new(listener, cid),
        })
    }

    /// The connections the device has.
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.muxer.connections()
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn name(&self) -> &'static str {
        "virtio-vsock"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        0
    }

    /// `guest_cid`, 64 bits little-endian (VIRTIO 1.2, 5.10.4).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::mmio::read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        self.muxer.activate(ctx.events).map_err(|e| {
            DeviceError::Backend(format!("cannot watch {}: {e}", self.muxer.uds().display()))
        })
    }

    fn process_queue(&mut self, queue: usize, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        if queue == TX_QUEUE {
            let (mem, events) = (ctx.mem, ctx.events);
            let muxer = &mut self.muxer;
            ctx.process_chains(TX_QUEUE, |mut chain| {
                if let Ok(pkt) = VsockPacket::from_tx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
                    muxer.guest_packet(&pkt, events);
                }
                0
            })?;
        }
        // New receive buffers, or replies to what the guest sent: fill what there is.
        self.muxer.fill_rx(ctx)
    }

    fn process_event(
        &mut self,
        source: u32,
        events: EventSet,
        ctx: &mut Context<'_>,
    ) -> Result<(), DeviceError> {
        self.muxer.process_event(source, events, ctx.events);
        self.muxer.fill_rx(ctx)
    }

    fn reset(&mut self, events: &EventRegistry) {
        self.muxer.clear(events);
    }
}

#[cfg(test)]
mod tests;
