//! HugeGuard as the global allocator under std-heavy work: collections,
//! strings, threads freeing each other's objects, thread exit, and fork.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

#[test]
fn collections_and_strings() {
    let mut map = HashMap::new();
    let mut tree = BTreeMap::new();
    for i in 0..50_000u64 {
        map.insert(format!("key-{i}"), vec![i; (i % 17) as usize]);
        tree.insert(i, i.to_string().repeat((i % 5) as usize));
    }
    for i in (0..50_000u64).step_by(3) {
        map.remove(&format!("key-{i}"));
        tree.remove(&i);
    }
    for i in 0..50_000u64 {
        let expect_present = i % 3 != 0;
        let v = map.get(&format!("key-{i}"));
        assert_eq!(v.is_some(), expect_present);
        if let Some(v) = v {
            assert!(v.iter().all(|&x| x == i) && v.len() == (i % 17) as usize);
            assert_eq!(tree[&i], i.to_string().repeat((i % 5) as usize));
        }
    }
    let mut dq: VecDeque<Box<[u8]>> = VecDeque::new();
    for n in 0..2000usize {
        dq.push_back(vec![n as u8; n * 37 % 70_000].into_boxed_slice());
        if n % 3 == 0 {
            let b = dq.pop_front().unwrap();
            assert!(b.iter().all(|&x| x == b.first().copied().unwrap_or(0)));
        }
    }
    let mut s = String::new();
    for i in 0..100_000 {
        s.push_str(&i.to_string());
    }
    assert!(s.len() > 400_000);
    s.shrink_to_fit();
    assert!(s.starts_with("0123456789101112"));
}

#[test]
fn large_and_aligned_layouts_through_std() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let pages: Vec<Box<Page>> = (0..100).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
    for align_shift in [21usize, 22, 24] {
        let layout = std::alloc::Layout::from_size_align(64, 1 << align_shift).unwrap();
        // SAFETY: non-zero layout; freed below with the same layout.
        unsafe {
            let p = std::alloc::alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % (1 << align_shift), 0);
            p.write_bytes(7, 64);
            std::alloc::dealloc(p, layout);
        }
    }
    let big = vec![3u8; 50 << 20];
    assert_eq!(big[big.len() - 1], 3);
    let zeroed = vec![0u64; 10 << 20];
    assert!(zeroed.iter().step_by(4096).all(|&x| x == 0));
}

#[test]
fn threads_free_each_others_objects_and_exit() {
    for _round in 0..3 {
        let (tx, rx) = mpsc::sync_channel::<Vec<Box<[u64]>>>(64);
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for batch in 0..200u64 {
                        let v: Vec<Box<[u64]>> = (0..50u64)
                            .map(|i| {
                                let n = ((i * 7 + batch) % 300 + 1) as usize;
                                vec![t * 1_000_000 + batch * 100 + i; n].into_boxed_slice()
                            })
                            .collect();
                        tx.send(v).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let consumer = thread::spawn(move || {
            let mut total = 0usize;
            for v in rx {
                for b in v {
                    let first = b[0];
                    assert!(b.iter().all(|&x| x == first), "block corrupted");
                    total += 1;
                }
            }
            total
        });
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(consumer.join().unwrap(), 4 * 200 * 50);
    }
    // Many short-lived threads: each exits with a warm cache that must be
    // given back, not leaked.
    hugeguard::flush_caches();
    let before = hugeguard::stats();
    for _ in 0..20 {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                thread::spawn(|| {
                    let v: Vec<Vec<u8>> = (0..2000).map(|i| vec![1u8; i % 512 + 1]).collect();
                    v.len()
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), 2000);
        }
    }
    hugeguard::flush_caches();
    let after = hugeguard::stats();
    // 160 threads each cached up to ~2 MiB when they exited; if those caches
    // leaked, spans would stay in use.
    assert!(
        after.span_bytes <= before.span_bytes + (8 << 20),
        "span bytes grew from {} to {}",
        before.span_bytes,
        after.span_bytes
    );
}

#[test]
fn fork_from_busy_threaded_process() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![t as u8; (i * 131) % 40_000 + 1]);
                    if keep.len() > 500 {
                        keep.drain(..250);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for _ in 0..30 {
        // SAFETY: the child only allocates through hugeguard, checks, and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let v: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
            let big = vec![9u8; 8 << 20];
            let ok = v[9_999] == "9999" && big.iter().step_by(4096).all(|&b| b == 9);
            // SAFETY: leaving the child without running the parent's atexit work.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let mut status = 0;
        let mut waited = 0;
        loop {
            // SAFETY: waiting on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            waited += 1;
            if waited > 2000 {
                // SAFETY: killing our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("child deadlocked after fork");
            }
            thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: {status}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}
