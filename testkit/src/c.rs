//! C programs compiled by the tests with the system C compiler (`$CC`, else
//! `cc`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Compiles `dir/NAME.c` into `out` with `flags`, once per test process.
///
/// Tests run in parallel and several use the same program: each is
/// compiled under one lock into a temporary file that is then renamed into
/// place, so no test can execute a half-written binary (CI saw `EACCES`
/// from exactly that race).
pub fn compile_once(dir: &Path, name: &str, out: &Path, flags: &[&str]) -> PathBuf {
    static DONE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|d| d == out) {
        return out.to_path_buf();
    }
    let src = dir.join(format!("{name}.c"));
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let st = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(flags)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("a C compiler (cc)");
    assert!(st.success(), "compiling {} failed", src.display());
    std::fs::rename(&tmp, out).expect("renaming the compiled program into place");
    done.push(out.to_path_buf());
    out.to_path_buf()
}
