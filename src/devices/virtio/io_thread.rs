//! The I/O thread: one epoll loop that serves every virtio device, so that device work
//! never runs on a vCPU thread. It waits on each queue's ioeventfd (KVM signals it when the
//! guest writes the queue's notify register, without an exit to kvmini) and on the file
//! descriptors the devices register (a TAP device, vsock sockets), and hands each event to
//! its device under the device's lock.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::SharedTransport;
use crate::devices::lock;

/// The token of the thread's own stop event.
const STOP_TOKEN: u64 = u64::MAX;

/// The epoll set the devices register with, made before the devices so that each gets its
/// [`super::EventRegistry`].
pub fn new_epoll() -> std::io::Result<Arc<Epoll>> {
    Epoll::new().map(Arc::new)
}

/// What the I/O thread measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoStats {
    /// Events handled.
    pub events: u64,
    /// CPU time the thread used.
    pub cpu_time: Duration,
}

/// The running I/O thread; stopped and joined when dropped or by [`IoThread::stop`].
#[derive(Debug)]
pub struct IoThread {
    stop: EventFd,
    handle: Option<JoinHandle<IoStats>>,
}

impl IoThread {
    /// Starts serving `devices` (device `i` registered its events as number `i`) on `epoll`.
    pub fn start(
        epoll: Arc<Epoll>,
        devices: Vec<SharedTransport>,
        seccomp: crate::config::SeccompMode,
    ) -> std::io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&stop),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        watch_queues(&epoll, &devices)?;
        let handle = std::thread::Builder::new()
            .name("kvmini-io".into())
            .spawn(move || {
                crate::sandbox::enter_or_exit(crate::sandbox::Role::Io, seccomp);
                event_loop(&epoll, &devices)
            })?;
        Ok(IoThread {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and returns what it measured.
    pub fn stop(mut self) -> IoStats {
        self.finish()
    }

    fn finish(&mut self) -> IoStats {
        let _ = self.stop.write(1);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Watches every queue's eventfd on `epoll`: device `i`'s queue `q` reports as source `q`
/// of device `i`.
pub fn watch_queues(epoll: &Epoll, devices: &[SharedTransport]) -> std::io::Result<()> {
    for (i, device) in devices.iter().enumerate() {
        let transport = lock(device);
        for (q, evt) in transport.queue_evts().iter().enumerate() {
            let token = (i as u64) << 32 | q as u64;
            epoll.ctl(
                ControlOperation::Add,
                std::os::fd::AsRawFd::as_raw_fd(evt),
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
    }
    Ok(())
}

/// Hands one event to its device, under the device's lock: a queue's notification, or one
/// of the device's own file descriptors.
pub fn dispatch(devices: &[SharedTransport], token: u64, events: EventSet) {
    let (device, source) = ((token >> 32) as usize, token as u32);
    let Some(device) = devices.get(device) else {
        return;
    };
    let mut transport = lock(device);
    if source < super::FIRST_DEVICE_SOURCE {
        transport.queue_notified(source as usize);
    } else {
        transport.device_event(source, events);
    }
}

fn event_loop(epoll: &Epoll, devices: &[SharedTransport]) -> IoStats {
    let mut events = vec![EpollEvent::default(); 32];
    let mut stats = IoStats::default();
    'outer: loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("kvmini: the I/O thread stops: epoll_wait: {e}");
                break;
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token == STOP_TOKEN {
                break 'outer;
            }
            stats.events += 1;
            dispatch(devices, token, event.event_set());
        }
    }
    stats.cpu_time = thread_cpu_time();
    stats
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if ret != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
