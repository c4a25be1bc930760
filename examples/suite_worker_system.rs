//! Benchmark suite worker with system as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `benches/suite/workloads.rs`.

#[path = "../benches/suite/workloads.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    workloads::main(&GLOBAL);
}
