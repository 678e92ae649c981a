//! What a hostile guest or a confused host program may send: dropped or answered with a
//! reset, and the device goes on.

use std::io::Write;

use super::*;
use crate::devices::virtio::test_util::MEM_SIZE;
use crate::devices::virtio::vsock::conn::BUF_ALLOC;

/// Puts raw descriptors on the transmit queue and lets the device take them.
fn send_raw(g: &mut Guest, hdr: Hdr, descs: &[virtio_queue::desc::RawDescriptor]) {
    g.h.mem
        .write_slice(&hdr.encode(), GuestAddress(TX_HDR))
        .unwrap();
    g.h.add(TX_QUEUE, descs, 0);
    g.dev.process_queue(TX_QUEUE, &mut g.h.ctx()).unwrap();
}

#[test]
fn malformed_connect_lines_close_the_host_stream() {
    let mut g = Guest::new();
    g.give_rx(4);
    let lines: [&[u8]; 5] = [
        b"CONNECT abc\n",
        b"CONNECT 99999999999\n",
        b"connect 5\n",
        b"CONNECT \n",
        &[b'7'; 40],
    ];
    for line in lines {
        let mut host = g.host_connect();
        host.write_all(line).unwrap();
        g.pump();
        assert!(at_eof(&mut host), "{:?}", String::from_utf8_lossy(line));
    }
    // A program that gives up before the newline is forgotten too.
    let mut host = g.host_connect();
    host.write_all(b"CONNECT 1").unwrap();
    g.pump();
    drop(host);
    g.pump();
    assert!(g.recv().is_empty());
    assert_eq!(g.dev.connections(), 0);
}

#[test]
fn packets_not_from_the_guest_or_not_for_the_host_are_dropped() {
    let mut g = Guest::new();
    g.give_rx(4);
    let mut hdr = Hdr::to_host(OP_REQUEST, 1, 2);
    hdr.src_cid = 7;
    g.send(hdr, &[]);
    let mut hdr = Hdr::to_host(OP_REQUEST, 1, 2);
    hdr.dst_cid = 5;
    g.send(hdr, &[]);
    assert!(g.recv().is_empty());
    assert_eq!(g.dev.connections(), 0);
    assert_eq!(g.h.used(TX_QUEUE).0, 2, "both chains are returned");
}

#[test]
fn unknown_operations_types_and_connections_are_reset() {
    let mut g = Guest::new();
    g.give_rx(8);
    g.send(Hdr::to_host(0x99, 10, 20), &[]);
    let mut dgram = Hdr::to_host(OP_REQUEST, 11, 21);
    dgram.type_ = 2;
    g.send(dgram, &[]);
    g.send(Hdr::to_host(OP_RW, 12, 22), b"data for nobody");
    g.send(Hdr::to_host(OP_RST, 13, 23), &[]);
    let pkts = g.recv();
    let resets: Vec<_> = pkts
        .iter()
        .map(|(h, _)| (h.op, h.src_port, h.dst_port))
        .collect();
    assert_eq!(
        resets,
        [(OP_RST, 20, 10), (OP_RST, 21, 11), (OP_RST, 22, 12)]
    );

    // An unknown operation on a live connection is ignored.
    let (mut host, local) = g.host_initiated(1234);
    g.send(Hdr::to_host(0x99, 1234, local), &[]);
    g.send(Hdr::to_host(OP_RW, 1234, local), b"still here");
    let mut got = [0u8; 10];
    std::io::Read::read_exact(&mut host, &mut got).unwrap();
    assert_eq!(&got, b"still here");
}

