//! The connections of one vsock device: the host listener and the programs that connect to
//! it, the guest's packets handed to their connection, and the receive queue filled from
//! what the connections have to say.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use virtio_queue::{QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vmm_sys_util::epoll::EventSet;

use super::conn::{Connection, RxOutcome, TxOutcome};
use super::host::{self, ConnectLine, HostListener, PendingHost};
use super::packet::*;
use super::RX_QUEUE;
use crate::devices::virtio::{Context, DeviceError, EventRegistry, FIRST_DEVICE_SOURCE};

/// The event source of the host listener; host streams follow it.
pub const LISTENER_SOURCE: u32 = FIRST_DEVICE_SOURCE;
/// The most host streams at once, connected or still saying `CONNECT`.
pub const MAX_CONNECTIONS: usize = 1024;
/// The most resets waiting for a receive buffer; more are dropped (the guest's side then
/// times out).
pub const MAX_RESETS: usize = 1024;
/// The first port kvmini gives a host program's connection (as Firecracker does).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// A connection's key: (kvmini's port, the guest's port).
pub type Key = (u32, u32);

/// What a host stream's event source stands for.
#[derive(Debug)]
enum Source {
    /// A host program that has not finished its `CONNECT` line.
    Pending(PendingHost),
    /// A connection.
    Conn(Key),
}

/// The device's connections.
#[derive(Debug)]
pub struct Muxer {
    listener: HostListener,
    guest_cid: u64,
    conns: HashMap<Key, Connection>,
    sources: HashMap<u32, Source>,
    /// Resets for connections kvmini does not have (any more).
    resets: VecDeque<Key>,
    /// Connections with something for the receive queue, each at most once.
    ready: VecDeque<Key>,
    next_source: u32,
    next_port: u32,
}

impl Muxer {
    /// No connections yet.
    pub fn new(listener: HostListener, guest_cid: u64) -> Self {
        Muxer {
            listener,
            guest_cid,
            conns: HashMap::new(),
            sources: HashMap::new(),
            resets: VecDeque::new(),
            ready: VecDeque::new(),
            next_source: LISTENER_SOURCE + 1,
            next_port: FIRST_LOCAL_PORT,
        }
    }

    /// The socket file host programs connect to.
    pub fn uds(&self) -> PathBuf {
        self.listener.path().to_path_buf()
    }

    /// Starts listening for host programs (afresh, should an earlier run not have been
    /// reset).
    pub fn activate(&mut self, events: &EventRegistry) -> std::io::Result<()> {
        self.clear(events);
        let set = EventSet::IN | EventSet::EDGE_TRIGGERED;
        events.add(self.listener.as_raw_fd(), LISTENER_SOURCE, set)
    }

    /// Drops every connection and stops watching every socket.
    pub fn clear(&mut self, events: &EventRegistry) {
        events.remove(self.listener.as_raw_fd());
        for source in self.sources.values() {
            match source {
                Source::Pending(p) => events.remove(p.stream.as_raw_fd()),
                Source::Conn(key) => {
                    if let Some(conn) = self.conns.get(key) {
                        events.remove(conn.stream.as_raw_fd());
                    }
                }
            }
        }
        self.sources.clear();
        self.conns.clear();
        self.resets.clear();
        self.ready.clear();
    }

    /// The number of connections (handshaking or established).
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// One of the muxer's sockets is ready.
    pub fn process_event(&mut self, source: u32, set: EventSet, events: &EventRegistry) {
        if source == LISTENER_SOURCE {
            self.accept(events);
            return;
        }
        match self.sources.get(&source) {
            Some(Source::Pending(_)) => self.pending_ready(source, events),
            Some(&Source::Conn(key)) => {
                let ok = self.conns.get_mut(&key).is_some_and(|c| c.host_ready(set));
                if ok {
                    self.after_change(key, events);
                } else {
                    self.remove(key, true, events);
                }
            }
            None => {}
        }
    }

