//! The service demonstration's server with mimalloc as the global allocator
//! (one binary per allocator: linking jemalloc or mimalloc runs its
//! constructor, which maps memory, so they are not linked where unused).
//! Started by `examples/service.rs`; see `bench/src/service.rs`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    hugeguard_bench::service::server_main("mimalloc", false);
}
