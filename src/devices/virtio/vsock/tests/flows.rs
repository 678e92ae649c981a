//! Connections as they should go: both handshakes, data both ways, credit, shutdowns and
//! resets.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;

use super::*;
use crate::devices::virtio::vsock::conn::BUF_ALLOC;

#[test]
fn offers_a_vsock_device_with_the_guest_cid_in_its_configuration() {
    let g = Guest::new();
    assert_eq!(g.dev.device_type(), 19);
    assert_eq!(g.dev.queue_max_sizes().len(), 3);
    assert_eq!(g.dev.features(), 0);
    let mut config = [0xffu8; 8];
    g.dev.read_config(0, &mut config);
    assert_eq!(u64::from_le_bytes(config), GUEST_CID);
    let mut high = [0xffu8; 4];
    g.dev.read_config(4, &mut high);
    assert_eq!(high, [0; 4]);
}

#[test]
fn a_host_program_connects_to_a_guest_port_and_data_flows_both_ways() {
    let mut g = Guest::new();
    g.give_rx(4);
    let mut host = g.host_connect();
    host.write_all(b"CONNECT 1234\n").unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    let request = pkts[0].0;
    assert_eq!(
        (
            request.op,
            request.src_cid,
            request.dst_cid,
            request.dst_port
        ),
        (OP_REQUEST, HOST_CID, GUEST_CID, 1234)
    );
    assert_eq!(request.type_, TYPE_STREAM);
    assert!(request.src_port >= 1 << 30, "{request:?}");
    assert_eq!(request.buf_alloc, BUF_ALLOC);
    let local = request.src_port;

    g.send(Hdr::to_host(OP_RESPONSE, 1234, local), &[]);
    assert_eq!(read_line(&mut host), format!("OK {local}"));

    let mut rw = Hdr::to_host(OP_RW, 1234, local);
    g.send(rw, b"hello, host");
    let mut got = [0u8; 11];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello, host");

    host.write_all(b"hello, guest").unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    let (hdr, data) = &pkts[0];
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (OP_RW, local, 1234));
    assert_eq!(data, b"hello, guest");
    assert_eq!(hdr.fwd_cnt, 11, "kvmini passed on the guest's 11 bytes");

    // A second connection from the host gets another port.
    let (_host2, local2) = g.host_initiated(1234);
    assert_ne!(local2, local);
    assert_eq!(g.dev.connections(), 2);

    // The guest's credit request is answered.
    rw.op = OP_CREDIT_REQUEST;
    g.send(rw, &[]);
    let pkts = g.recv();
    assert_eq!(pkts[0].0.op, OP_CREDIT_UPDATE);
    assert_eq!((pkts[0].0.buf_alloc, pkts[0].0.fwd_cnt), (BUF_ALLOC, 11));
}

#[test]
fn the_host_stream_closes_when_nobody_listens_in_the_guest() {
    let mut g = Guest::new();
    g.give_rx(2);
    let mut host = g.host_connect();
    host.write_all(b"CONNECT 99\n").unwrap();
    g.pump();
    let request = g.recv()[0].0;
    g.send(Hdr::to_host(OP_RST, 99, request.src_port), &[]);
    assert!(at_eof(&mut host));
    assert_eq!(g.dev.connections(), 0);
    assert!(g.recv().is_empty(), "a reset is not answered");
}

#[test]
fn the_guest_connects_to_a_host_listener_on_uds_port() {
    let mut g = Guest::new();
    g.give_rx(4);
    let listener = UnixListener::bind(port_path(&g.uds(), 5000)).unwrap();
    g.send(Hdr::to_host(OP_REQUEST, 777, 5000), &[]);
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    let response = pkts[0].0;
    assert_eq!(
        (
            response.op,
            response.src_port,
            response.dst_port,
            response.dst_cid
        ),
        (OP_RESPONSE, 5000, 777, GUEST_CID)
    );
    let (stream, _) = listener.accept().unwrap();
    let mut stream = timeouts(stream);

    g.send(Hdr::to_host(OP_RW, 777, 5000), b"ping");
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    stream.write_all(b"pong").unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!((pkts[0].0.op, pkts[0].1.as_slice()), (OP_RW, &b"pong"[..]));

    // The guest closes: kvmini resets the connection and the host program sees the end.
    let mut shutdown = Hdr::to_host(OP_SHUTDOWN, 777, 5000);
    shutdown.flags = SHUTDOWN_BOTH;
    g.send(shutdown, &[]);
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (OP_RST, 777));
    assert!(at_eof(&mut stream));
    assert_eq!(g.dev.connections(), 0);
}

