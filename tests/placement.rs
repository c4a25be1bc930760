//! `hugeguard::placement()`: after a batch frees all but 1 object in 63,
//! the survivors' class shows one live object per page holding a live
//! byte; in mesh mode the mesher's planner, run dry, finds units to mesh.

// The Linux heap's own behaviour (the fallback build forwards to `System`).
#![cfg(not(hugeguard_fallback))]

use hugeguard::HugeGuard;

#[global_allocator]
static A: HugeGuard = HugeGuard;

#[test]
fn a_sparse_class_shows_its_floor_and_meshable_spans() {
    // 1,000-byte boxes: a class no test harness allocation is likely to use
    // in numbers.
    let batch: Vec<Box<[u8; 1000]>> = (0..64 * 2000)
        .map(|i| Box::new([(i % 251) as u8; 1000]))
        .collect();
    // 1 in 63: the survivors fall on every slot of their spans in turn.
    let kept: Vec<Box<[u8; 1000]>> = batch.into_iter().step_by(63).collect();
    hugeguard::release_now();
    let p = hugeguard::placement();
    let c = p
        .classes
        .iter()
        .filter(|c| c.object_size >= 1000 && c.object_size < 1100)
        .max_by_key(|c| c.live_objects)
        .expect("the class of 1000-byte objects");
    println!("{p}");
    assert!(
        c.live_objects >= kept.len() && c.live_objects < kept.len() + 100,
        "{c:?}"
    );
    // Survivors sit 63 objects apart: no page holds two of them.
    assert!(c.live_pages >= kept.len(), "{c:?}");
    assert!(
        c.histogram[0] * 10 >= c.live_pages * 9,
        "mostly one object per page: {c:?}"
    );
    assert!(c.resident_pages >= c.live_pages, "{c:?}");
    if std::env::var("HUGEGUARD_MESH").as_deref() == Ok("on") {
        // Mesh mode (CI's second pass): the survivors sit in class homes at
        // scattered slots, and the planner finds most of their units.
        assert!(c.meshable.pages * 2 > c.live_pages, "{c:?}");
    } else {
        // Without mesh mode no class has home huge pages: the mesher would
        // mesh nothing.
        assert_eq!(c.meshable, hugeguard::MeshEstimate::default(), "{c:?}");
    }
    let (live_bytes, live_pages, resident) = p.totals();
    assert!(
        live_bytes >= kept.len() * 1000
            && live_pages >= c.live_pages
            && resident >= live_pages
            && p.meshable().pages >= c.meshable.pages
    );
    assert!(kept
        .iter()
        .enumerate()
        .all(|(i, b)| b[0] == ((i * 63) % 251) as u8));
}

/// Runs `child_regular_records` in a child process with `HUGEGUARD_MESH`
/// set to `mesh`; returns (pages holding a live byte, meshable pages,
/// mappings meshing would add) of the class of 64-byte objects.
fn regular_records_under(mesh: &str) -> (usize, usize, usize) {
    let out = hugeguard_testkit::child::command("child_regular_records")
        .env("HUGEGUARD_MESH", mesh)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed:\n{text}");
    let line = text
        .lines()
        .find_map(|l| l.split("FLOOR ").nth(1))
        .unwrap_or_else(|| panic!("no FLOOR line:\n{text}"));
    let v: Vec<usize> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

#[test]
fn in_mesh_mode_the_planner_finds_the_scattered_survivors_meshable() {
    let (live_off, meshable_off, vmas_off) = regular_records_under("off");
    let (live_on, meshable_on, vmas_on) = regular_records_under("on");
    println!("off: {live_off} {meshable_off} {vmas_off}; on: {live_on} {meshable_on} {vmas_on}");
    // Without mesh mode there are no class homes: nothing to mesh.
    assert_eq!((meshable_off, vmas_off), (0, 0));
    // Random slots in class homes leave the survivors at scattered offsets:
    // the planner meshes units holding most of the class's live pages.
    assert!(meshable_on * 3 > live_on, "on: {meshable_on} of {live_on}");
    assert!(vmas_on > 0 && vmas_on % 2 == 0, "two mappings per unit");
}

use hugeguard_testkit::meshing_possible;

#[test]
fn where_meshing_is_possible_a_round_meshes_what_the_dry_run_counted() {
    if !meshing_possible() {
        println!("skipped: no userfaultfd for all faults here (not root)");
        return;
    }
    let out = hugeguard_testkit::child::command("child_regular_records")
        .env("HUGEGUARD_MESH", "on")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed:\n{text}");
    let meshed: usize = text
        .lines()
        .find_map(|l| l.split("MESHED ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MESHED line:\n{text}"));
    assert!(meshed > 0, "{text}");
}

#[test]
#[ignore = "run by the two tests above it"]
fn child_regular_records() {
    // Records of two 64-byte objects made in the same order; 1 in 32 kept.
    type Record = (Box<[u8; 64]>, Box<[u8; 64]>);
    let batch: Vec<Record> = (0..40_000)
        .map(|i| (Box::new([i as u8; 64]), Box::new([!(i as u8); 64])))
        .collect();
    let kept: Vec<_> = batch.into_iter().step_by(32).collect();
    hugeguard::release_now();
    let p = hugeguard::placement();
    let c = p
        .classes
        .iter()
        .find(|c| c.object_size == 64)
        .expect("a class of 64-byte objects");
    println!(
        "FLOOR {} {} {}",
        c.live_pages, c.meshable.pages, c.meshable.vmas
    );
    // The dry run is the planner a meshing round runs: where meshing is on
    // (mesh mode, and the kernel holds back writes), a round meshes at
    // least the units it counted (a second round may add more).
    let r = hugeguard::mesh_now();
    println!("MESHED {}", r.meshed_units);
    if r.meshed_units != 0 {
        assert!(
            r.meshed_units * 2 >= c.meshable.vmas,
            "meshed {} units, the dry run counted {}",
            r.meshed_units,
            c.meshable.vmas / 2
        );
    }
    assert!(kept
        .iter()
        .enumerate()
        .all(|(i, (a, b))| a[63] == (i * 32) as u8 && b[0] == !((i * 32) as u8)));
}
