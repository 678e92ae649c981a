//! Finding what a comparison needs on this machine, before anything is built: the OCI
//! runtime, the built guests and the host's static busybox.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{bundle, Error, DEFAULT_RUNTIME};

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The runtime's path: `given` if it names a file, else looked up on `PATH` (and in the sbin
/// directories, which a non-root `PATH` may lack).
pub fn find_runtime(given: Option<&Path>) -> Result<PathBuf, Error> {
    let name = given.unwrap_or(Path::new(DEFAULT_RUNTIME));
    let install = "install runc (apt-get install runc on Debian and Ubuntu) or name another \
                   OCI runtime with --runtime PATH";
    if name.components().count() > 1 || name.is_absolute() {
        return if is_executable(name) {
            Ok(name.to_path_buf())
        } else {
            Err(Error::NoRuntime(format!(
                "the OCI runtime {} does not exist or is not an executable file: {install}",
                name.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::NoRuntime(format!(
                "the OCI runtime `{}` is not on PATH: {install}",
                name.display()
            ))
        })
}

/// The first line `RUNTIME --version` prints, or why there is none.
pub(crate) fn runtime_version(runtime: &Path) -> String {
    match Command::new(runtime).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Ok(out) => format!("unknown: --version exited with {}", out.status),
        Err(e) => format!("unknown: {e}"),
    }
}

/// Where the guests are: `given`, else `guest/build` in the current directory, else in the
/// source tree this binary was built in (`target/<profile>/kvmini`).
pub(crate) fn find_guests(given: Option<&Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    let here = PathBuf::from("guest/build");
    if here.is_dir() {
        return here;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .map(|dir| dir.join("guest/build"))
                .find(|d| d.is_dir())
        })
        .unwrap_or(here)
}

pub(crate) fn require(path: PathBuf, how: &str) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            path,
            how: how.into(),
        })
    }
}

/// The host's busybox, which must be the static one (it runs inside a root file system with
/// no libraries).
pub(crate) fn host_busybox() -> Result<PathBuf, Error> {
    let install = "install Debian's busybox-static (apt-get install busybox-static)";
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Busybox(format!("busybox is not installed: {install}")))?;
    match bundle::is_static_elf(&path) {
        Ok(true) => Ok(path),
        Ok(false) => Err(Error::Busybox(format!(
            "{} is not a statically linked program, so it cannot run alone in a container: {install}",
            path.display()
        ))),
        Err(e) => Err(Error::Busybox(format!("cannot read {}: {e}", path.display()))),
    }
}
