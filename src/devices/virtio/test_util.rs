//! What the device tests share: guest memory with a driver-side mock queue in it
//! (`virtio-queue`'s `MockSplitQueue`), and a context to hand a device.

use std::sync::Arc;

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Context, EventRegistry, Interrupt};
use crate::memory::GuestMem;

/// `VRING_DESC_F_NEXT`.
pub const NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
/// `VRING_DESC_F_WRITE`: the device writes this buffer.
pub const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

/// Where test buffers go: well above the queue's rings.
pub const BUFFERS: u64 = 0x10_0000;
/// Size of the test guest's memory.
pub const MEM_SIZE: usize = 4 << 20;

/// 4 MiB of guest memory.
pub fn memory() -> GuestMem {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A descriptor: `len` bytes at `addr`, with `flags`; `next` is filled in for chains.
pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// A device under test with one or more queues that a mock driver fills.
pub struct Harness {
    /// Guest memory.
    pub mem: GuestMem,
    /// The device's queues (the first is the mock's).
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub interrupt: Interrupt,
    /// The event loop the device may register with.
    pub events: EventRegistry,
    /// The epoll set behind `events` (device number 0), for tests that run the loop.
    pub epoll: Arc<vmm_sys_util::epoll::Epoll>,
    /// Each queue's (descriptor table, available ring, used ring).
    rings: Vec<(u64, u64, u64)>,
}

impl Harness {
    /// `count` queues of 16 entries, each at its own place in low memory, ready.
    pub fn new(count: usize) -> Self {
        let mem = memory();
        // The mock lays each queue out and zeroes its rings once; the harness then plays the
        // driver on those rings itself (a second mock at the same place would zero them).
        let (queues, rings) = (0..count)
            .map(|i| {
                let base = i as u64 * 0x1000;
                let mock = MockSplitQueue::create(&mem, GuestAddress(base), 16);
                // The mock puts the used ring 16 bytes after the available ring's start, over
                // its entries 8 to 15: the used ring goes further up instead.
                let used = base + 0x800;
                let rings = (mock.desc_table_addr().0, mock.avail_addr().0, used);
                let mut queue = mock.create_queue::<Queue>().unwrap();
                queue.set_used_ring_address(Some(used as u32), Some(0));
                (queue, rings)
            })
            .unzip();
        let epoll = Arc::new(vmm_sys_util::epoll::Epoll::new().unwrap());
        Harness {
            mem,
            queues,
            interrupt: Interrupt::new(None),
            events: EventRegistry::new(epoll.clone(), 0),
            epoll,
            rings,
        }
    }

    /// Queue `i`'s (descriptor table, available ring, used ring).
    pub fn rings(&self, i: usize) -> (u64, u64, u64) {
        self.rings[i]
    }

    /// Puts `descs` into queue `i`'s descriptor table from index `at` and makes the chains
    /// they form available (a chain starts after a descriptor without NEXT).
    pub fn add(&self, i: usize, descs: &[RawDescriptor], at: u16) {
        let (table, avail, _) = self.rings[i];
        let mut idx: u16 = self.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        let mut starts_chain = true;
        for (n, d) in descs.iter().enumerate() {
            let index = at + n as u16;
            self.mem
                .write_obj(*d, GuestAddress(table + u64::from(index) * 16))
                .unwrap();
            if starts_chain {
                let slot = GuestAddress(avail + 4 + u64::from(idx % 16) * 2);
                self.mem.write_obj(index, slot).unwrap();
                idx = idx.wrapping_add(1);
            }
            starts_chain = SplitDescriptor::from(*d).flags() & NEXT == 0;
        }
        self.mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
    }

    /// A context for the device.
    pub fn ctx(&mut self) -> Context<'_> {
        Context {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &self.interrupt,
            events: &self.events,
            used: 0,
        }
    }

    /// The used ring of queue `i`: (index, [(head, len)]).
    pub fn used(&self, i: usize) -> (u16, Vec<(u32, u32)>) {
        let base = self.rings[i].2;
        let idx: u16 = self.mem.read_obj(GuestAddress(base + 2)).unwrap();
        let elems = (0..idx)
            .map(|n| {
                let at = GuestAddress(base + 4 + u64::from(n % 16) * 8);
                let id: u32 = self.mem.read_obj(at).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(at.0 + 4)).unwrap();
                (id, len)
            })
            .collect();
        (idx, elems)
    }
}
