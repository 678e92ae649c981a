//! Guest memory as GDB addresses it: linear (virtual) addresses, translated page by page
//! through the guest's own page tables with the paging state of the last stop (the walk the
//! crash report uses for the code at RIP, `arch::x86_64::paging::translate`), then read or
//! written through vm-memory. No KVM call is needed, so the debugger's thread does it while
//! the vCPU waits.

use kvm_bindings::kvm_sregs;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::arch::x86_64::paging::{self, PagingState};
use crate::memory::GuestMem;

const PAGE: u64 = 4096;

fn paging_state(sregs: &kvm_sregs) -> PagingState {
    PagingState {
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
    }
}

/// The pieces of `len` bytes at linear `addr` that stay within one page: (offset into the
/// buffer, guest-physical address, length), as far as the translation goes.
fn pieces(mem: &GuestMem, sregs: &kvm_sregs, addr: u64, len: usize) -> Vec<(usize, u64, usize)> {
    let state = paging_state(sregs);
    let mut out = Vec::new();
    let mut done = 0usize;
    while done < len {
        let at = addr.wrapping_add(done as u64);
        let in_page = (PAGE - at % PAGE) as usize;
        let n = in_page.min(len - done);
        let Ok(pa) = paging::translate(mem, &state, at) else {
            break;
        };
        out.push((done, pa, n));
        done += n;
    }
    out
}

/// Reads up to `buf.len()` bytes at linear `addr`; returns how many it could (0 when the
/// first byte is not mapped or not RAM).
pub fn read(mem: &GuestMem, sregs: &kvm_sregs, addr: u64, buf: &mut [u8]) -> usize {
    let mut read = 0;
    for (offset, pa, n) in pieces(mem, sregs, addr, buf.len()) {
        if mem
            .read_slice(&mut buf[offset..offset + n], GuestAddress(pa))
            .is_err()
        {
            break;
        }
        read = offset + n;
    }
    read
}

/// Writes `data` at linear `addr`; false (with nothing written) unless every byte is mapped
/// RAM.
pub fn write(mem: &GuestMem, sregs: &kvm_sregs, addr: u64, data: &[u8]) -> bool {
    let pieces = pieces(mem, sregs, addr, data.len());
    let mapped: usize = pieces.iter().map(|p| p.2).sum();
    let all_ram = pieces
        .iter()
        .all(|&(_, pa, n)| mem.check_range(GuestAddress(pa), n));
    if mapped != data.len() || !all_ram {
        return false;
    }
    pieces.into_iter().all(|(offset, pa, n)| {
        mem.write_slice(&data[offset..offset + n], GuestAddress(pa))
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::paging::{
        write_identity_map, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME,
    };

    fn long_mode(mem: &GuestMem) -> kvm_sregs {
        kvm_sregs {
            cr0: CR0_PE | CR0_PG,
            cr3: write_identity_map(mem, false).unwrap(),
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        }
    }

    #[test]
    fn reads_and_writes_cross_pages_and_stop_where_ram_ends() {
        let mem = crate::memory::create(2 << 20).unwrap();
        for sregs in [kvm_sregs::default(), long_mode(&mem)] {
            assert!(write(&mem, &sregs, 0x1_fffe, &[1, 2, 3, 4]));
            let mut buf = [0u8; 4];
            assert_eq!(read(&mem, &sregs, 0x1_fffe, &mut buf), 4);
            assert_eq!(buf, [1, 2, 3, 4]);
            // The last two bytes of RAM, then nothing.
            let end = 2 << 20;
            assert_eq!(read(&mem, &sregs, end - 2, &mut buf), 2);
            assert!(!write(&mem, &sregs, end - 2, &[9; 4]));
            assert_eq!(read(&mem, &sregs, end - 2, &mut buf[..2]), 2);
            assert_eq!(&buf[..2], &[0, 0], "a refused write changes nothing");
        }
        // Not mapped by the page tables at all.
        let sregs = long_mode(&mem);
        assert_eq!(read(&mem, &sregs, 0x7_0000_0000, &mut [0u8; 4]), 0);
    }
}