#[test]
fn the_guest_is_refused_when_nothing_listens_on_the_host_port() {
    let mut g = Guest::new();
    g.give_rx(2);
    g.send(Hdr::to_host(OP_REQUEST, 778, 5001), &[]);
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.src_port, pkts[0].0.dst_port),
        (OP_RST, 5001, 778)
    );
    assert_eq!(g.dev.connections(), 0);
}

#[test]
fn the_device_never_sends_more_than_the_guest_credit() {
    let mut g = Guest::new();
    g.give_rx(4);
    let mut host = g.host_connect();
    host.write_all(b"CONNECT 80\n").unwrap();
    g.pump();
    let local = g.recv()[0].0.src_port;
    let mut response = Hdr::to_host(OP_RESPONSE, 80, local);
    response.buf_alloc = 100;
    g.send(response, &[]);
    assert_eq!(read_line(&mut host), format!("OK {local}"));

    let sent: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    host.write_all(&sent).unwrap();
    g.pump();
    let pkts = g.recv();
    let data: Vec<u8> = pkts.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(data, sent[..100], "exactly the 100 bytes of credit");
    assert_eq!(pkts.last().unwrap().0.op, OP_CREDIT_REQUEST, "{pkts:?}");

    // The guest read 60 bytes: 60 more may come, and no more.
    let mut update = Hdr::to_host(OP_CREDIT_UPDATE, 80, local);
    (update.buf_alloc, update.fwd_cnt) = (100, 60);
    g.send(update, &[]);
    g.pump();
    let pkts = g.recv();
    let data: Vec<u8> = pkts
        .iter()
        .filter(|(h, _)| h.op == OP_RW)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(data, sent[100..160]);

    // All of it consumed, with a bigger buffer: the rest.
    (update.buf_alloc, update.fwd_cnt) = (4096, 160);
    g.give_rx(2);
    g.send(update, &[]);
    let pkts = g.recv();
    let data: Vec<u8> = pkts
        .iter()
        .filter(|(h, _)| h.op == OP_RW)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(data, sent[160..]);
}

#[test]
fn guest_data_the_host_does_not_read_yet_waits_and_arrives_intact() {
    let mut g = Guest::new();
    g.give_rx(8);
    let listener = UnixListener::bind(port_path(&g.uds(), 6000)).unwrap();
    g.send(Hdr::to_host(OP_REQUEST, 600, 6000), &[]);
    let response = g.recv()[0].0;
    assert_eq!(response.op, OP_RESPONSE);
    let (stream, _) = listener.accept().unwrap();
    let mut stream = timeouts(stream);

    // The guest sends as far as its credit goes while the host program reads nothing.
    let chunk = 16 << 10;
    let pattern = |at: usize, n: usize| (at..at + n).map(|i| (i % 251) as u8).collect::<Vec<_>>();
    let (mut sent, mut fwd_cnt) = (0usize, 0u32);
    let mut updates = 0;
    loop {
        for (hdr, _) in g.recv() {
            assert_eq!(hdr.op, OP_CREDIT_UPDATE);
            fwd_cnt = hdr.fwd_cnt;
            updates += 1;
            g.give_rx(1);
        }
        let credit = BUF_ALLOC as usize - (sent - fwd_cnt as usize);
        if credit < chunk {
            break;
        }
        g.send(Hdr::to_host(OP_RW, 600, 6000), &pattern(sent, chunk));
        sent += chunk;
        assert!(sent < 64 << 20, "the host socket never filled");
    }
    assert!(sent > fwd_cnt as usize, "some data waits in kvmini");

    // The host program reads; kvmini writes the rest as the socket drains.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while received.len() < sent {
        let n = stream.read(&mut buf).unwrap();
        assert_ne!(n, 0);
        received.extend_from_slice(&buf[..n]);
        g.pump();
        for (hdr, _) in g.recv() {
            assert_eq!(hdr.op, OP_CREDIT_UPDATE);
            fwd_cnt = hdr.fwd_cnt;
            updates += 1;
            g.give_rx(1);
        }
    }
    assert!(
        received == pattern(0, sent),
        "the data arrives whole and in order"
    );
    assert!(updates > 0);
    assert_eq!(
        fwd_cnt as usize, sent,
        "the last credit update counts every byte"
    );
}

