//! The virtio device options of `kvmini run` and `kvmini restore`.

use kvmini::config::{DeviceConfig, DiskConfig, NetConfig, VsockConfig};

/// Each command that takes them gives the options their heading.
#[derive(clap::Args, Debug)]
pub struct DeviceArgs {
    /// A raw disk image as a virtio block device: /dev/vda, /dev/vdb, ... in the order given
    /// (after --root). ro: the guest may only read it (also when kvmini may not write the
    /// file); id=ID: what the guest reads as its serial [default: the file name]. Repeatable.
    #[arg(long, value_name = "PATH[,ro][,id=ID]")]
    disk: Vec<DiskConfig>,

    /// The guest's root file system: a disk like --disk that comes first (/dev/vda), with
    /// "root=/dev/vda rw" (or "ro") on the kernel command line; kvmini's initramfs mounts
    /// it (ext4) and switches to it.
    #[arg(long, value_name = "PATH[,ro]")]
    root: Option<DiskConfig>,

    /// A virtio network device on the TAP device NAME; kvmini creates the TAP when it does not
    /// exist (which needs CAP_NET_ADMIN). mac: the guest's address [default: derived from NAME].
    /// The guest configures its address itself (ifconfig or ip; ip= on the command line of a
    /// kernel with CONFIG_IP_PNP): no DHCP, no offloads. See docs/networking.md. Repeatable.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    net: Vec<NetConfig>,

    /// A virtio vsock device; the guest's context ID is N (3 or more). Host programs reach
    /// the guest through the Unix socket PATH (send "CONNECT <port>\n", get "OK <hostport>\n");
    /// a guest's connection to port P of the host (CID 2) goes to the Unix socket PATH_P.
    #[arg(long, value_name = "cid=N,uds=PATH")]
    vsock: Option<VsockConfig>,

    /// A virtio entropy device, fed by the host's getrandom.
    #[arg(long)]
    rng: bool,
}

impl DeviceArgs {
    /// The devices as the library takes them.
    pub fn to_config(&self) -> DeviceConfig {
        DeviceConfig {
            root: self.root.clone(),
            disks: self.disk.clone(),
            nets: self.net.clone(),
            vsock: self.vsock.clone(),
            rng: self.rng,
        }
    }
}
