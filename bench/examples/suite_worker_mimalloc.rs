//! Benchmark suite worker with mimalloc as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `bench/src/workloads.rs`.

use hugeguard_bench::workloads;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    workloads::main(&GLOBAL);
}
