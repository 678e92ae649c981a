//! kvmini's measuring kit, shared by `kvmini compare` and the benchmark.
