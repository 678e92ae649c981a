//! Start-up: launch to the first byte of the guest's greeting and to exit, and peak RSS, of
//! kvmini on `hello.elf` and `hello16.bin`, of the floor on `hello16.bin`, and of QEMU's
//! microvm and Firecracker on `hello.elf`.

use std::path::Path;

use serde::Serialize;

use super::{
    failure_lines, header_lines, measure_all, timing_rows, Context, Section, Subject, FLOOR, GUESTS,
};
use crate::host::{self, Peer};
use crate::report::Row;

/// The greeting of hello.elf: its first byte is the "first byte".
pub const ELF_GREETING: &str = "Hello from a 64-bit ELF kernel";
/// The greeting of hello16.bin.
pub const REAL_GREETING: &str = "Hello from real mode";
/// Where Firecracker's configuration is written.
const FIRECRACKER_CONFIG: &str = "bench/build/firecracker.json";

/// The start-up section.
pub struct Startup {
    /// kvmini hello.elf, kvmini hello16.bin, floor hello16.bin, QEMU, Firecracker.
    pub subjects: Vec<Subject>,
}

impl Startup {
    /// The subjects; `root` is the checkout (Firecracker's config names the kernel by its
    /// whole path).
    pub fn new(cx: &Context, root: &Path, qemu: &Peer) -> Startup {
        let elf = format!("{GUESTS}/hello.elf");
        let real = format!("{GUESTS}/hello16.bin");
        let kvmini = cx.kvmini();
        Startup {
            subjects: vec![
                Subject::new("kvmini hello.elf", &kvmini, &["run", &elf], Some(0))
                    .greeting(ELF_GREETING),
                Subject::new("kvmini hello16.bin", &kvmini, &["run", &real], Some(16))
                    .greeting(REAL_GREETING),
                Subject::new("floor hello16.bin", FLOOR, &[&real], Some(16))
                    .greeting(REAL_GREETING),
                qemu_subject(qemu),
                firecracker(root),
            ],
        }
    }

    /// The subject called `name`.
    pub fn subject(&self, name: &str) -> &Subject {
        self.subjects
            .iter()
            .find(|s| s.name == name)
            .expect("subject exists")
    }
}

impl Section for Startup {
    fn commands(&self) -> Vec<(String, String)> {
        header_lines(&self.subjects)
    }

    fn measure(&mut self, keep: bool) {
        measure_all(&mut self.subjects, keep);
    }

    fn rows(&self) -> Vec<Row> {
        timing_rows(&self.subjects, true)
    }

    fn failures(&self) -> Vec<String> {
        failure_lines(&self.subjects)
    }

    fn fatal(&self) -> bool {
        self.subjects.iter().any(|s| !s.peer && s.failure.is_some())
    }
}

/// QEMU's microvm booting hello.elf: the command from the guest's README.
fn qemu_subject(qemu: &Peer) -> Subject {
    let hello = format!("{GUESTS}/hello.elf");
    Subject::new(
        "QEMU microvm hello.elf",
        &qemu.program,
        &[
            "-M",
            "microvm",
            "-accel",
            "kvm",
            // `-cpu host` as the other QEMU runs, less what makes QEMU abort on AMD hosts
            // ("failed to set MSR 0x10a") and what the host cannot emulate.
            "-cpu",
            "host,-cx16,-arch-capabilities",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            &hello,
        ],
        None,
    )
    .greeting(ELF_GREETING)
    .peer(qemu.absent.clone())
}

/// Firecracker's configuration file: hello.elf, no drives, no network, 1 vCPU, 128 MiB.
#[derive(Serialize)]
struct FirecrackerConfig {
    #[serde(rename = "boot-source")]
    boot_source: BootSource,
    drives: Vec<String>,
    #[serde(rename = "network-interfaces")]
    network_interfaces: Vec<String>,
    #[serde(rename = "machine-config")]
    machine_config: MachineConfig,
}

#[derive(Serialize)]
struct BootSource {
    kernel_image_path: std::path::PathBuf,
    boot_args: &'static str,
}

#[derive(Serialize)]
struct MachineConfig {
    vcpu_count: u32,
    mem_size_mib: u32,
}

/// Writes Firecracker's configuration; why it could not, if it could not.
fn write_firecracker_config(root: &Path) -> Option<String> {
    let config = FirecrackerConfig {
        boot_source: BootSource {
            kernel_image_path: root.join(GUESTS).join("hello.elf"),
            boot_args: "console=ttyS0 reboot=k panic=1",
        },
        drives: Vec::new(),
        network_interfaces: Vec::new(),
        machine_config: MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
        },
    };
    let written = serde_json::to_string_pretty(&config)
        .map_err(std::io::Error::other)
        .and_then(|text| {
            std::fs::create_dir_all("bench/build")?;
            std::fs::write(FIRECRACKER_CONFIG, text + "\n")
        });
    written
        .err()
        .map(|e| format!("cannot write {FIRECRACKER_CONFIG}: {e}"))
}

/// Firecracker booting hello.elf from a config file (no API socket), when FIRECRACKER names it.
fn firecracker(root: &Path) -> Subject {
    let (program, absent) = match std::env::var("FIRECRACKER") {
        Err(_) => (
            "firecracker".to_string(),
            Some("set FIRECRACKER=/path/to/firecracker".to_string()),
        ),
        Ok(path) if !host::is_executable(Path::new(&path)) => (
            path.clone(),
            Some(format!("FIRECRACKER={path} is not an executable")),
        ),
        Ok(path) => {
            let absent = write_firecracker_config(root);
            (path, absent)
        }
    };
    Subject::new(
        "Firecracker hello.elf",
        &program,
        &["--no-api", "--config-file", FIRECRACKER_CONFIG],
        None,
    )
    .greeting(ELF_GREETING)
    .peer(absent)
}
