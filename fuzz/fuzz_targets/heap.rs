//! Fuzz target `heap`: see `hugeguard::fuzz::heap` (src/fuzz/private.rs)
//! for what it checks. Run with `cargo +nightly fuzz run heap`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hugeguard::fuzz::heap(data);
});
