//! kvmini's measuring kit, shared by `kvmini compare` and the benchmark: the same code times
//! every process and summarizes every set of samples, so that their numbers mean the same.
//!
//! - [`runner`]: start a child process, time its first output (a byte of a text, or a line)
//!   and its end from the moment it calls `execve`, with a hang limit; several at once.
//! - [`memory`]: the memory of a process tree from `/proc` (`proc(5)`): peak RSS and PSS
//!   sampled while it runs, and a process's resident memory split at its guest-RAM mapping.
//! - [`stats`]: percentiles (one definition: linear interpolation between closest ranks),
//!   the median and a [`stats::Summary`].
//! - [`table`]: text tables with aligned columns.
//! - [`date`]: calendar dates of Unix times, for reports and logs.
//!
//! It depends on libc, serde and thiserror only, and never on the VMM library.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod date;
pub mod memory;
pub mod runner;
pub mod stats;
pub mod table;

pub use runner::command_line;
