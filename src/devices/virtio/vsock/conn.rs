//! One stream connection between a guest port and a host Unix stream: its state, the
//! guest's data waiting for the host socket, and the credit each side gives the other
//! (VIRTIO 1.2, 5.10.6.3).

use std::io::ErrorKind;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};
use vmm_sys_util::epoll::EventSet;

use super::packet::*;
use crate::devices::virtio::EventRegistry;

/// The receive buffer kvmini gives each connection: the most guest data it holds for a
/// host socket that does not read.
pub const BUF_ALLOC: u32 = 128 << 10;
/// kvmini tells the guest of its credit unasked once this much was passed on since the
/// guest last heard.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 2;

/// Where a connection is in its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A host program asked (`CONNECT`): kvmini sent the guest a request and waits.
    Requested,
    /// Both sides agreed; data flows.
    Established,
}

/// What a connection put in a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// A packet of this many bytes, header included.
    Sent(u32),
    /// Nothing to say now.
    Nothing,
    /// The host socket failed: reset the connection.
    Reset,
}

/// What kvmini does after a guest's packet for the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// The connection goes on.
    Keep,
    /// Reset it and forget it.
    Reset,
    /// The guest reset it: forget it, without a word.
    Forget,
}

/// A connection, keyed by (local port, peer port).
#[derive(Debug)]
pub struct Connection {
    /// The host program's stream.
    pub stream: UnixStream,
    /// Its event source number.
    pub source: u32,
    /// kvmini's port.
    pub local_port: u32,
    /// The guest's port.
    pub peer_port: u32,
    /// Waits in the muxer's ready queue.
    pub queued: bool,
    state: State,
    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    /// A credit request went out since the guest last gave credit.
    credit_requested: bool,
    /// Guest data (after `preamble` bytes of kvmini's own) the host socket did not take yet.
    tx_buf: Vec<u8>,
    preamble: usize,
    /// Guest bytes passed on to the host socket.
    fwd_cnt: u32,
    /// `fwd_cnt` as the guest last heard it.
    last_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The host socket may have data (edge-triggered: until a read would block).
    readable: bool,
    /// The host program closed its end (hang-up or error seen).
    host_closed: bool,
    /// The guest's shutdown flags, accumulated.
    guest_shut: u32,
    /// The shutdown flags kvmini sent the guest.
    host_shut: u32,
    /// The guest shut down both ways: reset once its data reached the host.
    closing: bool,
    /// The host socket's write side is shut (the guest sends no more).
    write_shut: bool,
    /// `EPOLLOUT` is watched.
    writing: bool,
}

impl Connection {
    fn new(stream: UnixStream, source: u32, key: (u32, u32), state: State) -> Self {
        Connection {
            stream,
            source,
            local_port: key.0,
            peer_port: key.1,
            queued: false,
            state,
            send_request: state == State::Requested,
            send_response: state == State::Established,
            send_credit_update: false,
            credit_requested: false,
            tx_buf: Vec::new(),
            preamble: 0,
            fwd_cnt: 0,
            last_fwd_cnt: 0,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            readable: true,
            host_closed: false,
            guest_shut: 0,
            host_shut: 0,
            closing: false,
            write_shut: false,
            writing: false,
        }
    }

    /// A host program's connection to the guest's `peer_port`: a request goes to the guest.
    pub fn host_initiated(stream: UnixStream, source: u32, local_port: u32, peer: u32) -> Self {
        Connection::new(stream, source, (local_port, peer), State::Requested)
    }

    /// The guest's connection to the host's `local_port`, accepted: a response goes back.
    pub fn guest_initiated(stream: UnixStream, source: u32, key: (u32, u32)) -> Self {
        Connection::new(stream, source, key, State::Established)
    }

    /// The events to watch the host socket for.
    fn interest(&self) -> EventSet {
        let mut set = EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        if !self.tx_buf.is_empty() {
            set |= EventSet::OUT;
        }
        set
    }

    /// Starts watching the host socket.
    pub fn register(&mut self, events: &EventRegistry) -> std::io::Result<()> {
        self.writing = !self.tx_buf.is_empty();
        events.add(self.stream.as_raw_fd(), self.source, self.interest())
    }

    /// Watches for `EPOLLOUT` while guest data waits, and not otherwise.
    pub fn update_interest(&mut self, events: &EventRegistry) -> std::io::Result<()> {
        let writing = !self.tx_buf.is_empty();
        if writing != self.writing {
            events.modify(self.stream.as_raw_fd(), self.source, self.interest())?;
            self.writing = writing;
        }
        Ok(())
    }

