//! virtio-net end to end: the Linux guest built by `make linux` on a TAP device in a network
//! namespace the test makes (so the host's own network is never touched), pinging the host
//! and exchanging a TCP stream with it whose bytes are checked at both ends. One boot checks
//! it all: a boot takes tens of seconds on a host that emulates guest ring 0.
//!
//! Making a namespace and a TAP needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and `ip`
//! (iproute2): without them the test says why and skips, unless `KVMINI_REQUIRE_KVM=1`, in
//! which case it fails. The options kvmini refuses need neither a boot nor root.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{guest, linux_or_skip};
use kvmini::status::BAD_INPUT;

/// Seconds the boot and the guest's work may take before kvmini gives up on them.
const TIMEOUT: &str = "300";
/// The host's end of the link, and the guest's.
const HOST_ADDR: &str = "10.0.2.1";
const GUEST_ADDR: &str = "10.0.2.2";
/// Where the host listens for the guest's connection.
const PORT: u16 = 5555;
/// The guest sends the lines of `seq 1 SEQ_SPLIT` and gets back those of `seq
/// SEQ_SPLIT+1 SEQ_END`: about 49 KB each way, dozens of segments.
const SEQ_SPLIT: u32 = 10_000;
const SEQ_END: u32 = 20_000;
/// What the guest prints after each step that worked.
const PING_OK: &str = "kvmini-net: ping ok";
const REPLY_OK: &str = "kvmini-net: reply ok";

