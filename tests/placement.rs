//! `hugeguard::placement()`: after a batch frees all but 1 object in 63,
//! the survivors' class shows one live object per page holding a live
//! byte, and disjoint spans that meshing could merge.

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
    // Spans with one survivor each at different slots pair up.
    assert!(c.pairs.pages > 0 && c.pairs.vmas > 0, "{c:?}");
    // Merging sets frees at least what pairing does; a mesh costs mappings.
    assert!(c.merged.pages >= c.pairs.pages, "{c:?}");
    let (live_bytes, live_pages, resident) = p.totals();
    let [pairs, merged, runs] = p.mesh_totals();
    assert!(
        live_bytes >= kept.len() * 1000
            && live_pages >= c.live_pages
            && resident >= live_pages
            && pairs.pages >= c.pairs.pages
            && merged.pages >= c.merged.pages
            && runs.pages >= c.runs.pages
    );
    assert!(kept
        .iter()
        .enumerate()
        .all(|(i, b)| b[0] == ((i * 63) % 251) as u8));
}

/// Runs `child_regular_records` in a child process with `HUGEGUARD_MESH`
/// set to `mesh`; returns (pages holding a live byte, meshable pages in
/// pairs, meshable pages merging sets) of the class of 64-byte objects.
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
fn mesh_mode_scatters_the_survivors_of_regular_records_so_spans_could_mesh() {
    let (live_off, pairs_off, merged_off) = regular_records_under("off");
    let (live_on, pairs_on, merged_on) = regular_records_under("on");
    println!("off: {live_off} {pairs_off} {merged_off}; on: {live_on} {pairs_on} {merged_on}");
    // Handed out in address order, every record's objects take the same
    // slots span after span, and so do the survivors: nothing pairs.
    assert!(pairs_off * 20 < live_off, "off: {pairs_off} of {live_off}");
    // Random slots leave the survivors at scattered offsets: most spans
    // pair, and merged sets free most pages.
    assert!(pairs_on * 3 > live_on, "on: {pairs_on} of {live_on}");
    assert!(merged_on * 3 > live_on * 2, "on: {merged_on} of {live_on}");
    assert!(merged_on >= pairs_on);
}

#[test]
#[ignore = "run by mesh_mode_scatters_the_survivors_of_regular_records_so_spans_could_mesh"]
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
        c.live_pages, c.pairs.pages, c.merged.pages
    );
    assert!(kept
        .iter()
        .enumerate()
        .all(|(i, (a, b))| a[63] == (i * 32) as u8 && b[0] == !((i * 32) as u8)));
}
