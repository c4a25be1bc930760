//! The THP sysfs settings that make the real khugepaged fast enough for a
//! demonstration (`enabled=always`, `scan_sleep_millisecs=100`,
//! `pages_to_scan=4096`), for `--real` of the khugepaged and service
//! examples: saved first, restored when the guard drops, on failure, or on
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
static mut SAVED: [([u8; 128], [u8; 32], usize); 3] = [([0; 128], [0; 32], 0); 3];
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
        for (path, value, len) in saved.iter() {
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

/// Saves and sets the values; restores on Drop of the guard.
pub fn speed_up() -> Result<Guard, String> {
    let mut n = NSAVED.lock().unwrap();
    for (i, (path, _)) in FILES.iter().enumerate() {
        let v = current(path).ok_or(format!("cannot read {path}"))?;
        // SAFETY: single-threaded set-up before the handler exists.
        unsafe {
            let slot = &mut (*core::ptr::addr_of_mut!(SAVED))[i];
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
    for (path, value) in FILES {
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
