use std::io::Write as _;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::state::DeviceState;
use crate::devices::virtio::test_util::{desc, Harness, BUFFERS, NEXT, WRITE};

const HEADER: u64 = BUFFERS;
const DATA: u64 = BUFFERS + 0x1000;
const STATUS: u64 = BUFFERS + 0x3000;

/// A 16-sector image whose sector n is filled with the byte n.
fn image(read_only: bool) -> (tempfile_path::TempImage, Block) {
    let img = tempfile_path::TempImage::new(16);
    let mut config = DiskConfig::new(&img.path);
    config.read_only = read_only;
    config.id = Some("test-disk".into());
    let block = Block::open(&config).unwrap();
    (img, block)
}

mod tempfile_path {
    pub struct TempImage {
        pub path: std::path::PathBuf,
    }
    impl TempImage {
        pub fn new(sectors: u8) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "kvmini-blk-{}-{}.img",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let data: Vec<u8> = (0..sectors).flat_map(|s| [s; 512]).collect();
            std::fs::write(&path, data).unwrap();
            TempImage { path }
        }
    }
    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn header(h: &Harness, kind: u32, sector: u64) {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&kind.to_le_bytes());
    bytes[8..].copy_from_slice(&sector.to_le_bytes());
    h.mem.write_slice(&bytes, GuestAddress(HEADER)).unwrap();
}

fn status(h: &Harness) -> u8 {
    h.mem.read_obj(GuestAddress(STATUS)).unwrap()
}

