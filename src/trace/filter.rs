//! Which exits `--trace=FILTER` shows. The grammar:
//!
//! ```text
//! FILTER = ITEM { "," ITEM }
//! ITEM   = KIND [ ":" ADDR [ "-" ADDR ] ]
//! KIND   = all | io | io-in | io-out | mmio | mmio-read | mmio-write | hlt | shutdown
//!        | fail-entry | internal-error | interrupted | system-event | debug | other
//! ADDR   = a number, decimal or with 0x (a port for io kinds, a guest-physical address for
//!          mmio kinds); the range is inclusive, one ADDR is a range of one
//! ```
//!
//! An exit is shown when any item selects it: its kind is the item's (`io` is both port
//! kinds, `mmio` both MMIO kinds, `all` every kind) and, when the item has a range, its port
//! or address lies in it. Only the io and mmio kinds take a range. The kinds are the names
//! `--stats` counts exits by.

use crate::config;
use crate::vcpu::exit::Exit;

/// An exit's kind, named as `--stats` and `--trace` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// `out`.
    IoOut,
    /// `in`.
    IoIn,
    /// A write to guest-physical memory that is not RAM.
    MmioWrite,
    /// A read of guest-physical memory that is not RAM.
    MmioRead,
    /// `hlt`.
    Hlt,
    /// A triple fault.
    Shutdown,
    /// A failed VM entry.
    FailEntry,
    /// A KVM internal error (emulation failures among them).
    InternalError,
    /// `KVM_RUN` interrupted by a signal (a kick: a stop, `--timeout`).
    Interrupted,
    /// A guest-requested shutdown or reset.
    SystemEvent,
    /// A single step, breakpoint or watchpoint of the debugger (`--gdb`).
    Debug,
    /// Any other exit.
    Other,
}

impl ExitKind {
    /// Every kind, in the order `--stats` lists them.
    pub const ALL: [ExitKind; 12] = [
        ExitKind::IoOut,
        ExitKind::IoIn,
        ExitKind::MmioWrite,
        ExitKind::MmioRead,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::FailEntry,
        ExitKind::InternalError,
        ExitKind::Interrupted,
        ExitKind::SystemEvent,
        ExitKind::Debug,
        ExitKind::Other,
    ];

    /// The kind's name: `io-out`, `mmio-read`, `hlt`...
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoOut => "io-out",
            ExitKind::IoIn => "io-in",
            ExitKind::MmioWrite => "mmio-write",
            ExitKind::MmioRead => "mmio-read",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::FailEntry => "fail-entry",
            ExitKind::InternalError => "internal-error",
            ExitKind::Interrupted => "interrupted",
            ExitKind::SystemEvent => "system-event",
            ExitKind::Debug => "debug",
            ExitKind::Other => "other",
        }
    }

    /// The kind of `exit`, and the port or guest-physical address it touched.
    pub(crate) fn of(exit: &Exit<'_>) -> (ExitKind, Option<u64>) {
        match exit {
            Exit::IoOut { port, .. } => (ExitKind::IoOut, Some(u64::from(*port))),
            Exit::IoIn { port, .. } => (ExitKind::IoIn, Some(u64::from(*port))),
            Exit::MmioWrite(addr, _) => (ExitKind::MmioWrite, Some(*addr)),
            Exit::MmioRead(addr, _) => (ExitKind::MmioRead, Some(*addr)),
            Exit::Hlt => (ExitKind::Hlt, None),
            Exit::Shutdown => (ExitKind::Shutdown, None),
            Exit::FailEntry(_) => (ExitKind::FailEntry, None),
            Exit::InternalError { .. } => (ExitKind::InternalError, None),
            Exit::Interrupted => (ExitKind::Interrupted, None),
            Exit::SystemEvent(_) => (ExitKind::SystemEvent, None),
            Exit::Debug(_) => (ExitKind::Debug, None),
            Exit::Other(_) => (ExitKind::Other, None),
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The kinds an item names: one, or a group.
const GROUPS: [(&str, &[ExitKind]); 3] = [
    ("all", &ExitKind::ALL),
    ("io", &[ExitKind::IoIn, ExitKind::IoOut]),
    ("mmio", &[ExitKind::MmioRead, ExitKind::MmioWrite]),
];

/// The largest I/O port.
const MAX_PORT: u64 = 0xffff;

/// Why a filter was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Nothing between two commas, or nothing at all.
    #[error("'{0}' has an empty item; write KIND[:FROM[-TO]] items separated by commas, e.g. io:0x3f8-0x3ff,hlt")]
    Empty(String),
    /// A kind the grammar does not have.
    #[error("'{0}' is not an exit kind; the kinds are all, io, mmio, {known}", known = ExitKind::ALL.map(ExitKind::name).join(", "))]
    UnknownKind(String),
    /// A bound that is not a number.
    #[error("'{0}' in '{1}' is not a number; write it in decimal or with 0x")]
    BadNumber(String, String),
    /// A range on a kind that touches no port or address.
    #[error("'{0}': only io and mmio kinds take a port or address range")]
    RangeOnKind(String),
    /// A range whose end comes before its start.
    #[error("'{0}': the range ends before it starts")]
    Reversed(String),
    /// A port range past the last port.
    #[error("'{0}': I/O ports go up to 0xffff")]
    PortTooLarge(String),
}

/// One item: these kinds, optionally only within `[lo, hi]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Item {
    kinds: u16,
    range: Option<(u64, u64)>,
}

