//! The four hardware debug registers (DR0-DR3) as the stub hands them out: instruction
//! breakpoints (GDB's hardware breakpoints, and its software breakpoints where `int3` cannot
//! be used) and watchpoints, split into the aligned 1-, 2-, 4- and 8-byte pieces the hardware
//! watches. [`DebugRegs::debugreg`] gives the `debugreg` array of `KVM_SET_GUEST_DEBUG`;
//! [`DebugRegs::hit`] reads back which one DR6 says fired.
//!
//! Source of truth: Intel SDM Vol. 3B, 18.2 "Debug Registers" (DR6, DR7 and their fields).

use gdbstub::target::ext::breakpoints::WatchKind;

/// How many debug registers there are.
pub const SLOTS: usize = 4;

/// DR6.BS: the #DB came from single-stepping.
pub const DR6_BS: u64 = 1 << 14;
/// DR7 with no breakpoint: GE (exact data breakpoints, as the SDM recommends) and the
/// reserved bit 10, which reads as 1.
const DR7_BASE: u64 = 0x600;

/// What a debug register is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotUse {
    /// An instruction breakpoint GDB asked for as a hardware breakpoint (`hbreak`, Z1).
    HwBreak,
    /// An instruction breakpoint in place of a software one (`break`, Z0) where `int3`
    /// cannot be used.
    SwBreak,
    /// A piece of a watchpoint; the whole watchpoint as GDB set it.
    Watch {
        /// Write, read or access.
        kind: WatchKind,
        /// Its first byte.
        addr: u64,
        /// Its length.
        len: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// The linear address watched.
    addr: u64,
    /// 1, 2, 4 or 8 bytes (1 for instructions).
    len: u64,
    use_: SlotUse,
}

/// Why a watchpoint was not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchError {
    /// It needs more debug registers than are free.
    NoRoom {
        /// Debug registers it needs.
        needs: usize,
        /// Debug registers free.
        free: usize,
    },
    /// A zero length.
    Empty,
}

/// DR0-DR3 and what each is used for.
#[derive(Clone, Debug, Default)]
pub struct DebugRegs {
    slots: [Option<Slot>; SLOTS],
}

impl DebugRegs {
    /// How many are in use.
    pub fn in_use(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Frees them all.
    pub fn clear(&mut self) {
        self.slots = [None; SLOTS];
    }

    /// Sets an instruction breakpoint at `addr`; false when all four are taken.
    pub fn add_exec(&mut self, addr: u64, use_: SlotUse) -> bool {
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(free) => {
                *free = Some(Slot { addr, len: 1, use_ });
                true
            }
            None => false,
        }
    }

    /// Removes the instruction breakpoint at `addr` set for `use_`; false when there is none.
    pub fn remove_exec(&mut self, addr: u64, use_: SlotUse) -> bool {
        self.remove_where(|s| s.addr == addr && s.use_ == use_)
    }

    /// Sets a watchpoint on `len` bytes at `addr`, in as many registers as its aligned
    /// pieces need.
    pub fn add_watch(&mut self, addr: u64, len: u64, kind: WatchKind) -> Result<(), WatchError> {
        if len == 0 {
            return Err(WatchError::Empty);
        }
        let pieces = split(addr, len);
        let free = SLOTS - self.in_use();
        if pieces.len() > free {
            return Err(WatchError::NoRoom {
                needs: pieces.len(),
                free,
            });
        }
        let use_ = SlotUse::Watch { kind, addr, len };
        for (piece_addr, piece_len) in pieces {
            if let Some(slot) = self.slots.iter_mut().find(|s| s.is_none()) {
                *slot = Some(Slot {
                    addr: piece_addr,
                    len: piece_len,
                    use_,
                });
            }
        }
        Ok(())
    }

    /// Removes the watchpoint GDB set with these arguments; false when there is none.
    pub fn remove_watch(&mut self, addr: u64, len: u64, kind: WatchKind) -> bool {
        let use_ = SlotUse::Watch { kind, addr, len };
        let mut removed = false;
        while self.remove_where(|s| s.use_ == use_) {
            removed = true;
        }
        removed
    }

    fn remove_where(&mut self, f: impl Fn(&Slot) -> bool) -> bool {
        match self.slots.iter_mut().find(|s| s.as_ref().is_some_and(&f)) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    /// The register holding an instruction breakpoint at linear address `addr`, if one does.
    pub fn exec_at(&self, addr: u64) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.is_some_and(|s| s.addr == addr && !matches!(s.use_, SlotUse::Watch { .. }))
        })
    }

    /// The `debugreg` array of `kvm_guest_debug`: DR0-DR3 and DR7, leaving out register
    /// `skip` (to step off the instruction it would stop at again).
    pub fn debugreg(&self, skip: Option<usize>) -> [u64; 8] {
        let mut regs = [0u64; 8];
        let mut dr7 = DR7_BASE;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot.filter(|_| Some(i) != skip) else {
                continue;
            };
            let rw: u64 = match slot.use_ {
                SlotUse::HwBreak | SlotUse::SwBreak => 0b00,
                SlotUse::Watch {
                    kind: WatchKind::Write,
                    ..
                } => 0b01,
                // x86 has no read-only data breakpoint: reads are watched as accesses.
                SlotUse::Watch { .. } => 0b11,
            };
            let len: u64 = match slot.len {
                2 => 0b01,
                4 => 0b11,
                8 => 0b10,
                _ => 0b00,
            };
            regs[i] = slot.addr;
            dr7 |= (0b10 << (i * 2)) | (rw << (16 + i * 4)) | (len << (18 + i * 4));
        }
        regs[7] = dr7;
        regs
    }

    /// Whether any register is set (the guest needs `KVM_GUESTDBG_USE_HW_BP`).
    pub fn any(&self) -> bool {
        self.in_use() > 0
    }

    /// What fired, by DR6's B0-B3 bits: the first set register that is in use.
    pub fn hit(&self, dr6: u64) -> Option<SlotUse> {
        (0..SLOTS)
            .filter(|i| dr6 & (1 << i) != 0)
            .find_map(|i| self.slots[i].map(|s| s.use_))
    }

    /// One line per register in use, for `monitor info`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(s) = slot else {
                lines.push(format!("DR{i}: free"));
                continue;
            };
            lines.push(match s.use_ {
                SlotUse::HwBreak => format!("DR{i}: hardware breakpoint at {:#x}", s.addr),
                SlotUse::SwBreak => format!(
                    "DR{i}: breakpoint at {:#x} (a software breakpoint set as a hardware one)",
                    s.addr
                ),
                SlotUse::Watch { kind, addr, len } => format!(
                    "DR{i}: {:?} watchpoint on {len} bytes at {addr:#x} ({} bytes at {:#x} here)",
                    kind, s.len, s.addr
                ),
            });
        }
        lines
    }
}

