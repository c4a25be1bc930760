//! The heap profile in pprof's protobuf format, decoded here field by
//! field: the sample and period types, every location in a mapping that
//! holds it, the estimate of the live bytes within 10 % of the truth, and
//! the heaviest sample's frames naming the function that keeps the bytes
//! (symbolized with `addr2line`). `go tool pprof` reads the same format
//! from a C program in `preload/tests/c_programs.rs`; Debian's (Go 1.19)
//! puts this Rust binary's symbols at the wrong addresses, for its text
//! profiles too (an executable linked by `lld`, whose code segment's
//! address and file offset differ).

#[cfg(not(hugeguard_fallback))]
use hugeguard::profile;
#[cfg(not(hugeguard_fallback))]
use hugeguard_testkit::pprof;
#[cfg(not(hugeguard_fallback))]
use std::process::Command;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

#[cfg(not(hugeguard_fallback))]
#[inline(never)]
fn keeps_forty_mib() -> Vec<Box<[u8; 4096]>> {
    let mut kept = Vec::with_capacity(10 * 1024);
    for i in 0..10 * 1024 {
        kept.push(Box::new([i as u8; 4096]));
    }
    std::hint::black_box(kept)
}

#[cfg(not(hugeguard_fallback))]
#[inline(never)]
fn churns(rounds: usize) -> usize {
    let mut sum = 0;
    for r in 0..rounds {
        let v: Vec<Box<[u8]>> = (0..1024)
            .map(|i| vec![(i + r) as u8; 1000].into_boxed_slice())
            .collect();
        sum += v.iter().map(|b| b[0] as usize).sum::<usize>();
    }
    sum
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn a_protobuf_profile_decodes_and_its_heaviest_stack_names_the_leaking_function() {
    // 16 KiB: about 2,300 samples of the 40 MiB kept (see profile_pprof.rs).
    profile::set_interval(16 * 1024);
    assert!(profile::start());
    drop(std::hint::black_box(vec![0u8; 2 << 20]));
    let kept = keeps_forty_mib();
    assert!(churns(64) > 0);
    let dir = std::env::temp_dir().join(format!("hugeguard-proto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("heap.pb");
    profile::write_pprof(&path).unwrap();
    profile::stop();
    let bytes = std::fs::read(&path).unwrap();

    let p = pprof::decode(&bytes).unwrap();
    assert_eq!(p.strings[0], "");
    let types: Vec<(&str, &str)> = p
        .sample_types
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        types,
        [("inuse_objects", "count"), ("inuse_space", "bytes")]
    );
    assert_eq!(p.period_type, Some(("space".into(), "bytes".into())));
    assert_eq!(p.period, 16 * 1024);
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.to_str().unwrap();
    assert!(
        p.mappings
            .iter()
            .any(|m| p.strings[m.filename as usize] == exe_name),
        "no mapping of {exe_name}: {:?}",
        p.mappings
    );
    for l in &p.locations {
        let m = p
            .mappings
            .iter()
            .find(|m| m.id == l.mapping_id)
            .unwrap_or_else(|| panic!("location {l:?} has no mapping"));
        assert!(
            (m.start..m.limit).contains(&l.address),
            "{l:?} outside {m:?}"
        );
    }
    for s in &p.samples {
        assert_eq!(s.values.len(), 2);
        assert!(s
            .location_ids
            .iter()
            .all(|id| p.locations.iter().any(|l| l.id == *id)));
    }
    // Every sample is kept by keeps_forty_mib but a few (the Vec's buffer,
    // the test harness's own): the estimate of all live bytes is the truth
    // within 10 %.
    let total: u64 = p.samples.iter().map(|s| s.values[1]).sum();
    let truth = 10 * 1024 * 4096;
    assert!(
        (total as f64 - truth as f64).abs() / (truth as f64) < 0.10,
        "{total} bytes estimated against {truth} kept"
    );

    // The heaviest sample's frames, symbolized by `addr2line` (binutils)
    // at the executable's load bias (its mapping at file offset 0), include
    // the function that kept the bytes.
    let heaviest = p.samples.iter().max_by_key(|s| s.values[1]).unwrap();
    let bias = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && f[5] == exe_name && u64::from_str_radix(f[2], 16) == Ok(0))
                .then(|| u64::from_str_radix(f[0].split('-').next().unwrap(), 16).unwrap())
        })
        .unwrap();
    let addrs: Vec<String> = heaviest
        .location_ids
        .iter()
        .map(|id| p.locations.iter().find(|l| l.id == *id).unwrap())
        .filter(|l| p.strings[p.mappings[l.mapping_id as usize - 1].filename as usize] == exe_name)
        .map(|l| format!("{:#x}", l.address - bias))
        .collect();
    match Command::new("addr2line")
        .args(["-f", "-i", "-C", "-e"])
        .arg(&exe)
        .args(&addrs)
        .output()
    {
        Ok(out) => {
            let names = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                names.contains("keeps_forty_mib"),
                "the heaviest sample's frames:\n{names}"
            );
        }
        Err(e) => eprintln!("skipped addr2line: {e} (apt-get install binutils)"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
    drop(kept);
}