/// Which exits the trace shows: every one, or those the items of a `--trace=FILTER` select.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// No items: every exit.
    items: Vec<Item>,
}

impl Filter {
    /// Every exit.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Parses a filter (the grammar is in the module docs).
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let items = text
            .split(',')
            .map(|item| parse_item(item.trim(), text))
            .collect::<Result<Vec<_>, _>>()?;
        // `all` without a range selects everything: no items at all, the cheapest test.
        if items
            .iter()
            .any(|i| i.kinds == all_kinds() && i.range.is_none())
        {
            return Ok(Filter::all());
        }
        Ok(Filter { items })
    }

    /// Whether the trace shows an exit of `kind` at `addr` (its port or guest-physical
    /// address, when it has one).
    pub fn matches(&self, kind: ExitKind, addr: Option<u64>) -> bool {
        self.items.is_empty()
            || self.items.iter().any(|i| {
                i.kinds & kind.bit() != 0
                    && match (i.range, addr) {
                        (None, _) => true,
                        (Some((lo, hi)), Some(a)) => (lo..=hi).contains(&a),
                        (Some(_), None) => false,
                    }
            })
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

fn all_kinds() -> u16 {
    ExitKind::ALL.iter().fold(0, |bits, k| bits | k.bit())
}

fn parse_item(item: &str, whole: &str) -> Result<Item, FilterError> {
    if item.is_empty() {
        return Err(FilterError::Empty(whole.to_string()));
    }
    let (kind, range) = match item.split_once(':') {
        Some((kind, range)) => (kind.trim(), Some(range.trim())),
        None => (item, None),
    };
    let kinds = match GROUPS.iter().find(|(name, _)| *name == kind) {
        Some((_, group)) => group.iter().fold(0, |bits, k| bits | k.bit()),
        None => ExitKind::ALL
            .iter()
            .find(|k| k.name() == kind)
            .ok_or_else(|| FilterError::UnknownKind(kind.to_string()))?
            .bit(),
    };
    let Some(range) = range else {
        return Ok(Item { kinds, range: None });
    };
    let io = ExitKind::IoIn.bit() | ExitKind::IoOut.bit();
    let mmio = ExitKind::MmioRead.bit() | ExitKind::MmioWrite.bit();
    if kinds & !(io | mmio) != 0 {
        return Err(FilterError::RangeOnKind(item.to_string()));
    }
    let number = |s: &str| {
        config::parse_u64(s).map_err(|_| FilterError::BadNumber(s.to_string(), item.to_string()))
    };
    let (lo, hi) = match range.split_once('-') {
        Some((lo, hi)) => (number(lo)?, number(hi)?),
        None => {
            let at = number(range)?;
            (at, at)
        }
    };
    if hi < lo {
        return Err(FilterError::Reversed(item.to_string()));
    }
    if kinds & mmio == 0 && hi > MAX_PORT {
        return Err(FilterError::PortTooLarge(item.to_string()));
    }
    Ok(Item {
        kinds,
        range: Some((lo, hi)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExitKind::*;

    fn parse(s: &str) -> Filter {
        Filter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn no_filter_and_all_select_every_exit() {
        for f in [Filter::all(), parse("all"), parse("io:0x3f8,all")] {
            assert!(ExitKind::ALL.iter().all(|k| f.matches(*k, None)));
            assert!(f.matches(MmioRead, Some(0xdead_0000)));
        }
    }

    #[test]
    fn kinds_and_groups_select_their_exits() {
        let f = parse("io, hlt");
        assert!(f.matches(IoIn, Some(0x60)) && f.matches(IoOut, Some(0xf4)));
        assert!(f.matches(Hlt, None));
        assert!(!f.matches(MmioWrite, Some(0xd000_0000)) && !f.matches(Shutdown, None));
        let f = parse("mmio-write,internal-error");
        assert!(f.matches(MmioWrite, Some(1)) && !f.matches(MmioRead, Some(1)));
        assert!(f.matches(InternalError, None));
        for k in ExitKind::ALL {
            assert!(parse(k.name()).matches(k, Some(0)), "{}", k.name());
        }
    }

    #[test]
    fn ranges_are_inclusive_and_single_addresses_are_ranges_of_one() {
        let f = parse("io:0x3f8-0x3ff,mmio:0xd0000000-0xd0000fff");
        assert!(f.matches(IoOut, Some(0x3f8)) && f.matches(IoIn, Some(0x3ff)));
        assert!(!f.matches(IoOut, Some(0x3f7)) && !f.matches(IoOut, Some(0x400)));
        assert!(f.matches(MmioRead, Some(0xd000_0fff)));
        assert!(!f.matches(MmioRead, Some(0xd000_1000)));
        // A port range does not select an MMIO address with the same number.
        assert!(!f.matches(MmioWrite, Some(0x3f8)));
        let f = parse("io-out:244");
        assert!(f.matches(IoOut, Some(0xf4)));
        assert!(!f.matches(IoIn, Some(0xf4)) && !f.matches(IoOut, Some(0xf5)));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let err = |s: &str| Filter::parse(s).unwrap_err();
        assert_eq!(err(""), FilterError::Empty(String::new()));
        assert_eq!(err("io,,hlt"), FilterError::Empty("io,,hlt".into()));
        assert_eq!(err("pio"), FilterError::UnknownKind("pio".into()));
        assert!(err("pio").to_string().contains("io-in, mmio-write"));
        assert_eq!(
            err("io:0x3fz"),
            FilterError::BadNumber("0x3fz".into(), "io:0x3fz".into())
        );
        assert_eq!(
            err("io:0x3f8-"),
            FilterError::BadNumber(String::new(), "io:0x3f8-".into())
        );
        assert_eq!(err("hlt:0x10"), FilterError::RangeOnKind("hlt:0x10".into()));
        assert_eq!(err("all:1"), FilterError::RangeOnKind("all:1".into()));
        assert_eq!(
            err("io:0x3ff-0x3f8"),
            FilterError::Reversed("io:0x3ff-0x3f8".into())
        );
        assert_eq!(
            err("io:0x10000"),
            FilterError::PortTooLarge("io:0x10000".into())
        );
        // An MMIO range may go anywhere in the 64-bit space.
        parse("mmio:0xfee00000-0xffffffffffffffff");
    }
}
