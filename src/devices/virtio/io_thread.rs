//! The I/O thread: one epoll loop that serves every virtio device, so that device work
//! never runs on a vCPU thread. It waits on each queue's ioeventfd (KVM signals it when the
//! guest writes the queue's notify register, without an exit to kvmini) and on the file
//! descriptors the devices register (a TAP device, vsock sockets), and hands each event to
//! its device under the device's lock. For a snapshot it serves every queue once more and
//! waits ([`IoThread::pause`]): the devices' state and guest memory are then saved as the
//! guest will find them.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::SharedTransport;
use crate::devices::lock;

/// The token of the thread's own control event (pause, stop).
const CONTROL_TOKEN: u64 = u64::MAX;

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

/// What the thread is asked to do, and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Serve events.
    Run,
    /// Asked to serve every queue, then wait.
    Pause,
    /// Waiting, the devices quiescent.
    Paused,
    /// Asked to end.
    Stop,
    /// Ended.
    Stopped,
}

/// The thread's mode, shared with the thread that controls it.
#[derive(Debug)]
struct Control {
    mode: Mutex<Mode>,
    changed: Condvar,
}

impl Control {
    fn mode(&self) -> MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, mode: Mode) {
        *self.mode() = mode;
        self.changed.notify_all();
    }

    /// Waits while the mode is one of `modes`; returns the one that ended the wait.
    fn wait_while(&self, modes: &[Mode]) -> Mode {
        let guard = self
            .changed
            .wait_while(self.mode(), |m| modes.contains(m))
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// The running I/O thread; stopped and joined when dropped or by [`IoThread::stop`].
#[derive(Debug)]
pub struct IoThread {
    wake: EventFd,
    control: Arc<Control>,
    handle: Option<JoinHandle<IoStats>>,
}

impl IoThread {
    /// Starts serving `devices` (device `i` registered its events as number `i`) on `epoll`.
    pub fn start(
        epoll: Arc<Epoll>,
        devices: Vec<SharedTransport>,
        seccomp: crate::config::SeccompMode,
    ) -> std::io::Result<Self> {
        let wake = EventFd::new(libc::EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&wake),
            EpollEvent::new(EventSet::IN, CONTROL_TOKEN),
        )?;
        watch_queues(&epoll, &devices)?;
        let control = Arc::new(Control {
            mode: Mutex::new(Mode::Run),
            changed: Condvar::new(),
        });
        let thread_control = control.clone();
        let thread_wake = wake.try_clone()?;
        let handle = std::thread::Builder::new()
            .name("kvmini-io".into())
            .spawn(move || {
                crate::sandbox::enter_or_exit(crate::sandbox::Role::Io, seccomp);
                let stats = event_loop(&epoll, &devices, &thread_control, &thread_wake);
                thread_control.set(Mode::Stopped);
                stats
            })?;
        Ok(IoThread {
            wake,
            control,
            handle: Some(handle),
        })
    }

    /// Brings the devices to a quiescent point for a snapshot: the thread serves every
    /// queue the driver may have notified (no request is left half-way, every answer is on
    /// its used ring) and then waits, touching neither the devices nor guest memory, until
    /// [`IoThread::resume`] or the end. Call it with the vCPUs stopped.
    pub fn pause(&self) {
        {
            let mut mode = self.control.mode();
            // A thread that ended (epoll failed) has nothing in flight.
            if *mode != Mode::Run {
                return;
            }
            *mode = Mode::Pause;
        }
        let _ = self.wake.write(1);
        self.control.wait_while(&[Mode::Pause]);
    }

    /// Lets a paused thread serve events again.
    pub fn resume(&self) {
        let mut mode = self.control.mode();
        if *mode == Mode::Paused {
            *mode = Mode::Run;
            self.control.changed.notify_all();
        }
    }

    /// Stops the thread and returns what it measured.
    pub fn stop(mut self) -> IoStats {
        self.finish()
    }

    fn finish(&mut self) -> IoStats {
        self.control.set(Mode::Stop);
        let _ = self.wake.write(1);
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

fn event_loop(
    epoll: &Epoll,
    devices: &[SharedTransport],
    control: &Control,
    wake: &EventFd,
) -> IoStats {
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
            if token == CONTROL_TOKEN {
                let _ = wake.read();
                if !obey(control, devices) {
                    break 'outer;
                }
                continue;
            }
            stats.events += 1;
            dispatch(devices, token, event.event_set());
        }
    }
    stats.cpu_time = thread_cpu_time();
    stats
}

/// Does what the control asks; returns whether the thread goes on.
fn obey(control: &Control, devices: &[SharedTransport]) -> bool {
    let mode = *control.mode();
    match mode {
        Mode::Pause => {
            for device in devices {
                lock(device).drain();
            }
            control.set(Mode::Paused);
            control.wait_while(&[Mode::Paused]) != Mode::Stop
        }
        Mode::Stop | Mode::Stopped => false,
        Mode::Run | Mode::Paused => true,
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::mmio::tests::{initialize, memory_of, transport, write};
    use crate::devices::virtio::test_util::{desc, Harness, BUFFERS, WRITE};

    /// Waits up to two seconds for `done`.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !done() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn a_paused_thread_has_served_every_queue_and_serves_nothing_until_resumed() {
        let mut t = transport();
        initialize(&mut t, 1);
        write(&mut t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
        let (table, avail, _) = Harness::new(1).rings(0);
        let mem = memory_of(&t);
        let request = |n: u16| {
            mem.write_obj(
                desc(BUFFERS, 16, WRITE, 0),
                GuestAddress(table + u64::from(n) * 16),
            )
            .unwrap();
            mem.write_obj(n, GuestAddress(avail + 4 + u64::from(n) * 2))
                .unwrap();
            mem.write_obj(n + 1, GuestAddress(avail + 2)).unwrap();
        };
        request(0);
        t.queue_evts()[0].write(1).unwrap();
        let device = Arc::new(Mutex::new(t));
        let io = IoThread::start(
            new_epoll().unwrap(),
            vec![device.clone()],
            crate::config::SeccompMode::Off,
        )
        .unwrap();
        io.pause();
        assert_eq!(lock(&device).requests(), 1, "served before the pause ends");
        // While paused, a notification waits.
        request(1);
        lock(&device).queue_evts()[0].write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(lock(&device).requests(), 1);
        io.resume();
        assert!(eventually(|| lock(&device).requests() == 2));
        io.stop();
    }
}
