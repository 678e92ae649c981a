//! The registers GDB sees, and the target descriptions that lay them out: x86-64 (GDB's
//! `i386:x86-64`) or i386 (`i386`), chosen per connection ([`Layout`]). The general, segment,
//! x87 and SSE registers are gdbstub_arch's `X86_64CoreRegs` / `X86CoreRegs`; after them come
//! `fs_base` and `gs_base` (x86-64 only, GDB's `org.gnu.gdb.i386.segments`) and the system
//! registers cr0, cr2, cr3, cr4, cr8 and efer in a feature of kvmini's own, which GDB shows as
//! `$cr3` and in `info registers`. One [`Arch`] serves both layouts; the layout of a `G`
//! packet is told by its length.
//!
//! Source of truth: GDB's `gdb/features/i386/{64bit,32bit}-{core,sse,segments}.xml` and the
//! "Target Descriptions" appendix of the GDB manual.

use gdbstub::arch::{Arch, Registers};
use gdbstub_arch::x86::reg::{X86CoreRegs, X86_64CoreRegs, X87FpuInternalRegs};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

use crate::arch::x86_64::paging::{CR0_PE, EFER_LMA};

/// The vCPU state a stop hands to the debugger, and the debugger hands back.
#[derive(Clone, Debug, Default)]
pub struct CpuState {
    /// General registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// x87 and SSE registers.
    pub fpu: kvm_fpu,
}

impl CpuState {
    /// The privilege level the vCPU runs at (0 in real mode, 3 in virtual-8086 mode).
    pub fn cpl(&self) -> u8 {
        const RFLAGS_VM: u64 = 1 << 17;
        if self.sregs.cr0 & CR0_PE == 0 {
            0
        } else if self.regs.rflags & RFLAGS_VM != 0 {
            3
        } else {
            (self.sregs.cs.selector & 3) as u8
        }
    }

    /// Whether the vCPU is in long mode.
    pub fn long_mode(&self) -> bool {
        self.sregs.efer & EFER_LMA != 0
    }
}

/// Which target description GDB gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// `i386:x86-64`: 64-bit registers (any mode; 32-bit values are zero-extended).
    #[default]
    X86_64,
    /// `i386`: 32-bit registers (real and protected mode; in long mode the low halves).
    I386,
}

impl Layout {
    /// The target description document (`target.xml`).
    pub fn xml(self) -> &'static str {
        match self {
            Layout::X86_64 => X86_64_XML,
            Layout::I386 => I386_XML,
        }
    }
}

/// kvmini's x86 target: either register layout, 64-bit addresses.
pub enum KvmX86 {}

impl Arch for KvmX86 {
    type Usize = u64;
    type Registers = GdbRegs;
    type RegId = ();
    type BreakpointKind = usize;
}

/// The system registers, in the order of kvmini's feature.
const SYSTEM: [&str; 6] = ["cr0", "cr2", "cr3", "cr4", "cr8", "efer"];

/// The registers of one `g` or `G` packet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GdbRegs {
    /// Which of the two layouts is in use.
    pub layout: Layout,
    /// The x86-64 core and SSE registers.
    pub long: X86_64CoreRegs,
    /// The i386 core and SSE registers.
    pub legacy: X86CoreRegs,
    /// FS and GS bases (x86-64 layout).
    pub bases: [u64; 2],
    /// cr0, cr2, cr3, cr4, cr8, efer.
    pub system: [u64; 6],
}

/// Sizes of the core and SSE registers in a packet (gdbstub_arch's layouts).
const X86_64_CORE_LEN: usize = 0x218;
const I386_CORE_LEN: usize = 0x134;

impl Registers for GdbRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        match self.layout {
            Layout::X86_64 => self.long.rip,
            Layout::I386 => u64::from(self.legacy.eip),
        }
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        let mut bytes = Vec::with_capacity(X86_64_CORE_LEN + 64);
        let mut put = |v: u64| bytes.extend(v.to_le_bytes().map(Some));
        match self.layout {
            Layout::X86_64 => {
                self.long.gdb_serialize(&mut write_byte);
                self.bases.into_iter().for_each(&mut put);
            }
            Layout::I386 => self.legacy.gdb_serialize(&mut write_byte),
        }
        self.system.into_iter().for_each(put);
        bytes.into_iter().for_each(write_byte);
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let words = |b: &[u8]| -> Vec<u64> {
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect()
        };
        let system_len = SYSTEM.len() * 8;
        if bytes.len() == X86_64_CORE_LEN + 16 + system_len {
            self.layout = Layout::X86_64;
            self.long.gdb_deserialize(&bytes[..X86_64_CORE_LEN])?;
            let rest = words(&bytes[X86_64_CORE_LEN..]);
            self.bases.copy_from_slice(&rest[..2]);
            self.system.copy_from_slice(&rest[2..]);
        } else if bytes.len() == I386_CORE_LEN + system_len {
            self.layout = Layout::I386;
            self.legacy.gdb_deserialize(&bytes[..I386_CORE_LEN])?;
            self.system.copy_from_slice(&words(&bytes[I386_CORE_LEN..]));
        } else {
            return Err(());
        }
        Ok(())
    }
}