#[test]
fn the_host_closing_shuts_the_connection_down_and_the_guest_reset_ends_it() {
    let mut g = Guest::new();
    g.give_rx(4);
    let (host, local) = g.host_initiated(1234);
    drop(host);
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.flags),
        (OP_SHUTDOWN, SHUTDOWN_BOTH)
    );
    g.send(Hdr::to_host(OP_RST, 1234, local), &[]);
    assert_eq!(g.dev.connections(), 0);
    assert!(g.recv().is_empty());
}

#[test]
fn a_half_close_from_the_host_still_lets_the_guest_send() {
    let mut g = Guest::new();
    g.give_rx(4);
    let (mut host, local) = g.host_initiated(1234);
    host.write_all(b"last words").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts.len(), 2, "{pkts:?}");
    assert_eq!(
        (pkts[0].0.op, pkts[0].1.as_slice()),
        (OP_RW, &b"last words"[..])
    );
    assert_eq!(
        (pkts[1].0.op, pkts[1].0.flags),
        (OP_SHUTDOWN, SHUTDOWN_SEND)
    );

    g.send(Hdr::to_host(OP_RW, 1234, local), b"reply");
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"reply");

    // The guest is done sending too: the host program sees the end of the stream.
    let mut shutdown = Hdr::to_host(OP_SHUTDOWN, 1234, local);
    shutdown.flags = SHUTDOWN_SEND;
    g.send(shutdown, &[]);
    assert!(at_eof(&mut host));
}

#[test]
fn without_receive_buffers_the_device_waits_and_resumes_on_notification() {
    let mut g = Guest::new();
    let mut host = g.host_connect();
    host.write_all(b"CONNECT 42\n").unwrap();
    g.pump();
    assert!(g.recv().is_empty());
    g.give_rx(1);
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].0.op, OP_REQUEST);
}

#[test]
fn a_reset_device_drops_its_connections_and_stops_watching_its_sockets() {
    let mut g = Guest::new();
    g.give_rx(4);
    let (mut host, _) = g.host_initiated(1234);
    let mut pending = g.host_connect();
    g.pump();
    g.dev.reset(&g.h.events);
    assert_eq!(g.dev.connections(), 0);
    assert!(at_eof(&mut host));
    assert!(at_eof(&mut pending));

    // The listener is not watched: a program that connects waits in the backlog...
    let mut waiting = g.host_connect();
    waiting.write_all(b"CONNECT 7\n").unwrap();
    assert!(g.epoll_quiet(), "nothing is watched after a reset");

    // ...until the driver sets the device up again.
    g.dev.activate(&mut g.h.ctx()).unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(
        (pkts.len(), pkts[0].0.op, pkts[0].0.dst_port),
        (1, OP_REQUEST, 7)
    );
}

#[test]
fn the_socket_file_is_replaced_when_stale_and_removed_with_the_device() {
    let dir = TempDir::new();
    let uds = dir.0.join("v.sock");
    drop(UnixListener::bind(&uds).unwrap());
    assert!(uds.exists(), "a stale socket file");
    let config = VsockConfig {
        cid: 3,
        uds: uds.clone(),
    };
    let dev = Vsock::open(&config).unwrap();
    assert!(std::os::unix::net::UnixStream::connect(&uds).is_ok());
    drop(dev);
    assert!(!uds.exists());

    let config = VsockConfig {
        cid: 3,
        uds: dir.0.join("missing/v.sock"),
    };
    let e = Vsock::open(&config).unwrap_err();
    assert!(e.to_string().starts_with("--vsock "), "{e}");
}
