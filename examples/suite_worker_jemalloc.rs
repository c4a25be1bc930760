//! Benchmark suite worker with jemalloc as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `benches/suite/workloads.rs`.

#[path = "../benches/suite/workloads.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    workloads::main(&GLOBAL);
}
