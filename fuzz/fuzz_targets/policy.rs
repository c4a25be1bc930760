//! Fuzz target `policy`: see `hugeguard::fuzz::policy` (src/fuzz/mod.rs) for what it
//! checks. Run with `cargo +nightly fuzz run policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hugeguard::fuzz::policy(data);
});
