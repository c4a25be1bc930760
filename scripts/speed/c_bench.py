#!/usr/bin/env python3
"""Classic C allocator benchmark programs under LD_PRELOAD: glibc, the Debian
builds of jemalloc, mimalloc and tcmalloc, and one or more hugeguard preload
libraries, side by side in one run.

    python3 scripts/speed/c_bench.py --bin DIR [--rounds 3] LIB.so [LIB2.so] [TEST ...]
    python3 scripts/speed/c_bench.py --bin DIR --ab [--rounds 5] OLD.so NEW.so [TEST ...]

DIR holds the programs of the mimalloc-bench suite (daanx/mimalloc-bench),
built from their C sources as docs/BENCHMARKS.md describes; this script only
runs them. Each round runs every test once per allocator, the allocator
order rotated by one per round, each run in its own process; the table gives
the median per allocator (the program's own time where it prints one, else
wall seconds; lower is better) and, per hugeguard library, the ratio to the
best of the four peers. Needs `apt-get install libjemalloc2 libmimalloc2.0
libtcmalloc-minimal4`; a missing peer is skipped. With `--ab` it runs only
the two hugeguard libraries, alternating which goes first, and gives per
test both medians, NEW/OLD of the medians and the range of the per-round
NEW/OLD ratios, NEW/OLD of the means of each library's fastest quarter of
runs (the noise on a shared machine is one-sided, so the fastest runs
estimate the code's cost; see scripts/speed/ab_workers.py), then the geomean
of both ratios.
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time

from ab_workers import fastest_quarter_mean  # same directory

LIB = "/usr/lib/x86_64-linux-gnu/"
PEERS = [("glibc", None), ("jemalloc", LIB + "libjemalloc.so.2"),
         ("mimalloc", LIB + "libmimalloc.so.2"), ("tcmalloc", LIB + "libtcmalloc_minimal.so.4")]
CPUS = os.cpu_count() or 2
P = str(CPUS)
# Four threads per CPU: where threads outnumber the cores and a lock holder
# is often preempted.
P4 = str(4 * CPUS)
# Arguments as in mimalloc-bench's bench.sh, with N = the number of CPUs
# (sh6bench and sh8bench: 2N, as bench.sh runs them). The "4x" rows run each
# multi-threaded program with four threads per CPU.
TESTS = {
    "cfrac": ["cfrac", "17545186520507317056371138836327483792789528"],
    "espresso": ["espresso", "{src}/espresso/largest.espresso"],
    "larsonN": ["larson", "5", "8", "1000", "5000", "100", "4141", P],
    "alloc-test1": ["alloc-test", "1"],
    "alloc-testN": ["alloc-test", P],
    "xmalloc-testN": ["xmalloc-test", "-w", P, "-t", "5", "-s", "64"],
    "cache-scratch1": ["cache-scratch", "1", "1000", "1", "2000000", P],
    "cache-scratchN": ["cache-scratch", P, "1000", "1", "2000000", P],
    "cache-thrashN": ["cache-thrash", P, "1000", "1", "2000000", P],
    "glibc-simple": ["glibc-simple"],
    "glibc-thread": ["glibc-thread", P],
    "mstressN": ["mstress", P, "50", "25"],
    "rptestN": ["rptest", P, "0", "1", "2", "500", "1000", "100", "8", "16000"],
    "sh6benchN": ["sh6bench", str(2 * CPUS)],
    "sh8benchN": ["sh8bench", str(2 * CPUS)],
    "larson4x": ["larson", "5", "8", "1000", "5000", "100", "4141", P4],
    "alloc-test4x": ["alloc-test", P4],
    "xmalloc-test4x": ["xmalloc-test", "-w", P4, "-t", "5", "-s", "64"],
    "cache-scratch4x": ["cache-scratch", P4, "1000", "1", "2000000", P4],
    "cache-thrash4x": ["cache-thrash", P4, "1000", "1", "2000000", P4],
    "glibc-thread4x": ["glibc-thread", P4],
    "mstress4x": ["mstress", P4, "50", "25"],
    "rptest4x": ["rptest", P4, "0", "1", "2", "500", "1000", "100", "8", "16000"],
    "sh6bench4x": ["sh6bench", P4],
    "sh8bench4x": ["sh8bench", P4],
}


def metric(name, out, wall):
    """The program's own figure as seconds (lower is better), else wall time."""
    patterns = {"larson": r"relative time: ([0-9.]+)", "xmalloc": r"rtime: ([0-9.]+)"}
    for prefix, pat in patterns.items():
        if name.startswith(prefix):
            m = re.search(pat, out)
            return float(m.group(1)) if m else None
    if name.startswith("glibc-thread"):
        m = re.match(r"\s*([0-9.]+)", out)
        return 1e9 / float(m.group(1)) if m else None
    if name.startswith("rptest"):
        m = re.search(r"\.\.\.([0-9]+) memory ops", out)
        return 2e6 / float(m.group(1)) if m else None
    return wall


