//! Benchmark suite worker with jemalloc as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `bench/src/workloads.rs`.

use hugeguard_bench::workloads;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    workloads::main(&GLOBAL);
}
