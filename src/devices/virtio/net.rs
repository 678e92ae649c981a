//! virtio-net: an Ethernet interface for the guest (`eth0`), whose other end is a TAP device
//! on the host ([`super::tap`]).
//!
//! Two queues: the driver fills the receive queue (0) with empty buffers and the transmit
//! queue (1) with frames. Each frame, both ways, starts with the 12-byte `struct
//! virtio_net_hdr_v1`, which the TAP takes and gives as its vnet header; since the device
//! offers no offloads, that header is all zeroes but for `num_buffers` (1) on received
//! frames. The device offers `VIRTIO_NET_F_MAC` and nothing else of its own: no
//! checksum or segmentation offloads, no mergeable receive buffers, no link status, no
//! control queue. Each frame must fit in one receive chain (Linux then posts buffers of
//! at least 1,518 bytes plus the header).
//!
//! Transmit: each chain's readable buffers (header and frame, 65,562 bytes at most) are
//! copied out and written to the TAP in one `write`; a malformed chain or a frame the TAP
//! refuses is dropped, and the chain goes back to the driver either way.
//!
//! Receive: the TAP's descriptor is registered with the I/O thread at activation
//! (edge-triggered) and unregistered at reset. When it has frames, each is read into a
//! bounce buffer and copied into the next receive chain, until the TAP is empty or the
//! driver has no buffer left. Then the frames wait in the TAP (whose own queue drops what
//! overflows) until the driver notifies the receive queue, and the device drains what
//! waits. Edge-triggered, the descriptor wakes the I/O thread only when a frame arrives:
//! never again and again for frames the device cannot take yet, nor for a device the
//! transport stopped after a fault. A frame larger than the chain it would go to is
//! dropped (and counted).
//!
//! Source of truth: VIRTIO 1.2, section 5.1 (network device).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;

use super::state::DeviceState;
use super::tap::{Tap, VNET_HDR_LEN};
use super::{Chain, Context, DeviceError, EventRegistry, SetupError, VirtioDevice};
use crate::config::NetConfig;
use crate::memory::GuestMem;

/// The receive queue's index.
pub const RX: usize = 0;
/// The transmit queue's index.
pub const TX: usize = 1;
/// Size of each queue.
const QUEUE_SIZE: u16 = 256;
/// The event source of the TAP's descriptor.
const TAP_SOURCE: u32 = super::FIRST_DEVICE_SOURCE;
/// The largest frame with its header either way: the header and 65,550 bytes, which is
/// a 64 KiB IP packet behind an Ethernet header with VLAN tags.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65_550;
/// `struct virtio_net_hdr_v1`'s `num_buffers`, a little-endian u16 at its end.
const NUM_BUFFERS: std::ops::Range<usize> = 10..12;

/// What the device counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames written to the TAP.
    pub tx_frames: u64,
    /// Transmit chains dropped: malformed, or refused by the TAP.
    pub tx_dropped: u64,
    /// Frames given to the guest.
    pub rx_frames: u64,
    /// Frames read from the TAP and dropped: larger than the guest's buffer, or shorter
    /// than a header.
    pub rx_dropped: u64,
    /// Receive chains returned empty because no frame could go in them (outside guest
    /// memory, or without room for a header).
    pub rx_bad_chains: u64,
}

/// A virtio network device on a TAP device.
#[derive(Debug)]
pub struct Net {
    tap: Tap,
    /// The configuration space: the MAC address.
    config: [u8; 6],
    /// The TAP may hold frames: set by its readiness (an edge) and at activation, cleared
    /// when a read finds nothing.
    tap_readable: bool,
    /// Where frames pass through on their way to and from guest memory.
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    counters: NetCounters,
}

/// What became of one receive chain.
enum Received {
    /// A frame of this many bytes (header included) went into it.
    Frame(u32),
    /// It cannot take a frame: it goes back to the driver empty.
    BadChain,
    /// The TAP has no frame (or failed): the chain stays for later.
    NoFrame,
}

impl Net {
    /// Opens the TAP `config` names, and picks the guest's MAC address.
    pub fn open(config: &NetConfig) -> Result<Self, SetupError> {
        let mac = match config.mac {
            Some(mac) if mac[0] & 1 != 0 || mac == [0; 6] => {
                return Err(SetupError::new(
                    "--net",
                    format!("tap={}", config.tap),
                    "the MAC is a multicast or zero address: a NIC needs a unicast one, such \
                     as 02:00:00:00:00:01 (the 02 makes it locally administered)"
                        .into(),
                ))
            }
            Some(mac) => mac,
            None => mac_for(&config.tap),
        };
        Ok(Net::new(Tap::open(&config.tap)?, mac))
    }

