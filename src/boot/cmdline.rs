//! The kernel command line: the user's (or, for Linux, kvmini's default), the host's
//! additions, then ` -- ` and the arguments for init; and where it goes in guest memory.
//!
//! Source of truth: Linux's `Documentation/admin-guide/kernel-parameters.rst` (how the kernel
//! splits parameters from init's arguments at `--`, and its quoting).

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use super::error::CmdlineProblem;
use crate::arch::x86_64::layout::CMDLINE_START;
use crate::memory::GuestMem;

/// The command line kvmini gives Linux when the user gives none: the console on COM1, a
/// reboot through the i8042 (which kvmini treats as a clean stop), and a panic that reboots
/// at once instead of hanging.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

/// What goes on a kernel's command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct CmdlineArgs<'a> {
    /// The user's command line, if any.
    pub base: Option<&'a str>,
    /// Parameters this host needs on top (Linux only).
    pub host_params: Option<&'static str>,
    /// Parameters that announce the VM's devices (Linux only).
    pub device_params: &'a str,
    /// Arguments for the guest's init, after ` -- `.
    pub init_args: &'a [String],
}

impl CmdlineArgs<'_> {
    /// The command line for a kernel of `capacity` bytes at most: for Linux, the user's or
    /// kvmini's default plus the host parameters; for other kernels only what the user gave,
    /// and none at all when the user gave nothing.
    pub fn build(&self, linux: bool, capacity: usize) -> Result<Option<Cmdline>, CmdlineProblem> {
        if linux {
            let base = self.base.unwrap_or(DEFAULT_CMDLINE);
            let extra: Vec<&str> = self
                .host_params
                .into_iter()
                .chain(Some(self.device_params).filter(|p| !p.is_empty()))
                .collect();
            let extra = extra.join(" ");
            let extra = Some(extra.as_str()).filter(|e| !e.is_empty());
            build_cmdline(Some(base), extra, self.init_args, capacity).map(Some)
        } else if self.base.is_some() || !self.init_args.is_empty() {
            build_cmdline(self.base, None, self.init_args, capacity).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Joins `base`, `host_params` and the init arguments into a command line of at most
/// `capacity` bytes (NUL included).
pub fn build_cmdline(
    base: Option<&str>,
    host_params: Option<&str>,
    init_args: &[String],
    capacity: usize,
) -> Result<Cmdline, CmdlineProblem> {
    let build = |capacity| move |source| CmdlineProblem::Build { source, capacity };
    let mut cmdline = Cmdline::new(capacity).map_err(build(None))?;
    let mut kernel_args = false;
    for part in [base, host_params].into_iter().flatten() {
        if !part.trim().is_empty() {
            cmdline
                .insert_str(part)
                .map_err(build(Some(capacity - 1)))?;
            kernel_args = true;
        }
    }
    if !init_args.is_empty() {
        if !kernel_args {
            // Linux needs at least one kernel argument before the `--`.
            cmdline.insert_str("--").map_err(build(None))?;
        }
        let mut words = Vec::with_capacity(init_args.len());
        for arg in init_args {
            // The kernel splits init arguments at spaces but keeps "double-quoted" words whole.
            if arg.contains('"') {
                return Err(CmdlineProblem::Quote(arg.clone()));
            }
            words.push(if arg.is_empty() || arg.contains(char::is_whitespace) {
                format!("\"{arg}\"")
            } else {
                arg.clone()
            });
        }
        cmdline
            .insert_init_args(words.join(" "))
            .map_err(CmdlineProblem::InitArgs)?;
    }
    Ok(cmdline)
}

/// Its length in bytes, without the NUL.
pub fn len(cmdline: &Cmdline) -> Result<usize, CmdlineProblem> {
    cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .map_err(|source| CmdlineProblem::Build {
            source,
            capacity: None,
        })
}

/// Where a command line was put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Guest-physical address.
    pub addr: u64,
    /// Length without the NUL.
    pub len: usize,
}

/// Writes the command line at `CMDLINE_START`.
pub fn write_cmdline(mem: &GuestMem, cmdline: &Cmdline) -> Result<Placed, CmdlineProblem> {
    let len = len(cmdline)?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(CmdlineProblem::Place)?;
    Ok(Placed {
        addr: CMDLINE_START,
        len,
    })
}

/// The text of a command line, for reports.
pub fn text(cmdline: &Cmdline) -> Option<String> {
    cmdline
        .as_cstring()
        .ok()
        .map(|c| c.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Workarounds;

    fn joined(c: Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn cmdline_joins_defaults_host_params_and_init_args() {
        let pvm = Workarounds::PVM.cmdline.unwrap();
        let c = build_cmdline(
            Some(DEFAULT_CMDLINE),
            Some(pvm),
            &["uname".into(), "-r".into()],
            512,
        )
        .unwrap();
        assert_eq!(joined(c), format!("{DEFAULT_CMDLINE} {pvm} -- uname -r"));
        let c = build_cmdline(
            Some("x"),
            None,
            &["sh".into(), "-c".into(), "exit 7".into()],
            512,
        )
        .unwrap();
        assert_eq!(joined(c), "x -- sh -c \"exit 7\"");
        assert!(matches!(
            build_cmdline(Some("x"), None, &["a\"b".into()], 512),
            Err(CmdlineProblem::Quote(_))
        ));
        let c = build_cmdline(None, None, &["sh".into()], 512).unwrap();
        assert_eq!(joined(c), "-- -- sh");
        // Blank parameters are no kernel arguments either (found by the boot_args fuzz
        // target: the command line had init arguments only, which linux-loader refuses).
        let c = build_cmdline(Some(" "), Some("\u{b}"), &["sh".into()], 512).unwrap();
        assert_eq!(joined(c), "-- -- sh");
        let err = build_cmdline(Some(&"x".repeat(600)), None, &[], 512).unwrap_err();
        assert!(matches!(err, CmdlineProblem::Build { .. }));
        assert!(err.to_string().ends_with("(at most 511 bytes)"), "{err}");
    }

    #[test]
    fn only_linux_gets_a_default_and_the_host_parameters() {
        let mut args = CmdlineArgs {
            base: None,
            host_params: Some("noxsave"),
            device_params: "",
            init_args: &[],
        };
        let linux = args.build(true, 512).unwrap().unwrap();
        assert_eq!(joined(linux), format!("{DEFAULT_CMDLINE} noxsave"));
        args.device_params = "virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda rw";
        let linux = args.build(true, 512).unwrap().unwrap();
        assert_eq!(
            joined(linux),
            format!(
                "{DEFAULT_CMDLINE} noxsave virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda rw"
            )
        );
        args.device_params = "";
        assert!(args.build(false, 512).unwrap().is_none());
        let args = CmdlineArgs {
            base: Some("debug"),
            ..args
        };
        assert_eq!(joined(args.build(false, 512).unwrap().unwrap()), "debug");
    }
}
