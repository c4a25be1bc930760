//! The THP sysfs settings that make the real khugepaged fast enough for a
//! demonstration (`enabled=always`, `scan_sleep_millisecs=100`,
//! `pages_to_scan=4096`), for `--real` of the khugepaged and service
//! examples, and an mTHP size set to `always` (`--mthp` of the khugepaged
//! example): saved first, restored when the guard drops, on failure, or on
//! SIGINT/SIGTERM (with raw system calls from the handler). Root only; never
//! used by `cargo test`.

use std::sync::Mutex;

const FILES: [(&str, &str); 3] = [
    ("/sys/kernel/mm/transparent_hugepage/enabled", "always"),
    (
        "/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs",
        "100",
    ),
    (
        "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan",
        "4096",
    ),
];
// Saved values as NUL-terminated path and value buffers, so the signal
// handler can restore them with raw system calls.
const MAX_SAVED: usize = 4;
static mut SAVED: [([u8; 128], [u8; 32], usize); MAX_SAVED] = [([0; 128], [0; 32], 0); MAX_SAVED];
static NSAVED: Mutex<usize> = Mutex::new(0);

fn current(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    // "always [madvise] never" -> "madvise"; plain numbers as they are.
    Some(match (s.find('['), s.find(']')) {
        (Some(a), Some(b)) => s[a + 1..b].to_string(),
        _ => s.trim().to_string(),
    })
}

/// Restores everything saved; async-signal-safe.
pub fn restore() {
    // SAFETY: SAVED is written before the handler is installed and only
    // read afterwards; raw open/write/close are async-signal-safe.
    unsafe {
        let saved = &*core::ptr::addr_of!(SAVED);
        // Newest first: a file saved twice ends with its first value.
        for (path, value, len) in saved.iter().rev() {
            if *len == 0 {
                continue;
            }
            let fd = libc::open(path.as_ptr() as *const libc::c_char, libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, value.as_ptr() as *const libc::c_void, *len);
                libc::close(fd);
            }
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    restore();
    // SAFETY: re-raise with the default action after restoring.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Saves and sets the values that speed khugepaged up; restores on Drop
/// of the guard.
pub fn speed_up() -> Result<Guard, String> {
    set(&FILES)
}

/// The mTHP size of `kb` KiB set to `always` (`hugepages-<kb>kB/enabled`,
/// Linux 6.8+), for `--mthp` of the khugepaged example; restored on Drop of
/// the guard.
pub fn mthp_always(kb: usize) -> Result<Guard, String> {
    let path = format!("/sys/kernel/mm/transparent_hugepage/hugepages-{kb}kB/enabled");
    set(&[(path.as_str(), "always")])
}

/// THP's own switch (`transparent_hugepage/enabled`) set to `word`
/// (`always`, `madvise`, `never`) for `--thp` of the khugepaged example;
/// restored on Drop of the guard.
pub fn thp_enabled(word: &str) -> Result<Guard, String> {
    set(&[("/sys/kernel/mm/transparent_hugepage/enabled", word)])
}

/// Saves each file's value, then writes the new one; a signal or the
/// guard's Drop restores them all. At most [`MAX_SAVED`] files in all.
pub fn set(files: &[(&str, &str)]) -> Result<Guard, String> {
    let mut n = NSAVED.lock().unwrap();
    if *n + files.len() > MAX_SAVED {
        return Err("too many sysfs files to save".to_string());
    }
    for (path, _) in files {
        let v = current(path).ok_or(format!("cannot read {path}"))?;
        if path.len() >= 128 || v.len() > 32 {
            return Err(format!("{path}: path or value too long to save"));
        }
        // SAFETY: SAVED is written only here, under NSAVED's lock, in a
        // slot the handler does not read until its length is set.
        unsafe {
            let slot = &mut (*core::ptr::addr_of_mut!(SAVED))[*n];
            slot.0[..path.len()].copy_from_slice(path.as_bytes());
            slot.1[..v.len()].copy_from_slice(v.as_bytes());
            slot.2 = v.len();
        }
        *n += 1;
    }
    // SAFETY: installing a handler that only makes raw system calls.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let guard = Guard;
    for (path, value) in files {
        std::fs::write(path, value)
            .map_err(|e| format!("cannot write {path}: {e} (run as root)"))?;
    }
    Ok(guard)
}

/// Restores the saved values when dropped (also on panic).
pub struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        restore();
        eprintln!("restored THP sysfs settings");
    }
}
