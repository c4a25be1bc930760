//! The records scenario of issue 15 (the placement floor): 2 M records of
//! five small objects each (a struct, its name, its tag vector, its
//! payload, its key), 1 record in 64 kept, the rest freed, then idle. Run
//! in-process by `examples/placement.rs` under hugeguard and by the suite
//! workers (`records`, `records-trim`) under the other allocators, so that
//! one run compares them.

use std::time::Duration;

#[allow(dead_code)] // the fields are there to be allocated and kept
pub struct Record {
    pub id: u64,
    name: String,
    tags: Vec<u32>,
    payload: Box<[u8]>,
    key: Box<u64>,
}

/// Builds `n` records and keeps 1 in 64; returns the kept ones and the
/// peak RSS in bytes (measured before the rest are freed).
pub fn build_and_keep(n: u64) -> (Vec<Box<Record>>, usize) {
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut rng = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let records: Vec<Box<Record>> = (0..n)
        .map(|id| {
            let r = rng();
            Box::new(Record {
                id,
                name: format!("record-{id}-{}", r % 1000),
                tags: (0..1 + r % 6).map(|t| t as u32).collect(),
                payload: vec![r as u8; 24 + (r >> 8) as usize % 100].into_boxed_slice(),
                key: Box::new(r),
            })
        })
        .collect();
    let peak = crate::batch::rss_of(std::process::id());
    let kept = records.into_iter().filter(|r| r.id % 64 == 0).collect();
    (kept, peak)
}

/// Whether the kept records are the ones expected and intact.
pub fn kept_intact(kept: &[Box<Record>]) -> bool {
    kept.iter()
        .enumerate()
        .all(|(i, r)| r.id == i as u64 * 64 && r.name.starts_with("record-") && *r.key != 0)
}

/// The seconds the scenario waits idle before measuring (hugeguard's
/// background thread releases after about a second of quiet).
pub const IDLE: Duration = Duration::from_secs(6);

/// The rest of the scenario after `build_and_keep`: `malloc_trim(0)` if
/// `trim`, the idle wait, RSS, the simulated khugepaged, RSS again. Returns
/// `key=value` pairs for a `RESULT` line (bytes).
pub fn idle_then_collapse(trim: bool) -> String {
    if trim {
        // SAFETY: glibc's malloc_trim takes no pointers.
        unsafe { libc::malloc_trim(0) };
    }
    std::thread::sleep(IDLE);
    let pid = std::process::id();
    let idle = crate::batch::rss_of(pid);
    let vmas = crate::batch::vmas_of(pid);
    let sim = crate::batch::simulate_khugepaged();
    let after = crate::batch::rss_of(pid);
    format!(
        "idle={idle} after={after} collapsed={} refused={} vmas={vmas}",
        sim.collapsed, sim.refused
    )
}
