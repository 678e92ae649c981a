//! A vsock device restored onto a new socket: the saved CID, the listener on the new path,
//! and the transport reset that tells the guest its connections are gone.

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::state::DeviceState;
use crate::devices::virtio::vsock::EVENT_QUEUE;

/// Where the guest's event buffer lies.
const EVENT_BUF: u64 = BUFFERS + 0x1_0000;

#[test]
fn a_restored_device_listens_on_its_new_socket_and_resets_the_guests_connections() {
    let mut g = Guest::new();
    g.give_rx(4);
    let (_host, _) = g.host_initiated(1234);
    let saved = g.dev.save();
    assert_eq!(
        saved,
        DeviceState::Vsock {
            cid: GUEST_CID,
            uds: g.uds()
        }
    );

    // The restored VM: the same guest memory and queues, a device on another socket.
    let dir = TempDir::new();
    let uds = dir.0.join("new.sock");
    let other_cid = VsockConfig {
        cid: 4,
        uds: uds.clone(),
    };
    let err = Vsock::open(&other_cid)
        .unwrap()
        .restore(&saved)
        .unwrap_err();
    assert!(err.contains("give cid=3"), "{err}");
    let config = VsockConfig {
        cid: GUEST_CID as u32,
        uds: uds.clone(),
    };
    let mut dev = Vsock::open(&config).unwrap();
    dev.restore(&saved).unwrap();
    g.h.add(EVENT_QUEUE, &[desc(EVENT_BUF, 4, WRITE, 0)], 0);
    g.h.mem
        .write_obj(0xffff_ffffu32, GuestAddress(EVENT_BUF))
        .unwrap();
    dev.resume(&mut g.h.ctx()).unwrap();
    assert_eq!(g.h.used(EVENT_QUEUE), (1, vec![(0, 4)]));
    let event: u32 = g.h.mem.read_obj(GuestAddress(EVENT_BUF)).unwrap();
    assert_eq!(event, 0, "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET");

    // Host programs reach the guest through the new socket.
    g.dev = dev;
    let mut host = timeouts(UnixStream::connect(&uds).unwrap());
    std::io::Write::write_all(&mut host, b"CONNECT 99\n").unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (OP_REQUEST, 99));
}