/// What `busybox seq FIRST LAST` prints.
fn seq(first: u32, last: u32) -> Vec<u8> {
    (first..=last)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Whether this test can make a namespace and a TAP; skips (or, with
/// `KVMINI_REQUIRE_KVM=1`, fails) with the reason when it cannot.
fn netns_or_skip() -> bool {
    if !linux_or_skip(&[]) {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        "not root: a network namespace and a TAP need CAP_SYS_ADMIN and CAP_NET_ADMIN".into()
    } else if let Err(e) = Command::new("ip").arg("-V").output() {
        format!("cannot run `ip` (iproute2): {e}")
    } else if !std::path::Path::new("/dev/net/tun").exists() {
        "no /dev/net/tun on this host (modprobe tun)".into()
    } else {
        return true;
    };
    common::skip("network test", &why)
}

/// A network namespace with a TAP whose host side is `HOST_ADDR`/24; deleted when dropped,
/// whatever happened in between (its TAP goes with it).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tap: &str) -> Self {
        let name = format!("kvmini-test-{}", std::process::id());
        // Left over from an earlier run that was killed: gone first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ip(&["netns", "add", &name]);
        let ns = Netns { name };
        let addr = format!("{HOST_ADDR}/24");
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        ns.ip(&["addr", "add", &addr, "dev", tap]);
        ns.ip(&["link", "set", tap, "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend(args);
        run_ip(&all);
    }

    /// A TCP listener on `HOST_ADDR`:`port` inside the namespace. A socket stays in the
    /// namespace it was made in, so a thread enters it, binds, and ends.
    fn listen(&self, port: u16) -> TcpListener {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns moves only this thread, which ends right after.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind((HOST_ADDR, port)).expect("listen in the namespace")
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves one connection: reads what the guest sends (all of it, up to its end), then
/// answers with `reply` and closes. Returns what it read; gives up when `done` is set.
fn serve_once(listener: TcpListener, reply: Vec<u8>, done: Arc<AtomicBool>) -> Vec<u8> {
    listener.set_nonblocking(true).unwrap();
    let mut stream: TcpStream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if done.load(Ordering::SeqCst) {
                    return Vec::new();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut got = Vec::new();
    // busybox nc shuts its sending side down when its input ends.
    if let Err(e) = stream.read_to_end(&mut got) {
        eprintln!("reading the guest's stream: {e} after {} bytes", got.len());
        return got;
    }
    let _ = stream.write_all(&reply);
    got
}

#[test]
fn the_linux_guest_pings_the_host_and_exchanges_a_tcp_stream_over_a_tap() {
    if !netns_or_skip() {
        return;
    }
    let tap = "kvmini-tap0";
    let ns = Netns::new(tap);
    let listener = ns.listen(PORT);
    let done = Arc::new(AtomicBool::new(false));
    let server = {
        let done = done.clone();
        let reply = seq(SEQ_SPLIT + 1, SEQ_END);
        std::thread::spawn(move || serve_once(listener, reply, done))
    };

    // Only /bin/sh is linked to busybox in the guest; each program costs an exec (about a
    // second there). No pipelines: one program at a time, the files in /tmp (a tmpfs). The
    // exit status says which step failed.
    let script = format!(
        "B=/bin/busybox; \
         $B ifconfig eth0 {GUEST_ADDR} netmask 255.255.255.0 up || exit 10; \
         $B ping -c 1 -W 60 {HOST_ADDR} || exit 11; echo {PING_OK}; \
         $B seq 1 {SEQ_SPLIT} >/tmp/send || exit 12; \
         $B nc {HOST_ADDR} {PORT} </tmp/send >/tmp/reply || exit 13; \
         $B seq {} {SEQ_END} >/tmp/expect || exit 14; \
         $B cmp /tmp/expect /tmp/reply || exit 15; echo {REPLY_OK}",
        SEQ_SPLIT + 1
    );
    let (kernel, initrd) = (guest("vmlinux"), guest("initramfs.cpio"));
    let net = format!("tap={tap}");
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(common::kvmini_bin())
        .args(["run", kernel.to_str().unwrap()])
        .args(["--initrd", initrd.to_str().unwrap(), "--mem", "128M"])
        .args(["--timeout", TIMEOUT, "--stats", "--net", &net])
        .args(["--", "sh", "-c", &script])
        .output()
        .expect("ip netns exec runs kvmini");
    let took = start.elapsed();
    done.store(true, Ordering::SeqCst);
    let received = server.join().expect("the host's listener");
    let (stdout, stderr) = common::texts(&out);
    eprintln!("boot, ping and TCP exchange took {took:.1?}");
    for line in stderr.lines().filter(|l| l.contains("virtio-net")) {
        eprintln!("{line}");
    }

    // Whole lines: the kernel prints its command line, script and all, to the console too.
    let said = |what: &str| stdout.lines().any(|l| l.trim() == what);
    assert!(said(PING_OK), "{stdout}\n{stderr}");
    assert!(
        received == seq(1, SEQ_SPLIT),
        "the host got {} bytes, not the guest's {} (first differing at {:?})\n{stdout}\n{stderr}",
        received.len(),
        seq(1, SEQ_SPLIT).len(),
        received
            .iter()
            .zip(seq(1, SEQ_SPLIT))
            .position(|(a, b)| *a != b)
    );
    assert!(said(REPLY_OK), "{stdout}\n{stderr}");
    assert_eq!(common::status(&out), 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("virtio-net "),
        "the device in --stats: {stderr}"
    );
    assert!(!stderr.contains("fault"), "{stderr}");
    drop(ns);
}

/// A TAP name no interface has.
fn absent_tap() -> String {
    format!("kvmini-nx{}", std::process::id() % 100_000)
}

/// `kvmini run vmlinux --net tap=NAME`, without CAP_NET_ADMIN: as root through `setpriv`,
/// which drops it from the capabilities kvmini gets; as another user, directly.
fn run_without_net_admin(net: &str) -> Option<(i32, String)> {
    let kernel = guest("vmlinux");
    let kvmini = [
        common::kvmini_bin().to_str().unwrap().to_string(),
        "run".into(),
        kernel.to_str().unwrap().into(),
        "--net".into(),
        net.into(),
        "--timeout".into(),
        "30".into(),
    ];
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        if Command::new("setpriv").arg("--version").output().is_err() {
            let why = "root, and no setpriv (util-linux) to drop CAP_NET_ADMIN with";
            common::skip("network test", why);
            return None;
        }
        let mut c = Command::new("setpriv");
        c.args(["--inh-caps=-all", "--bounding-set=-net_admin", "--"]);
        c.args(&kvmini);
        c
    } else {
        let mut c = Command::new(&kvmini[0]);
        c.args(&kvmini[1..]);
        c
    };
    let out = cmd.output().expect("kvmini runs");
    let (_, err) = common::texts(&out);
    Some((common::status(&out), err))
}

#[test]
fn a_missing_tap_kvmini_may_not_create_is_bad_input_with_what_to_do() {
    if !linux_or_skip(&[]) {
        return;
    }
    let name = absent_tap();
    let Some((code, err)) = run_without_net_admin(&format!("tap={name}")) else {
        return;
    };
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(err.contains(&format!("--net tap={name}: ")), "{err}");
    // Without read-write access to /dev/net/tun (mode 0600 on some hosts) a user gets no
    // further than opening it; root gets the whole advice.
    assert!(
        (err.contains(&format!("ip tuntap add {name} mode tap")) && err.contains("CAP_NET_ADMIN"))
            || err.contains("cannot open /dev/net/tun"),
        "{err}"
    );
    // Nothing was left behind.
    assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
}

#[test]
fn an_interface_that_is_not_a_tap_is_bad_input() {
    if !linux_or_skip(&[]) {
        return;
    }
    let out = common::kvmini(&[
        "run",
        guest("vmlinux").to_str().unwrap(),
        "--net",
        "tap=lo",
        "--timeout",
        "30",
    ]);
    let (_, err) = common::texts(&out);
    assert_eq!(common::status(&out), BAD_INPUT, "{err}");
    assert!(
        err.contains("--net tap=lo: ")
            && (err.contains("not a TUN/TAP device") || err.contains("cannot open /dev/net/tun")),
        "{err}"
    );
}
