//! From the user's device options to devices: open what they name (reported as bad input
//! before the guest starts), and the kernel parameters that announce them to Linux.

use super::block::Block;
use super::net::Net;
use super::rng::Rng;
use super::vsock::Vsock;
use super::{SetupError, VirtioDevice};
use crate::arch::x86_64::layout::{VIRTIO_FIRST_IRQ, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use crate::config::DeviceConfig;

/// The devices `config` asks for, in the order the guest finds them: the root disk, the
/// other disks, the network devices, vsock, the entropy device.
#[derive(Default)]
pub struct OpenDevices {
    /// The devices.
    pub devices: Vec<Box<dyn VirtioDevice>>,
    /// The root disk is read-only (asked, or not writable).
    pub root_read_only: Option<bool>,
}

impl std::fmt::Debug for OpenDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.devices.iter().map(|d| d.name()))
            .finish()
    }
}

/// Opens every device `config` names.
pub fn open(config: &DeviceConfig) -> Result<OpenDevices, SetupError> {
    let mut open = OpenDevices::default();
    // Each image's file, and whether the guest may write it.
    let mut files = Vec::new();
    for (i, disk) in config.all_disks().enumerate() {
        let block = Block::open(disk)?;
        if block.read_only() && !disk.read_only {
            eprintln!(
                "kvmini: {} is not writable: the guest gets it read-only",
                disk.path.display()
            );
        }
        if let Some(id) = block.file_id() {
            let rw = !block.read_only();
            if files.iter().any(|&(f, w)| f == id && (w || rw)) {
                return Err(SetupError::new(
                    "--disk",
                    disk.path.display(),
                    "the same file is already a disk of this VM, and one of them is writable"
                        .into(),
                ));
            }
            files.push((id, rw));
        }
        block.lock(&disk.path)?;
        if i == 0 && config.root.is_some() {
            open.root_read_only = Some(block.read_only());
        }
        open.devices.push(Box::new(block));
    }
    for net in &config.nets {
        open.devices.push(Box::new(Net::open(net)?));
    }
    if let Some(vsock) = &config.vsock {
        open.devices.push(Box::new(Vsock::open(vsock)?));
    }
    if config.rng {
        open.devices.push(Box::new(Rng));
    }
    Ok(open)
}

/// Where device `index` is: its MMIO window and its interrupt line (an IO-APIC pin).
pub fn slot(index: usize) -> (u64, u32) {
    (
        VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE,
        VIRTIO_FIRST_IRQ + index as u32,
    )
}

/// The kernel parameters for `open`: a `virtio_mmio.device=` for each device (the
/// `VIRTIO_MMIO_CMDLINE_DEVICES` convention) and, with a root disk, `root=/dev/vda` with
/// `ro` or `rw`.
pub fn cmdline_params(open: &OpenDevices) -> String {
    let mut params: Vec<String> = (0..open.devices.len())
        .map(|i| {
            let (base, irq) = slot(i);
            format!(
                "virtio_mmio.device={}K@{base:#x}:{irq}",
                VIRTIO_MMIO_SIZE >> 10
            )
        })
        .collect();
    if let Some(ro) = open.root_read_only {
        params.push(format!("root=/dev/vda {}", if ro { "ro" } else { "rw" }));
    }
    params.join(" ")
}