/// The low 32 bits of `v` replaced by `low`.
fn low32(v: u64, low: u32) -> u64 {
    (v & !0xffff_ffff) | u64::from(low)
}

impl GdbRegs {
    /// The registers of `state` in `layout`.
    pub fn from_state(layout: Layout, state: &CpuState) -> Self {
        let (r, s) = (&state.regs, &state.sregs);
        let mut g = GdbRegs {
            layout,
            system: [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer],
            ..Default::default()
        };
        let segments = gdbstub_arch::x86::reg::X86SegmentRegs {
            cs: s.cs.selector.into(),
            ss: s.ss.selector.into(),
            ds: s.ds.selector.into(),
            es: s.es.selector.into(),
            fs: s.fs.selector.into(),
            gs: s.gs.selector.into(),
        };
        let (st, fpu) = fpu_to_gdb(&state.fpu);
        let xmm = state.fpu.xmm.map(u128::from_le_bytes);
        match layout {
            Layout::X86_64 => {
                g.bases = [s.fs.base, s.gs.base];
                g.long = X86_64CoreRegs {
                    regs: [
                        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10,
                        r.r11, r.r12, r.r13, r.r14, r.r15,
                    ],
                    eflags: r.rflags as u32,
                    rip: r.rip,
                    segments,
                    st,
                    fpu,
                    xmm,
                    mxcsr: state.fpu.mxcsr,
                };
            }
            Layout::I386 => {
                let mut xmm8 = [0u128; 8];
                xmm8.copy_from_slice(&xmm[..8]);
                g.legacy = X86CoreRegs {
                    eax: r.rax as u32,
                    ecx: r.rcx as u32,
                    edx: r.rdx as u32,
                    ebx: r.rbx as u32,
                    esp: r.rsp as u32,
                    ebp: r.rbp as u32,
                    esi: r.rsi as u32,
                    edi: r.rdi as u32,
                    eip: r.rip as u32,
                    eflags: r.rflags as u32,
                    segments,
                    st,
                    fpu,
                    xmm: xmm8,
                    mxcsr: state.fpu.mxcsr,
                };
            }
        }
        g
    }

    /// `state` with these registers written into it. In the i386 layout only the low halves
    /// of 64-bit registers change; segment selectors change only in real mode (elsewhere a
    /// selector names a descriptor, which kvmini does not load for the debugger).
    pub fn apply(&self, state: &CpuState) -> CpuState {
        let mut new = state.clone();
        let (r, s) = (&mut new.regs, &mut new.sregs);
        let (segments, st, fpu, xmm, mxcsr);
        match self.layout {
            Layout::X86_64 => {
                let g = &self.long;
                [
                    r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10,
                    r.r11, r.r12, r.r13, r.r14, r.r15,
                ] = g.regs;
                r.rip = g.rip;
                r.rflags = low32(r.rflags, g.eflags);
                s.fs.base = self.bases[0];
                s.gs.base = self.bases[1];
                (segments, st, fpu, mxcsr) = (&g.segments, &g.st, &g.fpu, g.mxcsr);
                xmm = g.xmm.to_vec();
            }
            Layout::I386 => {
                let g = &self.legacy;
                for (reg, v) in [
                    (&mut r.rax, g.eax),
                    (&mut r.rcx, g.ecx),
                    (&mut r.rdx, g.edx),
                    (&mut r.rbx, g.ebx),
                    (&mut r.rsp, g.esp),
                    (&mut r.rbp, g.ebp),
                    (&mut r.rsi, g.esi),
                    (&mut r.rdi, g.edi),
                    (&mut r.rip, g.eip),
                    (&mut r.rflags, g.eflags),
                ] {
                    *reg = low32(*reg, v);
                }
                (segments, st, fpu, mxcsr) = (&g.segments, &g.st, &g.fpu, g.mxcsr);
                xmm = g.xmm.to_vec();
            }
        }
        if s.cr0 & CR0_PE == 0 {
            for (seg, sel) in [
                (&mut s.cs, segments.cs),
                (&mut s.ss, segments.ss),
                (&mut s.ds, segments.ds),
                (&mut s.es, segments.es),
                (&mut s.fs, segments.fs),
                (&mut s.gs, segments.gs),
            ] {
                set_real_mode_selector(seg, sel as u16);
            }
        }
        [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer] = self.system;
        fpu_from_gdb(&mut new.fpu, st, fpu);
        for (to, from) in new.fpu.xmm.iter_mut().zip(xmm) {
            *to = from.to_le_bytes();
        }
        new.fpu.mxcsr = mxcsr;
        new
    }
}