/// `len` bytes at `addr` as the aligned pieces a debug register can watch (1, 2, 4 or 8
/// bytes, each aligned to its size), largest first, as GDB's own x86 code splits them.
pub fn split(addr: u64, len: u64) -> Vec<(u64, u64)> {
    let mut pieces = Vec::new();
    let (mut at, end) = (addr, addr.saturating_add(len));
    while at < end {
        let size = [8u64, 4, 2, 1]
            .into_iter()
            .find(|&size| at % size == 0 && at + size <= end)
            .unwrap_or(1);
        pieces.push((at, size));
        at += size;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_ranges_split_into_aligned_pieces() {
        assert_eq!(split(0x1000, 8), [(0x1000, 8)]);
        assert_eq!(split(0x1004, 4), [(0x1004, 4)]);
        assert_eq!(split(0x1001, 2), [(0x1001, 1), (0x1002, 1)]);
        assert_eq!(
            split(0x1003, 8),
            [(0x1003, 1), (0x1004, 4), (0x1008, 2), (0x100a, 1)]
        );
        assert_eq!(split(0x1000, 16), [(0x1000, 8), (0x1008, 8)]);
    }

    #[test]
    fn dr7_enables_each_register_with_its_type_and_length() {
        let mut d = DebugRegs::default();
        assert!(d.add_exec(0x10_0000, SlotUse::HwBreak));
        d.add_watch(0x2000, 4, WatchKind::Write).unwrap();
        d.add_watch(0x3000, 8, WatchKind::Read).unwrap();
        let regs = d.debugreg(None);
        assert_eq!(&regs[..4], &[0x10_0000, 0x2000, 0x3000, 0]);
        // G0 G1 G2; DR0 exec/1; DR1 write/4 (rw 01, len 11); DR2 access/8 (rw 11, len 10).
        let expected = 0x600 | 0b10 | 0b1000 | 0b10_0000 | (0b1101 << 20) | (0b1011 << 24);
        assert_eq!(regs[7], expected);
        // Stepping off DR0 leaves it out.
        let skipped = d.debugreg(Some(0));
        assert_eq!(skipped[0], 0);
        assert_eq!(skipped[7], expected & !0b11 & !(0b1111 << 16));
        assert_eq!(DebugRegs::default().debugreg(None)[7], 0x600);
    }

    #[test]
    fn four_registers_at_most_and_removal_frees_every_piece() {
        let mut d = DebugRegs::default();
        d.add_watch(0x1003, 8, WatchKind::ReadWrite).unwrap();
        assert_eq!(d.in_use(), 4);
        assert!(!d.add_exec(0x5000, SlotUse::SwBreak));
        assert_eq!(
            d.add_watch(0x8000, 1, WatchKind::Write),
            Err(WatchError::NoRoom { needs: 1, free: 0 })
        );
        assert!(d.remove_watch(0x1003, 8, WatchKind::ReadWrite));
        assert_eq!(d.in_use(), 0);
        assert!(!d.remove_watch(0x1003, 8, WatchKind::ReadWrite));
        assert_eq!(
            d.add_watch(0x8000, 0, WatchKind::Write),
            Err(WatchError::Empty)
        );
    }

    #[test]
    fn dr6_names_the_register_that_fired() {
        let mut d = DebugRegs::default();
        d.add_exec(0x10_0000, SlotUse::SwBreak);
        d.add_exec(0x10_0010, SlotUse::HwBreak);
        d.add_watch(0x2000, 2, WatchKind::Write).unwrap();
        // The value measured on a kvm_pvm host for DR0.
        assert_eq!(d.hit(0xffff_0ff1), Some(SlotUse::SwBreak));
        assert_eq!(d.hit(0xffff_0ff2), Some(SlotUse::HwBreak));
        assert_eq!(
            d.hit(0xffff_0ff4),
            Some(SlotUse::Watch {
                kind: WatchKind::Write,
                addr: 0x2000,
                len: 2
            })
        );
        // A single step, and a register that is not in use.
        assert_eq!(d.hit(0xffff_4ff0), None);
        assert_eq!(d.hit(0xffff_0ff8), None);
        assert_eq!(d.exec_at(0x10_0010), Some(1));
        assert_eq!(d.exec_at(0x2000), None);
        assert!(d.remove_exec(0x10_0000, SlotUse::SwBreak));
        assert!(!d.remove_exec(0x10_0010, SlotUse::SwBreak));
        assert_eq!(d.exec_at(0x10_0000), None);
    }
}
