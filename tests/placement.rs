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
    assert!(c.meshable_pages > 0, "{c:?}");
    let (live_bytes, live_pages, resident, mesh) = p.totals();
    assert!(
        live_bytes >= kept.len() * 1000
            && live_pages >= c.live_pages
            && resident >= live_pages
            && mesh >= c.meshable_pages
    );
    assert!(kept
        .iter()
        .enumerate()
        .all(|(i, b)| b[0] == ((i * 63) % 251) as u8));
}