/// A real-mode segment register loaded with `selector`: its base is the selector times 16.
fn set_real_mode_selector(seg: &mut kvm_segment, selector: u16) {
    if seg.selector != selector {
        seg.selector = selector;
        seg.base = u64::from(selector) << 4;
    }
}

/// The x87 registers as GDB wants them. KVM gives FXSAVE's abridged tag (one bit per
/// register: in use or empty); GDB wants the full tag word, two bits per register, in which
/// this reports every register in use as "valid" (00) and every other one as "empty" (11).
fn fpu_to_gdb(f: &kvm_fpu) -> ([[u8; 10]; 8], X87FpuInternalRegs) {
    let mut st = [[0u8; 10]; 8];
    for (to, from) in st.iter_mut().zip(&f.fpr) {
        to.copy_from_slice(&from[..10]);
    }
    let ftag = (0..8)
        .filter(|i| f.ftwx & (1 << i) == 0)
        .fold(0u32, |tag, i| tag | (0b11 << (2 * i)));
    let internal = X87FpuInternalRegs {
        fctrl: f.fcw.into(),
        fstat: f.fsw.into(),
        ftag,
        fiseg: 0,
        fioff: f.last_ip as u32,
        foseg: 0,
        fooff: f.last_dp as u32,
        fop: f.last_opcode.into(),
    };
    (st, internal)
}

/// The x87 registers GDB wrote, back into KVM's form.
fn fpu_from_gdb(f: &mut kvm_fpu, st: &[[u8; 10]; 8], g: &X87FpuInternalRegs) {
    for (to, from) in f.fpr.iter_mut().zip(st) {
        to[..10].copy_from_slice(from);
    }
    f.fcw = g.fctrl as u16;
    f.fsw = g.fstat as u16;
    f.ftwx = (0..8)
        .filter(|i| (g.ftag >> (2 * i)) & 0b11 != 0b11)
        .fold(0u8, |tag, i| tag | (1 << i));
    f.last_opcode = g.fop as u16;
    f.last_ip = low32(f.last_ip, g.fioff);
    f.last_dp = low32(f.last_dp, g.fooff);
}

/// The parts both descriptions share: the types of EFLAGS, MXCSR and the vector registers.
macro_rules! types {
    () => {
        r#"<flags id="i386_eflags" size="4"><field name="CF" start="0" end="0"/><field name="" start="1" end="1"/><field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/><field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/><field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/><field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/><field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/><field name="ID" start="21" end="21"/></flags>"#
    };
}

macro_rules! sse_types {
    () => {
        r#"<vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/><vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/><vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/><union id="vec128"><field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/></union><flags id="i386_mxcsr" size="4"><field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/><field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/><field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/><field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/><field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/><field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/><field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/></flags>"#
    };
}

macro_rules! x87 {
    () => {
        r#"<reg name="st0" bitsize="80" type="i387_ext"/><reg name="st1" bitsize="80" type="i387_ext"/><reg name="st2" bitsize="80" type="i387_ext"/><reg name="st3" bitsize="80" type="i387_ext"/><reg name="st4" bitsize="80" type="i387_ext"/><reg name="st5" bitsize="80" type="i387_ext"/><reg name="st6" bitsize="80" type="i387_ext"/><reg name="st7" bitsize="80" type="i387_ext"/><reg name="fctrl" bitsize="32" type="int" group="float"/><reg name="fstat" bitsize="32" type="int" group="float"/><reg name="ftag" bitsize="32" type="int" group="float"/><reg name="fiseg" bitsize="32" type="int" group="float"/><reg name="fioff" bitsize="32" type="int" group="float"/><reg name="foseg" bitsize="32" type="int" group="float"/><reg name="fooff" bitsize="32" type="int" group="float"/><reg name="fop" bitsize="32" type="int" group="float"/>"#
    };
}

