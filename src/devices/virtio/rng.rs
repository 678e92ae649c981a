//! virtio-rng: an entropy source for the guest, fed by the host's `getrandom`.
//!
//! Source of truth: VIRTIO 1.2, section 5.4 (entropy device).

use std::io::Write;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use super::state::DeviceState;
use super::{Chain, Context, DeviceError, VirtioDevice};

/// Size of the request queue.
const QUEUE_SIZE: u16 = 64;
/// Most bytes given for one request: the guest asks again for more.
const MAX_REQUEST: usize = 64 << 10;

/// The entropy device.
#[derive(Debug, Default)]
pub struct Rng;

impl Rng {
    /// Fills the chain's writable buffers with random bytes; returns how many.
    fn handle(chain: Chain<'_>, mem: &crate::memory::GuestMem) -> u32 {
        let Ok(mut writer) = chain.writer(mem) else {
            return 0;
        };
        let mut buf = vec![0; writer.available_bytes().min(MAX_REQUEST)];
        if getrandom(&mut buf).is_err() || writer.write_all(&buf).is_err() {
            return 0;
        }
        buf.len() as u32
    }
}

/// Fills `buf` from the kernel's random number generator.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn name(&self) -> &'static str {
        "virtio-rng"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}

    fn process_queue(&mut self, queue: usize, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        let mem = ctx.mem;
        ctx.process_chains(queue, |chain| Self::handle(chain, mem))?;
        Ok(())
    }

    fn save(&self) -> DeviceState {
        DeviceState::Rng
    }

    fn restore(&mut self, saved: &DeviceState) -> Result<(), String> {
        match saved {
            DeviceState::Rng => Ok(()),
            _ => Err(super::other_kind(self.name(), saved)),
        }
    }
}
