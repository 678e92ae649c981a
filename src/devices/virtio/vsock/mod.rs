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

use super::state::DeviceState;
use super::{Context, DeviceError, EventRegistry, SetupError, VirtioDevice};
use crate::config::VsockConfig;
use host::HostListener;
use muxer::Muxer;
use packet::MAX_PKT_DATA;

/// The receive queue: packets for the guest.
pub const RX_QUEUE: usize = 0;
/// The transmit queue: packets from the guest.
pub const TX_QUEUE: usize = 1;
/// The event queue: kvmini's only event is the transport reset after a restore.
pub const EVENT_QUEUE: usize = 2;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` (VIRTIO 1.2, 5.10.6.7).
const EVENT_TRANSPORT_RESET: u32 = 0;
/// Size of each queue: receive, transmit, and the event queue (transport resets), on
/// which kvmini sends only the reset of a restored VM.
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

    fn save(&self) -> DeviceState {
        DeviceState::Vsock {
            cid: self.cid,
            uds: super::state::absolute(&self.muxer.uds()),
        }
    }

    fn restore(&mut self, saved: &DeviceState) -> Result<(), String> {
        match saved {
            DeviceState::Vsock { cid, .. } if *cid == self.cid => Ok(()),
            DeviceState::Vsock { cid, .. } => Err(format!(
                "the guest's context ID is {cid} in the snapshot, and {} here: give cid={cid}",
                self.cid
            )),
            _ => Err(super::other_kind(self.name(), saved)),
        }
    }

    /// Listens again, on the new socket, and tells the guest that its connections are gone
    /// (none of them survives a snapshot: their host ends stayed in the saving process):
    /// the driver then resets every connected socket; listening ones go on.
    fn resume(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        self.activate(ctx)?;
        send_transport_reset(ctx)
    }
}

/// Puts a `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` in the driver's next event buffer, if it has
/// given one.
fn send_transport_reset(ctx: &mut Context<'_>) -> Result<(), DeviceError> {
    use std::io::Write;
    use virtio_queue::{QueueOwnedT, QueueT};
    let mem = ctx.mem;
    let queue = &mut ctx.queues[EVENT_QUEUE];
    if !queue.ready() {
        return Ok(());
    }
    let chain = queue
        .iter(mem)
        .map_err(|source| DeviceError::Queue {
            queue: EVENT_QUEUE,
            source,
        })?
        .next();
    let Some(chain) = chain else {
        return Ok(());
    };
    let head = chain.head_index();
    let event = EVENT_TRANSPORT_RESET.to_le_bytes();
    let written = match chain.writer(mem).map(|mut w| w.write_all(&event)) {
        Ok(Ok(())) => event.len() as u32,
        _ => 0,
    };
    ctx.add_used(EVENT_QUEUE, head, written)
}

#[cfg(test)]
mod tests;