    /// Takes every host program waiting on the listener.
    fn accept(&mut self, events: &EventRegistry) {
        loop {
            let stream = match self.listener.accept() {
                Ok(Some(stream)) => stream,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("kvmini: vsock: accept on {}: {e}", self.uds().display());
                    return;
                }
            };
            if self.sources.len() >= MAX_CONNECTIONS {
                continue;
            }
            let source = self.alloc_source();
            let set = EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
            if events.add(stream.as_raw_fd(), source, set).is_ok() {
                self.sources
                    .insert(source, Source::Pending(PendingHost::new(stream)));
            }
        }
    }

    /// A host program sent (part of) its `CONNECT` line.
    fn pending_ready(&mut self, source: u32, events: &EventRegistry) {
        let Some(Source::Pending(pending)) = self.sources.get_mut(&source) else {
            return;
        };
        let port = match pending.read_line() {
            ConnectLine::Incomplete => return,
            ConnectLine::Port(port) => Some(port),
            ConnectLine::Bad => None,
        };
        let Some(Source::Pending(pending)) = self.sources.remove(&source) else {
            return;
        };
        let Some(peer_port) = port else {
            events.remove(pending.stream.as_raw_fd());
            return;
        };
        let key = (self.alloc_port(), peer_port);
        let conn = Connection::host_initiated(pending.stream, source, key.0, key.1);
        self.sources.insert(source, Source::Conn(key));
        self.conns.insert(key, conn);
        self.after_change(key, events);
    }

    /// A source number no socket has.
    fn alloc_source(&mut self) -> u32 {
        loop {
            let source = self.next_source;
            self.next_source = source.checked_add(1).unwrap_or(LISTENER_SOURCE + 1);
            if !self.sources.contains_key(&source) {
                return source;
            }
        }
    }

    /// A local port no connection has (`u32::MAX` is `VMADDR_PORT_ANY`: never).
    fn alloc_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = if port >= u32::MAX - 1 {
                FIRST_LOCAL_PORT
            } else {
                port + 1
            };
            if !self.conns.keys().any(|k| k.0 == port) {
                return port;
            }
        }
    }

    /// Handles a packet the guest sent. What is not for the host, or not from the guest, is
    /// dropped; what is for no connection is answered with a reset.
    pub fn guest_packet(&mut self, pkt: &VsockPacket<'_, ()>, events: &EventRegistry) {
        if pkt.src_cid() != self.guest_cid || pkt.dst_cid() != HOST_CID {
            return;
        }
        let key = (pkt.dst_port(), pkt.src_port());
        if pkt.type_() != TYPE_STREAM {
            if pkt.op() != OP_RST {
                self.remove(key, true, events);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            match pkt.op() {
                OP_REQUEST => self.guest_connect(key, pkt, events),
                OP_RST => {}
                _ => self.push_reset(key),
            }
            return;
        };
        conn.peer_credit_from(pkt.buf_alloc(), pkt.fwd_cnt());
        match conn.guest_packet(pkt.op(), pkt.flags(), pkt.data_slice()) {
            TxOutcome::Keep => self.after_change(key, events),
            TxOutcome::Reset => self.remove(key, true, events),
            TxOutcome::Forget => self.remove(key, false, events),
        }
    }

    /// The guest connects to the host's port `key.0`: to `<uds>_<port>`, or a reset.
    fn guest_connect(&mut self, key: Key, pkt: &VsockPacket<'_, ()>, events: &EventRegistry) {
        if self.sources.len() >= MAX_CONNECTIONS {
            self.push_reset(key);
            return;
        }
        let Ok(stream) = host::connect(&host::port_path(self.listener.path(), key.0)) else {
            self.push_reset(key);
            return;
        };
        let source = self.alloc_source();
        let mut conn = Connection::guest_initiated(stream, source, key);
        conn.peer_credit_from(pkt.buf_alloc(), pkt.fwd_cnt());
        if conn.register(events).is_err() {
            self.push_reset(key);
            return;
        }
        self.sources.insert(source, Source::Conn(key));
        self.conns.insert(key, conn);
        self.after_change(key, events);
    }

    /// After anything happened to a connection: end it if both sides are through, watch
    /// its socket for what it waits for, and queue it if it has something for the guest.
    fn after_change(&mut self, key: Key, events: &EventRegistry) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.finished() || conn.update_interest(events).is_err() {
            self.remove(key, true, events);
            return;
        }
        if conn.wants_rx() && !conn.queued {
            conn.queued = true;
            self.ready.push_back(key);
        }
    }

    /// Forgets a connection, closing its host stream; tells the guest with a reset if
    /// `reset`.
    fn remove(&mut self, key: Key, reset: bool, events: &EventRegistry) {
        if let Some(conn) = self.conns.remove(&key) {
            events.remove(conn.stream.as_raw_fd());
            self.sources.remove(&conn.source);
            if conn.queued {
                self.ready.retain(|&k| k != key);
            }
        }
        if reset {
            self.push_reset(key);
        }
    }

    fn push_reset(&mut self, key: Key) {
        if self.resets.len() < MAX_RESETS {
            self.resets.push_back(key);
        }
    }

    /// Puts what the connections have to say into the guest's receive buffers: resets
    /// first, then each ready connection in turn, one packet at a time. Stops when the
    /// guest has no more buffers; its next notification of the receive queue resumes.
    pub fn fill_rx(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        let events = ctx.events;
        let mut held = None;
        while !self.resets.is_empty() || !self.ready.is_empty() {
            if held.is_none() {
                held = next_rx_packet(ctx)?;
            }
            let Some((head, pkt)) = held.as_mut() else {
                break;
            };
            let outcome = if let Some(key) = self.resets.pop_front() {
                RxOutcome::Sent(Reply::reset(key.0, key.1).write(pkt, self.guest_cid))
            } else if let Some(key) = self.ready.pop_front() {
                self.conn_rx(key, pkt, events)
            } else {
                break;
            };
            if let RxOutcome::Sent(len) = outcome {
                let head = *head;
                held = None;
                ctx.add_used(RX_QUEUE, head, len)?;
            }
        }
        if held.is_some() {
            // The buffer taken and not filled goes back to the guest's side.
            ctx.queues[RX_QUEUE].go_to_previous_position();
        }
        Ok(())
    }

    /// Lets connection `key` fill `pkt`.
    fn conn_rx(&mut self, key: Key, pkt: &mut RxPacket<'_>, events: &EventRegistry) -> RxOutcome {
        let Some(conn) = self.conns.get_mut(&key) else {
            return RxOutcome::Nothing;
        };
        conn.queued = false;
        match conn.fill_rx(pkt, self.guest_cid) {
            RxOutcome::Reset => {
                self.remove(key, true, events);
                RxOutcome::Nothing
            }
            outcome => {
                self.after_change(key, events);
                outcome
            }
        }
    }
}

/// The guest's next receive buffer with room for a header and some data; chains that
/// cannot be a packet are given back empty. `None` when the guest has no more buffers:
/// it is then asked to notify the queue when it adds some.
fn next_rx_packet<'a>(ctx: &mut Context<'a>) -> Result<Option<(u16, RxPacket<'a>)>, DeviceError> {
    let mem = ctx.mem;
    let err = |source| DeviceError::Queue {
        queue: RX_QUEUE,
        source,
    };
    loop {
        let queue = &mut ctx.queues[RX_QUEUE];
        if !queue.ready() {
            return Ok(None);
        }
        let Some(mut chain) = queue.iter(mem).map_err(err)?.next() else {
            if queue.enable_notification(mem).map_err(err)? {
                continue;
            }
            return Ok(None);
        };
        let head = chain.head_index();
        match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
            Ok(pkt) if pkt.data_slice().is_some() => return Ok(Some((head, pkt))),
            _ => ctx.add_used(RX_QUEUE, head, 0)?,
        }
    }
}