def run(args, name, lib):
    cmd = [a.format(src=args.src) for a in TESTS[name]]
    cmd[0] = os.path.join(args.bin, cmd[0])
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if lib:
        env["LD_PRELOAD"] = lib
    start = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=args.bin, timeout=600)
    wall = time.monotonic() - start
    if p.returncode != 0 or "cannot be preloaded" in p.stderr:
        print(f"  {name} under {lib}: exit {p.returncode}: {p.stderr[-300:]}", file=sys.stderr)
        return None
    return metric(name, p.stdout + p.stderr, wall)


def ab(args):
    """A/B of two libraries: medians, ratio of medians, per-round range."""
    args.bin = os.path.abspath(args.bin)
    args.src = os.path.abspath(args.src or os.path.join(args.bin, "..", "bench"))
    libs = [os.path.abspath(a) for a in args.items if a.endswith(".so")]
    if len(libs) != 2:
        sys.exit("--ab takes exactly two libraries: OLD.so NEW.so")
    tests = [a for a in args.items if not a.endswith(".so")] or list(TESTS)
    print("| test | old | new | new / old | per-round new / old | fastest quarter new / old |")
    print("|---|---:|---:|---:|---:|---:|")
    logs, fast_logs = [], []
    for name in tests:
        old, new = [], []
        for r in range(args.rounds):
            order = [(old, libs[0]), (new, libs[1])]
            for out, lib in (order if r % 2 == 0 else order[::-1]):
                v = run(args, name, lib)
                out.append(v if v is not None else math.nan)
        pairs = [n / o for o, n in zip(old, new) if o > 0 and not math.isnan(o + n)]
        mo, mn = statistics.median(old), statistics.median(new)
        ratio = mn / mo
        logs.append(math.log(ratio))
        fast = fastest_quarter_mean(new) / fastest_quarter_mean(old)
        fast_logs.append(math.log(fast))
        spread = f"{min(pairs):.2f}-{max(pairs):.2f}" if pairs else ""
        print(f"| {name} | {mo:.3f} | {mn:.3f} | {ratio:.3f} | {spread} | {fast:.3f} |",
              flush=True)
    print(f"| **geomean** | | | {math.exp(statistics.mean(logs)):.3f} | "
          f"| {math.exp(statistics.mean(fast_logs)):.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory of the built programs")
    ap.add_argument("--src", help="mimalloc-bench's bench/ directory (espresso's input)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ab", action="store_true", help="A/B of two hugeguard builds, no peers")
    ap.add_argument("items", nargs="+", help="hugeguard .so files, then test names")
    args = ap.parse_args()
    if args.ab:
        return ab(args)
    args.bin = os.path.abspath(args.bin)
    args.src = os.path.abspath(args.src or os.path.join(args.bin, "..", "bench"))
    libs = [os.path.abspath(a) for a in args.items if a.endswith(".so")]
    tests = [a for a in args.items if not a.endswith(".so")] or list(TESTS)
    peers = [(n, l) for n, l in PEERS if l is None or os.path.exists(l)]
    ours = [(f"hugeguard{i if len(libs) > 1 else ''}", l) for i, l in enumerate(libs)]
    allocs = peers + ours
    print("| test | " + " | ".join(n for n, _ in allocs) + " | "
          + " | ".join(f"{n} / best peer" for n, _ in ours) + " |")
    print("|---|" + "---:|" * (len(allocs) + len(ours)))
    logs = {n: [] for n, _ in ours}
    logs_mi = {n: [] for n, _ in ours}
    for name in tests:
        res = {n: [] for n, _ in allocs}
        for r in range(args.rounds):
            k = r % len(allocs)
            for n, lib in allocs[k:] + allocs[:k]:
                v = run(args, name, lib)
                if v is not None:
                    res[n].append(v)
        med = {n: statistics.median(v) if v else math.nan for n, v in res.items()}
        best = min(med[n] for n, _ in peers)
        ratios = [med[n] / best for n, _ in ours]
        for (n, _), x in zip(ours, ratios):
            logs[n].append(math.log(x))
            if "mimalloc" in med:
                logs_mi[n].append(math.log(med[n] / med["mimalloc"]))
        cells = " | ".join(f"{med[n]:.3f}" for n, _ in allocs)
        print(f"| {name} | {cells} | " + " | ".join(f"{x:.2f}" for x in ratios) + " |", flush=True)
    geo = " | ".join(f"{math.exp(statistics.mean(v)):.2f}" for v in logs.values())
    print(f"| **geomean** |" + " |" * len(allocs) + f" {geo} |")
    if any(logs_mi.values()):
        geo_mi = " | ".join(f"{math.exp(statistics.mean(v)):.2f}" for v in logs_mi.values())
        print(f"| **geomean / mimalloc** |" + " |" * len(allocs) + f" {geo_mi} |")


main()
