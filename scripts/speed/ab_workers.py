#!/usr/bin/env python3
"""A/B speed comparison of two builds of the suite's worker binary (for
example the previous commit against this one), side by side in one run.

    git worktree add /tmp/base HEAD~1
    (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base/target cargo build --release --workspace --examples)
    cargo build --release --workspace --examples
    python3 scripts/speed/ab_workers.py /tmp/base/target/release/examples/suite_worker_hugeguard \\
        target/release/examples/suite_worker_hugeguard [--runs 7] [WORKLOAD ...]

Each round runs every workload once with A and once with B, alternating which
goes first (ABBA), each in its own process. Prints, per workload, the median
time of each build, the ratio B/A of the medians, and the spread of the
per-round ratios (min..max), and a second estimate: the ratio of the means
of each build's fastest quarter of runs. On a shared VM the noise is
one-sided (a run is slowed by a neighbour, never sped up), so the fastest
runs estimate what the code costs; the median mixes in how many slow phases
each side happened to meet. Neither is exact: in stop 40's same-build
control (docs/PROFILE.md) the medians strayed by up to 5 % on one workload
and the fastest quarter by up to 7 %, both within 1 % on the geomean. Run
the same build twice (an A/A control) to see how far they stray that day.
Workload names are the suite's (`bench/src/workloads.rs`). `--env-b HUGEGUARD_MESH=on` with the same binary
twice compares a setting instead of two builds.

`--save FILE` keeps every run's time (JSON); `--pool FILE...` prints the
table of the saved runs of several invocations together (A and B as the
first saved), for more rounds than one sitting can take.
"""

import argparse
import json
import math
import statistics
import subprocess
import sys

# The suite's speed workloads (`bench/examples/suite.rs`, SPEED), all
# eleven; before stop 38 the default left out alloc-test, sh6 and sh8.
DEFAULT = ["sweep-1t", "sweep-2t", "xmalloc", "larson", "mstress", "realloc",
           "cache-scratch", "index", "alloc-test", "sh6", "sh8"]


def run(binary, workload, scale, extra_env):
    env = {"SUITE_SCALE": str(scale), "PATH": "/usr/bin:/bin"}
    env.update(kv.split("=", 1) for kv in extra_env)
    out = subprocess.run([binary, workload], capture_output=True, text=True,
                         env=env, check=True).stdout
    for line in out.splitlines():
        if line.startswith("RESULT"):
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            return float(kv["secs"])
    raise RuntimeError(f"{binary} {workload}: no RESULT line")


def fastest_quarter_mean(xs):
    """Mean of the fastest quarter of the runs that finished (NaN marks one
    that did not; at least one run); NaN if none finished. Also used by
    c_bench.py."""
    done = sorted(x for x in xs if not math.isnan(x))
    return statistics.fmean(done[:max(1, len(done) // 4)]) if done else math.nan


def ab_arguments(description):
    """The arguments every A/B script here takes: the two workers, the
    workloads, the scale and each side's environment (also used by
    instr_ab.py)."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("workloads", nargs="*", default=DEFAULT)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--env-a", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for A only (repeatable)")
    ap.add_argument("--env-b", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for B only (repeatable)")
    return ap


def main():
    ap = ab_arguments(__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--save", metavar="FILE", help="write every run's time here (JSON)")
    ap.add_argument("--pool", nargs="+", metavar="FILE",
                    help="print the table of these saved runs together; run nothing")
    args = ap.parse_intermixed_args()
    if args.pool:
        saved = [json.load(open(f)) for f in args.pool]
        times = {}
        for run_ in saved:
            for w, (a, b) in run_["times"].items():
                times.setdefault(w, ([], []))
                times[w][0].extend(a)
                times[w][1].extend(b)
        first = saved[0]
        rounds = sum(len(next(iter(r["times"].values()))[0]) for r in saved)
        print(f"{rounds} rounds pooled from {len(saved)} runs; A = {first['a']} {' '.join(first['env_a'])}, "
              f"B = {first['b']} {' '.join(first['env_b'])}\n")
        table(times)
        return
    times = {w: ([], []) for w in args.workloads}
    for r in range(args.runs):
        for w in args.workloads:
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                times[w][i].append(run((args.a, args.b)[i], w, args.scale,
                                       (args.env_a, args.env_b)[i]))
        print(f"round {r + 1}/{args.runs} done", file=sys.stderr)
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"a": args.a, "b": args.b, "env_a": args.env_a, "env_b": args.env_b,
                       "times": times}, f)
    print(f"{args.runs} rounds, ABBA order; A = {args.a} {' '.join(args.env_a)}, "
          f"B = {args.b} {' '.join(args.env_b)}\n")
    table(times)


def table(times):
    """Prints the per-workload table and the geomeans of `times`
    (workload -> (A's times, B's times), run by run)."""
    print("| workload | A median (s) | B median (s) | B/A medians | per-round B/A "
          "| B/A fastest quarter |")
    print("|---|---:|---:|---:|---|---:|")
    ratios, fast_ratios = [], []
    for w, (a, b) in times.items():
        ma, mb = statistics.median(a), statistics.median(b)
        fa, fb = fastest_quarter_mean(a), fastest_quarter_mean(b)
        per = [y / x for x, y in zip(a, b)]
        ratios.append(mb / ma)
        fast_ratios.append(fb / fa)
        print(f"| {w} | {ma:.4f} | {mb:.4f} | {mb / ma:.3f} | "
              f"{min(per):.2f}..{max(per):.2f} | {fb / fa:.3f} |")
    geo = statistics.geometric_mean(ratios)
    fast_geo = statistics.geometric_mean(fast_ratios)
    print(f"| **geomean** | | | {geo:.3f} | | {fast_geo:.3f} |")


if __name__ == "__main__":
    main()
