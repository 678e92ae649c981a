//! Architecture support; x86-64 is the only architecture kvmini runs.

pub mod x86_64;