macro_rules! segments {
    () => {
        r#"<reg name="cs" bitsize="32" type="int32"/><reg name="ss" bitsize="32" type="int32"/><reg name="ds" bitsize="32" type="int32"/><reg name="es" bitsize="32" type="int32"/><reg name="fs" bitsize="32" type="int32"/><reg name="gs" bitsize="32" type="int32"/>"#
    };
}

macro_rules! system {
    () => {
        r#"<feature name="org.kvmini.x86.system"><reg name="cr0" bitsize="64" type="int64" group="system"/><reg name="cr2" bitsize="64" type="int64" group="system"/><reg name="cr3" bitsize="64" type="int64" group="system"/><reg name="cr4" bitsize="64" type="int64" group="system"/><reg name="cr8" bitsize="64" type="int64" group="system"/><reg name="efer" bitsize="64" type="int64" group="system"/></feature>"#
    };
}

/// The x86-64 description: GDB's 64-bit core, SSE and segments features, then kvmini's.
const X86_64_XML: &str = concat!(
    r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target version="1.0"><architecture>i386:x86-64</architecture><feature name="org.gnu.gdb.i386.core">"#,
    types!(),
    r#"<reg name="rax" bitsize="64" type="int64"/><reg name="rbx" bitsize="64" type="int64"/><reg name="rcx" bitsize="64" type="int64"/><reg name="rdx" bitsize="64" type="int64"/><reg name="rsi" bitsize="64" type="int64"/><reg name="rdi" bitsize="64" type="int64"/><reg name="rbp" bitsize="64" type="data_ptr"/><reg name="rsp" bitsize="64" type="data_ptr"/><reg name="r8" bitsize="64" type="int64"/><reg name="r9" bitsize="64" type="int64"/><reg name="r10" bitsize="64" type="int64"/><reg name="r11" bitsize="64" type="int64"/><reg name="r12" bitsize="64" type="int64"/><reg name="r13" bitsize="64" type="int64"/><reg name="r14" bitsize="64" type="int64"/><reg name="r15" bitsize="64" type="int64"/><reg name="rip" bitsize="64" type="code_ptr"/><reg name="eflags" bitsize="32" type="i386_eflags"/>"#,
    segments!(),
    x87!(),
    r#"</feature><feature name="org.gnu.gdb.i386.sse">"#,
    sse_types!(),
    r#"<reg name="xmm0" bitsize="128" type="vec128"/><reg name="xmm1" bitsize="128" type="vec128"/><reg name="xmm2" bitsize="128" type="vec128"/><reg name="xmm3" bitsize="128" type="vec128"/><reg name="xmm4" bitsize="128" type="vec128"/><reg name="xmm5" bitsize="128" type="vec128"/><reg name="xmm6" bitsize="128" type="vec128"/><reg name="xmm7" bitsize="128" type="vec128"/><reg name="xmm8" bitsize="128" type="vec128"/><reg name="xmm9" bitsize="128" type="vec128"/><reg name="xmm10" bitsize="128" type="vec128"/><reg name="xmm11" bitsize="128" type="vec128"/><reg name="xmm12" bitsize="128" type="vec128"/><reg name="xmm13" bitsize="128" type="vec128"/><reg name="xmm14" bitsize="128" type="vec128"/><reg name="xmm15" bitsize="128" type="vec128"/><reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/></feature><feature name="org.gnu.gdb.i386.segments"><reg name="fs_base" bitsize="64" type="int"/><reg name="gs_base" bitsize="64" type="int"/></feature>"#,
    system!(),
    "</target>"
);

