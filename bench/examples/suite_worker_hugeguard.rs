//! Benchmark suite worker with hugeguard as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `bench/src/workloads.rs`.

use hugeguard_bench::workloads;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

fn main() {
    workloads::main(&GLOBAL);
}