#[test]
fn malformed_chains_are_dropped_and_the_device_goes_on() {
    let mut g = Guest::new();
    g.give_rx(4);
    let outside = MEM_SIZE as u64 + 0x1000;
    let request = Hdr::to_host(OP_REQUEST, 1, 2);
    // A header outside guest memory.
    send_raw(&mut g, request, &[desc(outside, 44, 0, 0)]);
    // A header descriptor too short for a header.
    send_raw(&mut g, request, &[desc(TX_HDR, 20, 0, 0)]);
    // A header the device would have to write.
    send_raw(&mut g, request, &[desc(TX_HDR, 44, WRITE, 0)]);
    // Data longer than its descriptor, and data outside guest memory.
    let mut rw = Hdr::to_host(OP_RW, 1, 2);
    rw.len = 4096;
    send_raw(
        &mut g,
        rw,
        &[desc(TX_HDR, 44, NEXT, 1), desc(TX_DATA, 16, 0, 0)],
    );
    send_raw(
        &mut g,
        rw,
        &[desc(TX_HDR, 44, NEXT, 1), desc(outside, 4096, 0, 0)],
    );
    // Data announced and missing.
    send_raw(&mut g, rw, &[desc(TX_HDR, 44, 0, 0)]);
    // More data than any packet may carry.
    rw.len = u32::MAX;
    send_raw(
        &mut g,
        rw,
        &[desc(TX_HDR, 44, NEXT, 1), desc(TX_DATA, 4096, 0, 0)],
    );
    assert_eq!(g.h.used(TX_QUEUE).0, 7, "every chain is returned");
    assert!(g.recv().is_empty());

    // A well-formed request still gets its answer.
    g.send(Hdr::to_host(OP_REQUEST, 3, 4), &[]);
    assert_eq!(g.recv()[0].0.op, OP_RST);
}

#[test]
fn unusable_receive_buffers_are_returned_empty() {
    let mut g = Guest::new();
    let outside = MEM_SIZE as u64 + 0x1000;
    // Read-only, outside memory, too short for a header, no room for data.
    g.h.add(RX_QUEUE, &[desc(RX_BASE, 44, 0, 0)], 0);
    g.h.add(RX_QUEUE, &[desc(outside, 4096, WRITE, 0)], 1);
    g.h.add(RX_QUEUE, &[desc(RX_BASE, 20, WRITE, 0)], 2);
    g.h.add(
        RX_QUEUE,
        &[
            desc(RX_BASE, 44, WRITE | NEXT, 4),
            desc(RX_BASE + 0x100, 0, WRITE, 0),
        ],
        3,
    );
    g.send(Hdr::to_host(OP_REQUEST, 5, 6), &[]);
    let (idx, used) = g.h.used(RX_QUEUE);
    assert_eq!(idx, 4);
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");

    // The reset waits for a good buffer.
    g.h.add(
        RX_QUEUE,
        &[
            desc(RX_BASE, 44, WRITE | NEXT, 6),
            desc(RX_BASE + 0x100, 64, WRITE, 0),
        ],
        5,
    );
    g.dev.process_queue(RX_QUEUE, &mut g.h.ctx()).unwrap();
    let (idx, used) = g.h.used(RX_QUEUE);
    assert_eq!((idx, used[4]), (5, (5, 44)));
}

#[test]
fn a_guest_that_sends_beyond_its_credit_loses_the_connection() {
    let mut g = Guest::new();
    g.give_rx(8);
    let listener = std::os::unix::net::UnixListener::bind(port_path(&g.uds(), 7000)).unwrap();
    g.send(Hdr::to_host(OP_REQUEST, 700, 7000), &[]);
    assert_eq!(g.recv()[0].0.op, OP_RESPONSE);
    let (_stream, _) = listener.accept().unwrap();
    // The host program reads nothing; the guest ignores the credit it was given.
    let chunk = vec![0x5a; 64 << 10];
    let mut sent = 0;
    let op = loop {
        g.send(Hdr::to_host(OP_RW, 700, 7000), &chunk);
        sent += chunk.len();
        let pkts = g.recv();
        if let Some((hdr, _)) = pkts.iter().find(|(h, _)| h.op != OP_CREDIT_UPDATE) {
            break hdr.op;
        }
        g.give_rx(pkts.len() as u16);
        assert!(sent < 64 << 20, "never reset");
    };
    assert_eq!(op, OP_RST);
    assert_eq!(g.dev.connections(), 0);
    assert!(sent > BUF_ALLOC as usize);
}

#[test]
fn resets_waiting_for_receive_buffers_are_bounded() {
    let mut g = Guest::new();
    // No receive buffers: each packet for no connection leaves a reset waiting.
    for port in 0..3000 {
        g.send(Hdr::to_host(OP_RW, port, 1), b"x");
    }
    let mut resets = 0;
    loop {
        g.give_rx(8);
        let pkts = g.recv();
        assert!(pkts.iter().all(|(h, _)| h.op == OP_RST));
        resets += pkts.len();
        if pkts.len() < 8 {
            break;
        }
    }
    assert_eq!(resets, super::super::muxer::MAX_RESETS);
}
