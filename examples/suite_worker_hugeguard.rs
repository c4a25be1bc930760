//! Benchmark suite worker with hugeguard as the global allocator, chosen at build
//! time. Run by `examples/suite.rs`; see `benches/suite/workloads.rs`.

#[path = "../benches/suite/workloads.rs"]
mod workloads;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

fn main() {
    workloads::main(&GLOBAL);
}