/// The i386 description: GDB's 32-bit core and SSE features, then kvmini's.
const I386_XML: &str = concat!(
    r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target version="1.0"><architecture>i386</architecture><feature name="org.gnu.gdb.i386.core">"#,
    types!(),
    r#"<reg name="eax" bitsize="32" type="int32"/><reg name="ecx" bitsize="32" type="int32"/><reg name="edx" bitsize="32" type="int32"/><reg name="ebx" bitsize="32" type="int32"/><reg name="esp" bitsize="32" type="data_ptr"/><reg name="ebp" bitsize="32" type="data_ptr"/><reg name="esi" bitsize="32" type="int32"/><reg name="edi" bitsize="32" type="int32"/><reg name="eip" bitsize="32" type="code_ptr"/><reg name="eflags" bitsize="32" type="i386_eflags"/>"#,
    segments!(),
    x87!(),
    r#"</feature><feature name="org.gnu.gdb.i386.sse">"#,
    sse_types!(),
    r#"<reg name="xmm0" bitsize="128" type="vec128"/><reg name="xmm1" bitsize="128" type="vec128"/><reg name="xmm2" bitsize="128" type="vec128"/><reg name="xmm3" bitsize="128" type="vec128"/><reg name="xmm4" bitsize="128" type="vec128"/><reg name="xmm5" bitsize="128" type="vec128"/><reg name="xmm6" bitsize="128" type="vec128"/><reg name="xmm7" bitsize="128" type="vec128"/><reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/></feature>"#,
    system!(),
    "</target>"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> CpuState {
        let mut s = CpuState::default();
        s.regs.rax = 0x1111_2222_3333_4444;
        s.regs.rip = 0xffff_ffff_8100_0000;
        s.regs.rflags = 0x246;
        s.sregs.cr0 = CR0_PE | (1 << 31);
        s.sregs.cr3 = 0x9000;
        s.sregs.efer = 0x500;
        s.sregs.cs.selector = 0x8;
        s.sregs.fs.base = 0x7000;
        s.fpu.fcw = 0x37f;
        s.fpu.ftwx = 0b1000_0001;
        s.fpu.xmm[15] = [0xab; 16];
        s.fpu.mxcsr = 0x1f80;
        s
    }

    fn packet(g: &GdbRegs) -> Vec<u8> {
        let mut bytes = Vec::new();
        g.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        bytes
    }

    #[test]
    fn each_layout_has_the_size_its_description_says() {
        let count = |xml: &str, size: &str| xml.matches(&format!("bitsize=\"{size}\"")).count();
        for layout in [Layout::X86_64, Layout::I386] {
            let xml = layout.xml();
            let bits: usize = [32, 64, 80, 128]
                .iter()
                .map(|&b| b * count(xml, &b.to_string()))
                .sum();
            let g = GdbRegs::from_state(layout, &state());
            assert_eq!(packet(&g).len() * 8, bits, "{layout:?}");
            assert!(xml.contains("<reg name=\"cr3\""));
        }
        assert_eq!(
            packet(&GdbRegs::from_state(Layout::X86_64, &state())).len(),
            600
        );
        assert_eq!(
            packet(&GdbRegs::from_state(Layout::I386, &state())).len(),
            356
        );
    }

    #[test]
    fn a_packet_comes_back_as_the_same_state() {
        for layout in [Layout::X86_64, Layout::I386] {
            let s = state();
            let g = GdbRegs::from_state(layout, &s);
            let mut back = GdbRegs::default();
            back.gdb_deserialize(&packet(&g)).unwrap();
            assert_eq!(back, g);
            let applied = back.apply(&s);
            assert_eq!(applied.regs, s.regs, "{layout:?}");
            assert_eq!(applied.sregs, s.sregs, "{layout:?}");
            assert_eq!(applied.fpu.ftwx, s.fpu.ftwx);
            assert_eq!(applied.fpu.fcw, s.fpu.fcw);
        }
        assert!(GdbRegs::default().gdb_deserialize(&[0; 100]).is_err());
    }

    #[test]
    fn i386_shows_and_writes_the_low_halves() {
        let s = state();
        let mut g = GdbRegs::from_state(Layout::I386, &s);
        assert_eq!(g.legacy.eax, 0x3333_4444);
        assert_eq!(g.pc(), 0x8100_0000);
        g.legacy.eax = 0x5555_6666;
        let new = g.apply(&s);
        assert_eq!(new.regs.rax, 0x1111_2222_5555_6666);
        let g64 = GdbRegs::from_state(Layout::X86_64, &s);
        assert_eq!(g64.pc(), 0xffff_ffff_8100_0000);
        assert_eq!(g64.bases[0], 0x7000);
        assert_eq!(g64.system[2], 0x9000);
        // Abridged tag 1000_0001: registers 0 and 7 in use.
        assert_eq!(g64.long.fpu.ftag, 0x3ffc);
    }

    #[test]
    fn selectors_change_in_real_mode_only() {
        let mut s = state();
        let mut g = GdbRegs::from_state(Layout::I386, &s);
        g.legacy.segments.ds = 0x18;
        assert_eq!(g.apply(&s).sregs.ds.selector, 0, "protected mode keeps it");
        s.sregs.cr0 = 0;
        let new = g.apply(&s);
        assert_eq!((new.sregs.ds.selector, new.sregs.ds.base), (0x18, 0x180));
        assert_eq!(
            new.sregs.cs.selector, 0x8,
            "unchanged selectors keep their base"
        );
        assert_eq!(s.cpl(), 0);
        s.sregs.cr0 = CR0_PE;
        s.sregs.cs.selector = 0x2b;
        assert_eq!(s.cpl(), 3);
    }
}
