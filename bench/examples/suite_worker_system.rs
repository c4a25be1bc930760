//! Benchmark suite worker with system as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `bench/src/workloads.rs`.

use hugeguard_bench::workloads;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    workloads::main(&GLOBAL);
}