    /// A device on `tap` whose guest has the address `mac`.
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        Net {
            tap,
            config: mac,
            tap_readable: false,
            // Zeroed allocations this large are mapped lazily: untouched, they cost nothing.
            rx_buf: vec![0; MAX_FRAME],
            tx_buf: vec![0; MAX_FRAME],
            counters: NetCounters::default(),
        }
    }

    /// What the device counted.
    #[cfg(test)]
    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    /// Sends the frame in one transmit chain to the TAP, or drops it.
    fn transmit(&mut self, chain: Chain<'_>, mem: &GuestMem) {
        let sent = match self.copy_frame_out(chain, mem) {
            // The TAP is down, or refuses the frame: a link drops it too.
            Some(len) => self.tap.write(&self.tx_buf[..len]).is_ok(),
            None => false,
        };
        if sent {
            self.counters.tx_frames += 1;
        } else {
            self.counters.tx_dropped += 1;
        }
    }

    /// Copies a well-formed transmit chain into `tx_buf`; returns its length, or `None`
    /// for a malformed chain.
    fn copy_frame_out(&mut self, chain: Chain<'_>, mem: &GuestMem) -> Option<usize> {
        let mut reader = chain.clone().reader(mem).ok()?;
        // Device-writable buffers have no place in a frame to send (VIRTIO 1.2, 5.1.6.2).
        if chain.writer(mem).ok()?.available_bytes() > 0 {
            return None;
        }
        let len = reader.available_bytes();
        if !(VNET_HDR_LEN..=MAX_FRAME).contains(&len) {
            return None;
        }
        reader.read_exact(&mut self.tx_buf[..len]).ok()?;
        // Without checksum or segmentation features the driver must send a zero header
        // (5.1.6.2): one that is not would ask the TAP for offloads it was not offered.
        self.tx_buf[..VNET_HDR_LEN].fill(0);
        Some(len)
    }

    /// Moves frames from the TAP into the receive queue while there are both; then tells
    /// the driver, if it asked to be told.
    fn receive(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        if !self.tap_readable || !ctx.queues.get(RX).is_some_and(|q| q.ready()) {
            return Ok(());
        }
        let mem = ctx.mem;
        let queue = &mut ctx.queues[RX];
        let err = |source| DeviceError::Queue { queue: RX, source };
        let mut used = 0;
        queue.disable_notification(mem).map_err(err)?;
        loop {
            let Some(chain) = queue.iter(mem).map_err(err)?.next() else {
                // No buffer: the frames wait in the TAP until the driver adds buffers and
                // notifies the queue (asked for here, then checked again for buffers that
                // came in the meantime).
                if queue.enable_notification(mem).map_err(err)? {
                    queue.disable_notification(mem).map_err(err)?;
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            match self.receive_into(chain, mem) {
                Received::Frame(len) => {
                    queue.add_used(mem, head, len).map_err(err)?;
                    used += 1;
                }
                Received::BadChain => {
                    queue.add_used(mem, head, 0).map_err(err)?;
                    used += 1;
                }
                Received::NoFrame => {
                    // The chain waits for the next frame.
                    queue.go_to_previous_position();
                    break;
                }
            }
        }
        ctx.used += used;
        if used > 0 && queue.needs_notification(mem).map_err(err)? {
            ctx.interrupt.signal_used_queue();
        }
        Ok(())
    }

    /// Reads frames from the TAP until one fits in `chain`, and copies it there.
    fn receive_into(&mut self, chain: Chain<'_>, mem: &GuestMem) -> Received {
        let Ok(mut writer) = chain.writer(mem) else {
            self.counters.rx_bad_chains += 1;
            return Received::BadChain;
        };
        let room = writer.available_bytes();
        if room < VNET_HDR_LEN {
            self.counters.rx_bad_chains += 1;
            return Received::BadChain;
        }
        loop {
            let len = match self.tap.read(&mut self.rx_buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Nothing waiting (or the TAP failed: it was deleted): wait for the next
                    // edge, never poll it.
                    self.tap_readable = false;
                    return Received::NoFrame;
                }
            };
            if len < VNET_HDR_LEN || len > room || len > self.rx_buf.len() {
                self.counters.rx_dropped += 1;
                continue;
            }
            // A frame always fits in one chain here (no VIRTIO_NET_F_MRG_RXBUF): one buffer.
            self.rx_buf[NUM_BUFFERS].copy_from_slice(&1u16.to_le_bytes());
            if writer.write_all(&self.rx_buf[..len]).is_err() {
                self.counters.rx_dropped += 1;
                return Received::BadChain;
            }
            self.counters.rx_frames += 1;
            return Received::Frame(len as u32);
        }
    }
}

/// A MAC address for the TAP `name`, the same each time: locally administered (02:...),
/// unicast, and the rest from a hash of the name (FNV-1a), so that VMs on different TAPs
/// differ.
pub fn mac_for(name: &str) -> [u8; 6] {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let h = hash.to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_NET_F_MAC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::mmio::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        let fd = self.tap.as_raw_fd();
        // A device that faulted was stopped without a reset and may still be registered.
        ctx.events.remove(fd);
        ctx.events
            .add(fd, TAP_SOURCE, EventSet::IN | EventSet::EDGE_TRIGGERED)
            .map_err(|e| DeviceError::Backend(format!("cannot watch the TAP: {e}")))?;
        // Frames may have arrived before: the transport looks at the receive queue next.
        self.tap_readable = true;
        Ok(())
    }

    fn process_queue(&mut self, queue: usize, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        match queue {
            RX => self.receive(ctx),
            TX => {
                let mem = ctx.mem;
                ctx.process_chains(TX, |chain| {
                    self.transmit(chain, mem);
                    0
                })?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn process_event(
        &mut self,
        source: u32,
        _events: EventSet,
        ctx: &mut Context<'_>,
    ) -> Result<(), DeviceError> {
        if source != TAP_SOURCE {
            return Ok(());
        }
        // Readable, or an error or hang-up, which the next read reports.
        self.tap_readable = true;
        self.receive(ctx)
    }

    fn reset(&mut self, events: &EventRegistry) {
        events.remove(self.tap.as_raw_fd());
        self.tap_readable = false;
    }

    fn save(&self) -> DeviceState {
        DeviceState::Net {
            tap: self.tap.name().to_string(),
            mac: self.config,
        }
    }

    /// Any TAP stands in for the saved one (a TAP cannot leave its process); the guest keeps
    /// its MAC address.
    fn restore(&mut self, saved: &DeviceState) -> Result<(), String> {
        let DeviceState::Net { mac, .. } = saved else {
            return Err(super::other_kind(self.name(), saved));
        };
        self.config = *mac;
        Ok(())
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
