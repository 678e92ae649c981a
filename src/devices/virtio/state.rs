//! A virtio device as a snapshot keeps it: the transport's registers and queues
//! ([`TransportState`]) and what the device itself must find again when it is restored onto
//! a new backend ([`DeviceState`]). Plain data, serde-encoded with the rest of the VM's state
//! (`src/snapshot/state.rs`); the transport gives and takes it in `mmio_state.rs`, each
//! device through [`super::VirtioDevice::save`] and [`super::VirtioDevice::restore`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use virtio_queue::QueueState;

/// Bytes of a device's configuration space a snapshot keeps: more than any of kvmini's
/// devices has (virtio-blk's is 24 bytes).
pub const CONFIG_BYTES: usize = 64;

/// One split virtqueue: virtio-queue's `QueueState`, as serde data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSaved {
    /// The largest size the device offers.
    pub max_size: u16,
    /// The next available-ring entry the device will take.
    pub next_avail: u16,
    /// The next used-ring entry the device will fill.
    pub next_used: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` was negotiated.
    pub event_idx: bool,
    /// The size the driver chose.
    pub size: u16,
    /// The driver set the queue up (`QUEUE_READY`).
    pub ready: bool,
    /// Guest-physical address of the descriptor table.
    pub desc_table: u64,
    /// Guest-physical address of the available ring.
    pub avail_ring: u64,
    /// Guest-physical address of the used ring.
    pub used_ring: u64,
}

impl From<QueueState> for QueueSaved {
    fn from(q: QueueState) -> Self {
        QueueSaved {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<QueueSaved> for QueueState {
    fn from(q: QueueSaved) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// The virtio-mmio registers a driver set, and the queues.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// `VIRTIO_ID_*`: a restore refuses a device of another type in this slot.
    pub device_type: u32,
    /// The features the device offered; the restored device must offer the same.
    pub offered_features: u64,
    /// The device status register.
    pub status: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// The device runs (`DRIVER_OK` and no fault since).
    pub active: bool,
    /// The interrupt status bits the driver has not acknowledged.
    pub interrupt_status: u32,
    /// The queues, in the device's order.
    pub queues: Vec<QueueSaved>,
    /// The first [`CONFIG_BYTES`] of the configuration space, as the guest reads it.
    pub config: Vec<u8>,
}

/// What a device keeps besides its transport: what its new backend must match, and what the
/// guest already knows of it and must not see change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    /// virtio-blk.
    Block {
        /// The image it was saved with (absolute): a restore's default.
        path: PathBuf,
        /// The image's size in bytes (whole sectors): the guest knows it.
        capacity: u64,
        /// The guest may only read (`VIRTIO_BLK_F_RO`).
        read_only: bool,
        /// What `GET_ID` answers.
        id: [u8; 20],
    },
    /// virtio-net.
    Net {
        /// The TAP it was on: a restore's default.
        tap: String,
        /// The guest's MAC address.
        mac: [u8; 6],
    },
    /// virtio-vsock.
    Vsock {
        /// The guest's context ID.
        cid: u64,
        /// The Unix socket host programs connected to (absolute): a restore's default.
        uds: PathBuf,
    },
    /// virtio-rng: nothing to keep.
    Rng,
}

impl DeviceState {
    /// The device's name, as [`super::VirtioDevice::name`] says it.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceState::Block { .. } => "virtio-blk",
            DeviceState::Net { .. } => "virtio-net",
            DeviceState::Vsock { .. } => "virtio-vsock",
            DeviceState::Rng => "virtio-rng",
        }
    }

    /// The command-line option that gives this device again (`--disk PATH,ro`).
    pub fn option(&self) -> String {
        match self {
            DeviceState::Block {
                path, read_only, ..
            } => format!(
                "--disk {}{}",
                path.display(),
                if *read_only { ",ro" } else { "" }
            ),
            DeviceState::Net { tap, .. } => format!("--net tap={tap}"),
            DeviceState::Vsock { cid, uds } => format!("--vsock cid={cid},uds={}", uds.display()),
            DeviceState::Rng => "--rng".into(),
        }
    }
}

/// One virtio device in a snapshot, in slot order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioState {
    /// The device's own state.
    pub device: DeviceState,
    /// Its transport's.
    pub transport: TransportState,
}

/// An absolute form of `path` for a snapshot's defaults (as given when it cannot be made).
pub fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_state_survives_the_round_trip_and_each_device_names_its_option() {
        let q = QueueState {
            max_size: 256,
            next_avail: 7,
            next_used: 5,
            event_idx_enabled: true,
            size: 128,
            ready: true,
            desc_table: 0x1000,
            avail_ring: 0x2000,
            used_ring: 0x3000,
        };
        assert_eq!(QueueState::from(QueueSaved::from(q)), q);
        let disk = DeviceState::Block {
            path: "/img".into(),
            capacity: 512,
            read_only: true,
            id: [0; 20],
        };
        assert_eq!(disk.option(), "--disk /img,ro");
        let vsock = DeviceState::Vsock {
            cid: 3,
            uds: "/v.sock".into(),
        };
        assert_eq!(vsock.option(), "--vsock cid=3,uds=/v.sock");
        assert_eq!(vsock.name(), "virtio-vsock");
    }
}