#[test]
fn reads_the_sectors_asked_for_and_reports_ok() {
    let (_img, mut block) = image(false);
    let mut h = Harness::new(1);
    header(&h, VIRTIO_BLK_T_IN, 3);
    h.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    h.add(
        0,
        &[
            desc(HEADER, 16, NEXT, 1),
            desc(DATA, 1024, NEXT | WRITE, 2),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    );
    block.process_queue(0, &mut h.ctx()).unwrap();
    let mut data = [0u8; 1024];
    h.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert!(data[..512].iter().all(|&b| b == 3) && data[512..].iter().all(|&b| b == 4));
    assert_eq!(status(&h), VIRTIO_BLK_S_OK as u8);
    assert_eq!(h.used(0), (1, vec![(0, 1025)]));
    assert_eq!(h.interrupt.status(), crate::devices::virtio::INT_VRING);
}

#[test]
fn writes_reach_the_image_and_flush_succeeds() {
    let (img, mut block) = image(false);
    let mut h = Harness::new(1);
    header(&h, VIRTIO_BLK_T_OUT, 15);
    h.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    h.add(
        0,
        &[
            desc(HEADER, 16, NEXT, 1),
            desc(DATA, 512, NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    );
    block.process_queue(0, &mut h.ctx()).unwrap();
    assert_eq!(status(&h), VIRTIO_BLK_S_OK as u8);
    let on_disk = std::fs::read(&img.path).unwrap();
    assert!(on_disk[15 * 512..].iter().all(|&b| b == 0xab));
    assert!(on_disk[14 * 512..15 * 512].iter().all(|&b| b == 14));

    header(&h, VIRTIO_BLK_T_FLUSH, 0);
    h.add(
        0,
        &[desc(HEADER, 16, NEXT, 4), desc(STATUS, 1, WRITE, 0)],
        3,
    );
    block.process_queue(0, &mut h.ctx()).unwrap();
    assert_eq!(status(&h), VIRTIO_BLK_S_OK as u8);
    assert_eq!(h.used(0).0, 2);
}

#[test]
fn requests_past_the_end_fail_and_leave_the_image_alone() {
    let (img, mut block) = image(false);
    let mut h = Harness::new(1);
    // Sector 15 is the last: two sectors from there run past the end; so does a sector
    // number whose byte offset overflows.
    for (i, sector) in [15u64, u64::MAX / 256].into_iter().enumerate() {
        header(&h, VIRTIO_BLK_T_OUT, sector);
        let at = i as u16 * 3;
        h.add(
            0,
            &[
                desc(HEADER, 16, NEXT, at + 1),
                desc(DATA, 1024, NEXT, at + 2),
                desc(STATUS, 1, WRITE, 0),
            ],
            at,
        );
        block.process_queue(0, &mut h.ctx()).unwrap();
        assert_eq!(status(&h), VIRTIO_BLK_S_IOERR as u8, "sector {sector}");
    }
    let on_disk = std::fs::read(&img.path).unwrap();
    assert!(on_disk[15 * 512..].iter().all(|&b| b == 15));
}

#[test]
fn a_read_only_disk_refuses_writes_and_says_so_in_its_features() {
    let (img, mut block) = image(true);
    assert_ne!(block.features() & (1 << VIRTIO_BLK_F_RO), 0);
    let mut h = Harness::new(1);
    header(&h, VIRTIO_BLK_T_OUT, 0);
    h.add(
        0,
        &[
            desc(HEADER, 16, NEXT, 1),
            desc(DATA, 512, NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    );
    block.process_queue(0, &mut h.ctx()).unwrap();
    assert_eq!(status(&h), VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(std::fs::read(&img.path).unwrap()[0], 0);
}

#[test]
fn get_id_answers_the_serial_and_unknown_requests_are_unsupported() {
    let (_img, mut block) = image(false);
    let mut h = Harness::new(1);
    header(&h, VIRTIO_BLK_T_GET_ID, 0);
    h.add(
        0,
        &[
            desc(HEADER, 16, NEXT, 1),
            desc(DATA, 20, NEXT | WRITE, 2),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    );
    block.process_queue(0, &mut h.ctx()).unwrap();
    let mut id = [0u8; 20];
    h.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..9], b"test-disk");
    assert_eq!(status(&h), VIRTIO_BLK_S_OK as u8);

    header(&h, 0x1234, 0);
    h.add(
        0,
        &[desc(HEADER, 16, NEXT, 4), desc(STATUS, 1, WRITE, 0)],
        3,
    );
    block.process_queue(0, &mut h.ctx()).unwrap();
    assert_eq!(status(&h), VIRTIO_BLK_S_UNSUPP as u8);
}

#[test]
fn hostile_chains_fail_the_request_and_the_device_goes_on() {
    let (_img, mut block) = image(false);
    let mut h = Harness::new(1);
    header(&h, VIRTIO_BLK_T_IN, 0);
    let outside = crate::devices::virtio::test_util::MEM_SIZE as u64 + 0x1000;
    // Data outside guest memory: nothing can be answered.
    h.add(
        0,
        &[
            desc(HEADER, 16, NEXT, 1),
            desc(outside, 512, NEXT | WRITE, 2),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    );
    // A header of the wrong size.
    h.add(0, &[desc(HEADER, 8, NEXT, 4), desc(STATUS, 1, WRITE, 0)], 3);
    // Data in the wrong direction: a read into a buffer the device may only read.
    h.add(
        0,
        &[
            desc(HEADER, 16, NEXT, 6),
            desc(DATA, 512, NEXT, 7),
            desc(STATUS, 1, WRITE, 0),
        ],
        5,
    );
    // No status byte at all.
    h.add(0, &[desc(HEADER, 16, 0, 0)], 8);
    block.process_queue(0, &mut h.ctx()).unwrap();
    let (idx, used) = h.used(0);
    assert_eq!(idx, 4, "every chain is returned to the driver");
    assert_eq!(used[0], (0, 0));
    assert_eq!(used[3], (8, 0));
    assert_eq!(status(&h), VIRTIO_BLK_S_IOERR as u8);

    // A chain that loops back on itself ends at the queue size, and a good request after
    // all that still works.
    h.add(0, &[desc(HEADER, 16, NEXT, 9)], 9);
    block.process_queue(0, &mut h.ctx()).unwrap();
    header(&h, VIRTIO_BLK_T_IN, 1);
    h.add(
        0,
        &[
            desc(HEADER, 16, NEXT, 11),
            desc(DATA, 512, NEXT | WRITE, 12),
            desc(STATUS, 1, WRITE, 0),
        ],
        10,
    );
    block.process_queue(0, &mut h.ctx()).unwrap();
    assert_eq!(status(&h), VIRTIO_BLK_S_OK as u8);
    assert_eq!(h.mem.read_obj::<u8>(GuestAddress(DATA)).unwrap(), 1);
    let _ = std::io::stderr().flush();
}

#[test]
fn bad_images_are_refused_with_the_reason() {
    let dir = std::env::temp_dir();
    let e = Block::open(&DiskConfig::new(&dir)).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let e = Block::open(&DiskConfig::new("/nonexistent/kvmini.img")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--disk /nonexistent/kvmini.img: "),
        "{e}"
    );
}

#[test]
fn a_locked_image_is_refused() {
    let (img, block) = image(false);
    block.lock(&img.path).unwrap();
    let other = Block::open(&DiskConfig::new(&img.path)).unwrap();
    let e = other.lock(&img.path).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
}

#[test]
fn a_restored_disk_needs_the_saved_size_and_keeps_the_saved_id() {
    let (_img, saved) = image(false);
    let state = saved.save();
    let DeviceState::Block { capacity, .. } = &state else {
        panic!("{state:?}")
    };
    assert_eq!(*capacity, 16 * 512);

    // Another image of the same size, with its own name: it answers with the saved ID.
    let other = tempfile_path::TempImage::new(16);
    let mut block = Block::open(&DiskConfig::new(&other.path)).unwrap();
    block.restore(&state).unwrap();
    assert_eq!(&block.id[..9], b"test-disk");

    let small = tempfile_path::TempImage::new(8);
    let err = Block::open(&DiskConfig::new(&small.path))
        .unwrap()
        .restore(&state)
        .unwrap_err();
    assert!(
        err.contains("holds 4 KiB (8 sectors), and the snapshot's disk held 8 KiB (16 sectors)"),
        "{err}"
    );
    let mut ro = DiskConfig::new(&other.path);
    ro.read_only = true;
    let err = Block::open(&ro).unwrap().restore(&state).unwrap_err();
    assert!(err.contains("is read-only here"), "{err}");
    let err = Block::open(&DiskConfig::new(&other.path))
        .unwrap()
        .restore(&DeviceState::Rng)
        .unwrap_err();
    assert!(err.contains("it is a virtio-blk"), "{err}");
}