    /// Whether the connection has something for the guest's receive queue.
    pub fn wants_rx(&self) -> bool {
        if self.send_request || self.send_response || self.send_credit_update {
            return true;
        }
        if self.state != State::Established || self.host_shut == SHUTDOWN_BOTH {
            return false;
        }
        if self.host_closed && (self.host_shut != 0 || self.guest_shut & SHUTDOWN_RCV != 0) {
            return true;
        }
        self.readable
            && self.host_shut == 0
            && self.guest_shut & SHUTDOWN_RCV == 0
            && (self.peer_credit() > 0 || !self.credit_requested)
    }

    /// How much more data the guest can take (VIRTIO 1.2, 5.10.6.3.1). A `fwd_cnt` ahead of
    /// what was sent leaves none.
    fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn reply(&mut self, op: u16, flags: u32, len: u32) -> Reply {
        self.last_fwd_cnt = self.fwd_cnt;
        Reply {
            local_port: self.local_port,
            peer_port: self.peer_port,
            op,
            flags,
            len,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// The host socket is ready for `events`. Returns false if writing to it failed.
    pub fn host_ready(&mut self, events: EventSet) -> bool {
        if events.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
            self.readable = true;
        }
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            self.readable = true;
            self.host_closed = true;
        }
        if events.contains(EventSet::OUT) || !self.tx_buf.is_empty() {
            return self.flush().is_ok();
        }
        true
    }

    /// Puts the connection's next packet into `pkt`: its handshake and credit messages
    /// first, then data from the host socket as far as the guest's credit goes, then the
    /// news that the host program shut down.
    pub fn fill_rx(&mut self, pkt: &mut RxPacket<'_>, guest_cid: u64) -> RxOutcome {
        let control = if std::mem::take(&mut self.send_request) {
            Some((OP_REQUEST, 0))
        } else if std::mem::take(&mut self.send_response) {
            Some((OP_RESPONSE, 0))
        } else if std::mem::take(&mut self.send_credit_update) {
            Some((OP_CREDIT_UPDATE, 0))
        } else if self.state != State::Established || self.host_shut == SHUTDOWN_BOTH {
            return RxOutcome::Nothing;
        } else if self.host_closed && (self.host_shut != 0 || self.guest_shut & SHUTDOWN_RCV != 0) {
            self.host_shut = SHUTDOWN_BOTH;
            Some((OP_SHUTDOWN, SHUTDOWN_BOTH))
        } else {
            None
        };
        if let Some((op, flags)) = control {
            return RxOutcome::Sent(self.reply(op, flags, 0).write(pkt, guest_cid));
        }
        if !self.readable || self.host_shut != 0 || self.guest_shut & SHUTDOWN_RCV != 0 {
            return RxOutcome::Nothing;
        }
        let credit = self.peer_credit();
        if credit == 0 {
            if std::mem::replace(&mut self.credit_requested, true) {
                return RxOutcome::Nothing;
            }
            let reply = self.reply(OP_CREDIT_REQUEST, 0, 0);
            return RxOutcome::Sent(reply.write(pkt, guest_cid));
        }
        self.read_host(pkt, guest_cid, credit)
    }

    /// Reads what the host program sent into `pkt`, at most `credit` bytes.
    fn read_host(&mut self, pkt: &mut RxPacket<'_>, guest_cid: u64, credit: u32) -> RxOutcome {
        // Receive buffers without room for data are given back before they get here, so
        // neither `else` is taken; were one, the reset still ends the connection's turn
        // (`Nothing` would leave it ready and the queue filling loop spinning).
        let Some(data) = pkt.data_slice() else {
            return RxOutcome::Reset;
        };
        let len = (data.len() as u32).min(credit).min(MAX_PKT_DATA) as usize;
        let Ok(mut buf) = data.subslice(0, len) else {
            return RxOutcome::Reset;
        };
        match (&self.stream).read_volatile(&mut buf) {
            Ok(0) => {
                // End of stream: the host program sends no more; it is gone altogether
                // if it also hung up.
                self.host_shut = if self.host_closed {
                    SHUTDOWN_BOTH
                } else {
                    SHUTDOWN_SEND
                };
                let reply = self.reply(OP_SHUTDOWN, self.host_shut, 0);
                RxOutcome::Sent(reply.write(pkt, guest_cid))
            }
            Ok(n) => {
                self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
                RxOutcome::Sent(self.reply(OP_RW, 0, n as u32).write(pkt, guest_cid))
            }
            Err(e) if would_block(&e) => {
                self.readable = false;
                RxOutcome::Nothing
            }
            Err(_) => RxOutcome::Reset,
        }
    }

