//! Fuzz target `threads`: see `hugeguard::fuzz::threads` (src/fuzz/mod.rs) for what it
//! checks. Run with `cargo +nightly fuzz run threads`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hugeguard::fuzz::threads(data);
});
