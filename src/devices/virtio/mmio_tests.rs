use std::sync::Arc;

use super::*;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::test_util::{desc, memory, Harness, BUFFERS, WRITE};
use crate::devices::virtio::INT_CONFIG;

pub(crate) fn transport() -> MmioTransport {
    let epoll = Arc::new(vmm_sys_util::epoll::Epoll::new().unwrap());
    MmioTransport::new(
        Box::new(Rng),
        memory(),
        Interrupt::new(None),
        EventRegistry::new(epoll, 0),
    )
    .unwrap()
}

/// The transport's guest memory, for a test that plays the driver.
pub(crate) fn memory_of(t: &MmioTransport) -> crate::memory::GuestMem {
    t.mem.clone()
}

pub(crate) fn read(t: &mut MmioTransport, offset: u32) -> u32 {
    let mut data = [0u8; 4];
    t.read(u64::from(offset), &mut data);
    u32::from_le_bytes(data)
}

pub(crate) fn write(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

/// The driver's side of VIRTIO 1.2, 3.1.1, for a device with one queue of 16 at address 0
/// (where the test harness's mock queue is).
pub(crate) fn initialize(t: &mut MmioTransport, features_high: u32) {
    write(t, VIRTIO_MMIO_STATUS, 1);
    write(t, VIRTIO_MMIO_STATUS, 1 | 2);
    write(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    write(t, VIRTIO_MMIO_DRIVER_FEATURES, features_high);
    write(t, VIRTIO_MMIO_STATUS, 1 | 2 | 8);
    let (table, avail, used) = Harness::new(1).rings(0);
    write(t, VIRTIO_MMIO_QUEUE_SEL, 0);
    write(t, VIRTIO_MMIO_QUEUE_NUM, 16);
    write(t, VIRTIO_MMIO_QUEUE_DESC_LOW, table as u32);
    write(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail as u32);
    write(t, VIRTIO_MMIO_QUEUE_USED_LOW, used as u32);
    write(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

#[test]
fn identifies_itself_as_a_modern_virtio_mmio_device() {
    let mut t = transport();
    assert_eq!(read(&mut t, VIRTIO_MMIO_MAGIC_VALUE), MAGIC);
    assert_eq!(read(&mut t, VIRTIO_MMIO_VERSION), 2);
    assert_eq!(read(&mut t, VIRTIO_MMIO_DEVICE_ID), 4);
    write(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(read(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1");
    assert_eq!(read(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 64);
    // Registers are 32 bits wide; a byte read gets nothing.
    let mut byte = [0xffu8];
    t.read(0, &mut byte);
    assert_eq!(byte, [0xff]);
}

#[test]
fn features_ok_does_not_stick_for_a_legacy_driver_or_unoffered_features() {
    let mut t = transport();
    initialize(&mut t, 0);
    assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS) & 8, 0);
    let mut t = transport();
    initialize(&mut t, 1 | 0x8000_0000);
    assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS) & 8, 0);
    let mut t = transport();
    initialize(&mut t, 1);
    assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS) & 8, 8);
}

#[test]
fn driver_ok_starts_the_device_and_notifications_reach_it() {
    let mut t = transport();
    initialize(&mut t, 1);
    write(&mut t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
    assert!(t.active);
    // The request goes into the transport's own guest memory.
    let mock = virtio_queue::mock::MockSplitQueue::create(&t.mem, vm_memory::GuestAddress(0), 16);
    mock.add_desc_chains(&[desc(BUFFERS, 32, WRITE, 0)], 0)
        .unwrap();
    // A notification of another width than KVM matches is passed on to the queue's eventfd.
    write(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_eq!(t.queue_evts()[0].read().unwrap(), 1);
    t.queue_notified(0);
    assert_eq!(t.requests(), 1);
    assert_eq!(read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 1);
    write(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, 1);
    assert_eq!(read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

#[test]
fn a_queue_outside_memory_makes_the_device_need_a_reset_and_a_reset_clears_it() {
    let mut t = transport();
    initialize(&mut t, 1);
    write(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, 0xffff_f000);
    write(&mut t, VIRTIO_MMIO_QUEUE_USED_HIGH, 0x10);
    write(&mut t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
    assert!(!t.active);
    assert_ne!(
        read(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
        0
    );
    assert_eq!(read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    assert!(t.fault().unwrap().starts_with("virtio-rng: queue 0"));
    // Notifications are ignored until the driver resets the device.
    t.queue_notified(0);
    write(&mut t, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(read(&mut t, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(read(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    initialize(&mut t, 1);
    write(&mut t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
    assert!(t.active);
}

#[test]
fn an_available_index_that_jumps_past_the_queue_size_is_a_fault() {
    let mut t = transport();
    initialize(&mut t, 1);
    write(&mut t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
    let mock = virtio_queue::mock::MockSplitQueue::create(&t.mem, vm_memory::GuestAddress(0), 16);
    mock.avail().idx().store(100);
    t.queue_notified(0);
    assert_ne!(
        read(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
        0
    );
    assert!(!t.active);
}

#[test]
fn queue_registers_are_frozen_after_driver_ok() {
    let mut t = transport();
    initialize(&mut t, 1);
    write(&mut t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
    write(&mut t, VIRTIO_MMIO_QUEUE_NUM, 2);
    write(&mut t, VIRTIO_MMIO_QUEUE_READY, 0);
    assert_eq!(read(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_eq!(t.queues[0].size(), 16);
}
