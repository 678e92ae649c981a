//! `--gdb tcp:HOST:PORT` / `--gdb unix:PATH` and `--gdb-wait`: where kvmini's GDB remote stub
//! listens, parsed and checked before the host is touched. Binding the socket happens when
//! the VM is built (a port in use or a path that exists is refused there); docs/gdb.md
//! explains the stub.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use super::Error;

/// Where the GDB stub listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GdbAddress {
    /// A TCP port on an address of this machine (`[...]` around an IPv6 address;
    /// `localhost` and an empty host, `tcp::1234`, are 127.0.0.1). Only addresses, no host
    /// names: kvmini is linked statically, and looking names up would take the C library's
    /// resolver along. The stub controls the whole VM, so it listens beyond the loopback
    /// address only when asked by address (`tcp:0.0.0.0:1234`). Port 0 lets the system pick
    /// one (kvmini prints which).
    Tcp(SocketAddr),
    /// A Unix socket kvmini creates at this path (which must not exist) and removes at exit.
    Unix(PathBuf),
}

impl std::fmt::Display for GdbAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GdbAddress::Tcp(addr) => write!(f, "tcp:{addr}"),
            GdbAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `tcp:HOST:PORT`, `tcp::PORT` or `unix:PATH`.
impl FromStr for GdbAddress {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::GdbAddress {
            value: s.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("no path after unix:"));
            }
            return Ok(GdbAddress::Unix(path.into()));
        }
        let Some(rest) = s.strip_prefix("tcp:") else {
            return Err(bad("write tcp:HOST:PORT, tcp::PORT or unix:PATH"));
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("no port: write tcp:HOST:PORT (tcp::PORT for localhost)"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad(&format!("'{port}' is not a port number (0 to 65535)")))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .ok_or_else(|| bad("an IPv6 address in [ ] lacks its ]"))?,
            None if host.contains(':') => {
                return Err(bad("put an IPv6 address in brackets: tcp:[::1]:PORT"))
            }
            None => host,
        };
        let ip = match host {
            "" | "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => host.parse().map_err(|_| {
                bad(&format!(
                    "'{host}' is not an IP address (host names are not looked up; localhost is 127.0.0.1)"
                ))
            })?,
        };
        Ok(GdbAddress::Tcp(SocketAddr::new(ip, port)))
    }
}

/// The GDB remote stub of a VM (`--gdb`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GdbConfig {
    /// Where it listens.
    pub address: GdbAddress,
    /// Stop before the guest's first instruction until a debugger attaches and continues
    /// (QEMU's `-S`); without it the guest runs at once and stops when a debugger attaches
    /// (QEMU's `-s`).
    pub wait: bool,
}

impl GdbConfig {
    /// A stub at `address` that lets the guest run until a debugger attaches.
    pub fn new(address: GdbAddress) -> Self {
        GdbConfig {
            address,
            wait: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> GdbAddress {
        GdbAddress::Tcp(SocketAddr::new(host.parse().unwrap(), port))
    }

    #[test]
    fn addresses_parse_as_qemu_writes_them() {
        assert_eq!("tcp:localhost:1234".parse(), Ok(tcp("127.0.0.1", 1234)));
        assert_eq!("tcp::1234".parse(), Ok(tcp("127.0.0.1", 1234)));
        assert_eq!("tcp:0.0.0.0:0".parse(), Ok(tcp("0.0.0.0", 0)));
        assert_eq!("tcp:[::1]:9".parse(), Ok(tcp("::1", 9)));
        assert_eq!(
            "unix:/tmp/kvmini.gdb".parse(),
            Ok(GdbAddress::Unix("/tmp/kvmini.gdb".into()))
        );
        assert_eq!(tcp("::1", 9).to_string(), "tcp:[::1]:9");
        assert_eq!(tcp("127.0.0.1", 9).to_string(), "tcp:127.0.0.1:9");
    }

    #[test]
    fn bad_addresses_say_what_to_write() {
        for (value, says) in [
            ("1234", "write tcp:HOST:PORT"),
            ("udp:host:1", "write tcp:HOST:PORT"),
            ("tcp:localhost", "no port"),
            ("tcp:host:99999", "'99999' is not a port number"),
            ("tcp:host:", "'' is not a port number"),
            ("tcp:::1:80", "brackets"),
            ("tcp:[::1:80", "lacks its ]"),
            ("tcp:example.org:80", "'example.org' is not an IP address"),
            ("unix:", "no path"),
        ] {
            let e = value.parse::<GdbAddress>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("--gdb {value}: ")), "{e}");
            assert!(e.contains(says), "{value}: {e}");
        }
    }
}
