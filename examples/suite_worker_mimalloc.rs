//! Benchmark suite worker with mimalloc as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `benches/suite/workloads.rs`.

#[path = "../benches/suite/workloads.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    workloads::main(&GLOBAL);
}
