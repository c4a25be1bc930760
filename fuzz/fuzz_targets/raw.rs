//! Fuzz target `raw`: see `hugeguard::fuzz::raw` (src/fuzz/c_abi.rs) for
//! what it checks. Run with `cargo +nightly fuzz run raw`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hugeguard::fuzz::raw(data);
});
