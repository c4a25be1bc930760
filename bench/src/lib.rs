//! Benchmarks, the benchmark suite and the demonstrations of hugeguard, and
//! the scenario code they share with the scenario tests: kept out of the
//! library crate, so the comparison allocators (mimalloc, jemalloc) and
//! criterion are this crate's dependencies, not the library's.
//!
//! * [`batch`]: the batch-then-idle scenario (child side and the watcher),
//!   the idle worker pool, and the in-process khugepaged simulator.
//! * [`workloads`]: the suite's workloads, run by one worker binary per
//!   allocator (`examples/suite_worker_*.rs`).
//! * [`records`]: the records scenario of the placement floor (issue 15).
//! * [`svg`]: a line chart of RSS over time.
//! * [`service`]: a real HTTP service (tokio, axum) and its load generator,
//!   for `examples/service/` (which also holds the global allocator chosen
//!   at start-up: it is not in this library, because linking mimalloc runs
//!   its constructor, which maps memory, in every program that links it).
//!
//! Run from the workspace root: `cargo run --release -p hugeguard-bench
//! --example khugepaged` (the demonstration), `--example suite` (the suite),
//! `--example churn`; `cargo bench -p hugeguard-bench --bench alloc`.

pub mod batch;
pub mod records;
pub mod service;
pub mod svg;
pub mod sysfs;
pub mod workloads;
