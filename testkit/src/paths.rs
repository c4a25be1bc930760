//! Where the running test's build lives.

use std::path::PathBuf;

/// The directory of the running test binary (`target/<profile>/deps`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .expect("the test binary's directory")
        .to_path_buf()
}

/// The `libhugeguard_preload.so` built with the tests: `cargo test` leaves
/// it in `deps/`, `cargo build` in the profile directory above. The test's
/// package must depend on `hugeguard-preload` (a dev-dependency) so that it
/// is built.
pub fn preload_library() -> PathBuf {
    let deps = target_dir();
    [
        deps.join("libhugeguard_preload.so"),
        deps.parent()
            .map(|p| p.join("libhugeguard_preload.so"))
            .unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("libhugeguard_preload.so is not built (add hugeguard-preload as a dev-dependency)")
}