    /// Takes the credit the guest advertises in any packet of the connection.
    pub fn peer_credit_from(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Handles one packet of the guest's for this connection (its credit already taken).
    pub fn guest_packet(
        &mut self,
        op: u16,
        flags: u32,
        data: Option<&VolatileSlice<'_, ()>>,
    ) -> TxOutcome {
        match op {
            OP_RESPONSE if self.state == State::Requested => {
                self.state = State::Established;
                let ok = format!("OK {}\n", self.local_port);
                self.preamble = ok.len();
                self.tx_buf.extend_from_slice(ok.as_bytes());
                keep_if(self.flush().is_ok())
            }
            OP_RW => keep_if(self.guest_data(data).is_ok()),
            OP_CREDIT_UPDATE => TxOutcome::Keep,
            OP_CREDIT_REQUEST => {
                self.send_credit_update = true;
                TxOutcome::Keep
            }
            OP_SHUTDOWN if self.state == State::Established => self.guest_shutdown(flags),
            OP_RST => TxOutcome::Forget,
            // A request for a connection that exists, a response out of turn, a shutdown
            // before the handshake: the guest is confused, and the connection goes.
            OP_REQUEST | OP_RESPONSE | OP_SHUTDOWN => TxOutcome::Reset,
            // An unknown operation is ignored.
            _ => TxOutcome::Keep,
        }
    }

    /// Data from the guest: straight to the host socket while nothing waits, else behind
    /// what waits. A guest that sends beyond its credit loses the connection.
    fn guest_data(&mut self, data: Option<&VolatileSlice<'_, ()>>) -> Result<(), ()> {
        if self.state != State::Established || self.guest_shut & SHUTDOWN_SEND != 0 {
            return Err(());
        }
        let Some(data) = data else {
            return Ok(());
        };
        let mut written = 0;
        while self.tx_buf.is_empty() && written < data.len() {
            let rest = data
                .subslice(written, data.len() - written)
                .map_err(|_| ())?;
            match (&self.stream).write_volatile(&rest) {
                Ok(0) => return Err(()),
                Ok(n) => written += n,
                Err(e) if would_block(&e) => break,
                Err(_) => return Err(()),
            }
        }
        self.forwarded(written);
        let rest = data.len() - written;
        if rest == 0 {
            return Ok(());
        }
        if self.tx_buf.len() - self.preamble + rest > BUF_ALLOC as usize {
            return Err(());
        }
        let at = self.tx_buf.len();
        self.tx_buf.resize(at + rest, 0);
        let rest_slice = data.subslice(written, rest).map_err(|_| ())?;
        rest_slice.copy_to(&mut self.tx_buf[at..]);
        Ok(())
    }

    /// `n` more guest bytes reached the host program.
    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        if self.fwd_cnt.wrapping_sub(self.last_fwd_cnt) >= CREDIT_UPDATE_THRESHOLD {
            self.send_credit_update = true;
        }
    }

    /// The guest shut down one way or both (its flags add up).
    fn guest_shutdown(&mut self, flags: u32) -> TxOutcome {
        self.guest_shut |= flags & SHUTDOWN_BOTH;
        if self.guest_shut & SHUTDOWN_RCV != 0 {
            // The host program's writes fail from now on, rather than fill a buffer nobody
            // reads.
            let _ = self.stream.shutdown(Shutdown::Read);
        }
        if self.guest_shut == SHUTDOWN_BOTH {
            self.closing = true;
        }
        keep_if(self.flush().is_ok())
    }

    /// Writes what waits to the host socket, as far as it takes it; then passes the guest's
    /// shutdown on. An error means the connection is broken.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while !self.tx_buf.is_empty() {
            match send(&self.stream, &self.tx_buf) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    let ours = n.min(self.preamble);
                    self.preamble -= ours;
                    self.forwarded(n - ours);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.guest_shut & SHUTDOWN_SEND != 0 && !self.write_shut {
            self.write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Both sides are through: the guest shut down both ways and its data reached the host
    /// program, or the host program is gone and the guest sends no more.
    pub fn finished(&self) -> bool {
        let flushed = self.tx_buf.is_empty();
        (self.closing && flushed)
            || (self.host_closed
                && self.host_shut == SHUTDOWN_BOTH
                && self.guest_shut & SHUTDOWN_SEND != 0)
    }
}

fn keep_if(ok: bool) -> TxOutcome {
    if ok {
        TxOutcome::Keep
    } else {
        TxOutcome::Reset
    }
}

fn would_block(e: &VolatileMemoryError) -> bool {
    matches!(e, VolatileMemoryError::IOError(e) if e.kind() == ErrorKind::WouldBlock)
}

/// Writes to a host socket without SIGPIPE when the host program has gone (`MSG_NOSIGNAL`):
/// a program that embeds kvmini need not ignore the signal.
fn send(stream: &UnixStream, buf: &[u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for `buf.len()` bytes and the descriptor is the stream's own.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}
