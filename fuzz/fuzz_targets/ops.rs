//! Fuzz target `ops`: see `hugeguard::fuzz::ops` (src/fuzz/mod.rs) for what it
//! checks. Run with `cargo +nightly fuzz run ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hugeguard::fuzz::ops(data);
});
