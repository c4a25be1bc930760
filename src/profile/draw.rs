//! The heap profile's random draws and its sampling interval: a leaf, so
//! that the thread caches can draw their classes' countdowns when profiling
//! starts (`cache`) without importing the profile.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The default mean sampling interval in bytes (jemalloc's and TCMalloc's).
pub const DEFAULT_INTERVAL: usize = 512 * 1024;

/// The most allocations a class's countdown holds (`cache::Bin::word`); a
/// longer draw is cut here and marked a placeholder. Also the countdown
/// while profiling is off, so a class sends an allocation to the profile
/// once in 2^30.
pub(crate) const MAX_POPS: i32 = 1 << 30;

static INTERVAL: AtomicUsize = AtomicUsize::new(DEFAULT_INTERVAL);
/// The random stream's state (splitmix64).
static SEED: AtomicU64 = AtomicU64::new(0);

/// Sets the mean sampling interval (clamped to 1 byte ..= 1 TiB).
pub(crate) fn set_interval(bytes: usize) {
    INTERVAL.store(bytes.clamp(1, 1 << 40), Ordering::Relaxed);
}

/// The mean sampling interval in bytes.
pub(crate) fn interval() -> usize {
    INTERVAL.load(Ordering::Relaxed)
}

/// Seeds the random stream from `random` if it has no seed yet.
pub(crate) fn seed(random: impl FnOnce() -> u64) {
    if SEED.load(Ordering::Relaxed) == 0 {
        SEED.store(random() | 1, Ordering::Relaxed);
    }
}

std::thread_local! {
    /// The thread's random stream (splitmix64's counter; 0 until the
    /// thread's first draw takes a start from the shared seed).
    static STREAM: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// A random number, uniform in (0, 1].
pub(crate) fn uniform() -> f64 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    // splitmix64 over a counter of the thread's own (threads that sample
    // at once would otherwise pass one cache line back and forth), which
    // starts at a step of the shared seed's.
    let mut z = STREAM.with(|s| {
        let mut v = s.get();
        if v == 0 {
            v = SEED.fetch_add(GOLDEN, Ordering::Relaxed) ^ 0x5851_f42d_4c95_7f2d;
        }
        v = v.wrapping_add(GOLDEN);
        s.set(v);
        v
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // Never 0: never ln(0).
    ((z >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The natural logarithm of `x` in (0, 1] (a value of [`uniform`]), with
/// no table: a sample calls it once between thousands of allocations, when
/// a table such as the C library's `log` uses is out of the cache (that
/// call was a sixth of a sample's cost). `x = m * 2^e` with `m` in
/// [sqrt(1/2), sqrt(2)), and `ln m = 2 atanh(f)`, `f = (m - 1) / (m + 1)`,
/// `|f| < 0.172`, summed to `f^17`: relative error below 1e-14, far inside
/// what a sampling probability needs.
#[inline]
pub(crate) fn ln_unit(x: f64) -> f64 {
    const LN_2: f64 = core::f64::consts::LN_2;
    const SQRT_2: f64 = core::f64::consts::SQRT_2;
    let bits = x.to_bits();
    // `x` is normal (at least 2^-53): a biased exponent and 52 bits.
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m >= SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let f = (m - 1.0) / (m + 1.0);
    let f2 = f * f;
    // sum of f2^k / (2k + 1), k = 0..=8, in Estrin's order: pairs, then
    // pairs of pairs, so the chain of dependent operations is about half
    // as long as Horner's (this is latency: nothing else runs meanwhile).
    let f4 = f2 * f2;
    let f8 = f4 * f4;
    let t0 = 1.0 + f2 * (1.0 / 3.0);
    let t1 = 1.0 / 5.0 + f2 * (1.0 / 7.0);
    let t2 = 1.0 / 9.0 + f2 * (1.0 / 11.0);
    let t3 = 1.0 / 13.0 + f2 * (1.0 / 15.0);
    let series = (t0 + f4 * t1) + f8 * ((t2 + f4 * t3) + f8 * (1.0 / 17.0));
    e as f64 * LN_2 + 2.0 * f * series
}

/// A random mean-`interval` exponential draw, in bytes (at least 1).
pub(crate) fn draw(interval: usize) -> isize {
    let x = -ln_unit(uniform()) * interval as f64;
    (x as isize).clamp(1, isize::MAX / 2)
}

/// A random draw of how many allocations of a class of `size` bytes pass
/// before the next sample candidate: geometric, each allocation a candidate
/// with probability `1 - exp(-size / interval)` (the floor of an
/// exponential draw in units of `size`). `true` with it if it was cut at
/// [`MAX_POPS`] (then the rest is drawn again when that runs out:
/// the distribution has no memory).
pub(crate) fn draw_pops(size: usize, interval: usize) -> (i32, bool) {
    // The quotient first: it does not wait for the draw.
    let per_pop = interval as f64 / size.max(1) as f64;
    let x = -ln_unit(uniform()) * per_pop;
    if x >= MAX_POPS as f64 {
        (MAX_POPS, true)
    } else {
        (x as i32, false)
    }
}

/// A fresh countdown for a class of `class_size` bytes ([`draw_pops`] at
/// the current interval), for a thread's caches when profiling starts.
pub(crate) fn class_countdown(class_size: usize) -> (i32, bool) {
    draw_pops(class_size, interval())
}

/// Whether a candidate of its class (`class_size` bytes) that asked for
/// `size` is sampled: with probability `(1 - exp(-size / interval)) /
/// (1 - exp(-class_size / interval))`, so that, candidates coming with
/// probability `1 - exp(-class_size / interval)`, each allocation is
/// sampled with probability `1 - exp(-size / interval)`, as if its own
/// bytes were counted.
pub(crate) fn thin(size: usize, class_size: usize, interval: usize) -> bool {
    if size >= class_size {
        return true;
    }
    let i = interval as f64;
    let keep = (-(size as f64) / i).exp_m1() / (-(class_size as f64) / i).exp_m1();
    uniform() <= keep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ln_unit` agrees with the C library's `ln` to 1e-14 (relative where
    /// `|ln x| >= 1`, absolute above 1/e) over (0, 1]: across the
    /// binades, around the fold at sqrt(1/2), and on random draws.
    #[test]
    fn ln_unit_matches_ln() {
        let check = |x: f64| {
            let (got, want) = (ln_unit(x), x.ln());
            let err = (got - want).abs() / want.abs().max(1.0);
            assert!(err < 1e-14, "ln_unit({x:e}) = {got:e}, ln = {want:e}");
        };
        check(1.0);
        assert_eq!(ln_unit(1.0), 0.0);
        check(2f64.powi(-53));
        check(0.5);
        let fold = core::f64::consts::FRAC_1_SQRT_2;
        for k in -3i64..=3 {
            check(f64::from_bits((fold.to_bits() as i64 + k) as u64));
        }
        for i in 1..=100_000u64 {
            check(i as f64 / 100_000.0);
            check(uniform());
        }
        for e in 1..=53 {
            check(2f64.powi(-e) * 1.37);
        }
    }
}
