//! Fuzz target `mesh`: see `hugeguard::fuzz::mesh` (src/fuzz/mod.rs) for
//! what it checks. Mesh mode is turned on here, before the first
//! allocation from hugeguard; meshing itself needs root (a userfaultfd that
//! holds back every write). Run with `cargo +nightly fuzz run mesh`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // SAFETY: set before any thread of ours reads the environment (the
        // fuzzer's own threads do not).
        unsafe { std::env::set_var("HUGEGUARD_MESH", "on") };
    },
    |data: &[u8]| {
        hugeguard::fuzz::mesh(data);
    }
);
