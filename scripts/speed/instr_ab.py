#!/usr/bin/env python3
"""A/B comparison of two builds (or two settings) of the suite's worker
binary by the instructions each workload executes, counted by valgrind's
cachegrind: nearly the same figure on every run, however noisy the
machine (within about 0.1 % at scale 1 for one thread; up to 2 % where
threads interleave differently each time, as in xmalloc; more at small
scales, where start-up weighs more).

    python3 scripts/speed/instr_ab.py A_WORKER B_WORKER [--scale 1] [WORKLOAD ...]
    python3 scripts/speed/instr_ab.py W W --env-b HUGEGUARD_PROF=on

Needs valgrind (`apt-get install valgrind`); runs two workloads at a time
(each under valgrind is about 50 times slower). Prints, per workload, the
instructions of each side and the ratio B/A, and the geomean of the ratios.
Instructions are not time: a cache miss, a page fault or a lock wait costs
time that this count does not see, and cachegrind runs a program's threads
one at a time. Use it to see what a change adds to the code a workload
runs, next to the timed A/B runs (`ab_workers.py`), not instead of them.
"""

import concurrent.futures
import math
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab_workers import ab_arguments  # noqa: E402


def instructions(binary, workload, scale, extra_env):
    env = {"SUITE_SCALE": str(scale), "PATH": "/usr/bin:/bin"}
    env.update(kv.split("=", 1) for kv in extra_env)
    with tempfile.NamedTemporaryFile(prefix="cachegrind.") as out:
        p = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                            f"--cachegrind-out-file={out.name}", binary, workload],
                           capture_output=True, text=True, env=env)
    m = re.search(r"I\s+refs:\s+([\d,]+)", p.stderr)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"{binary} {workload}: valgrind failed\n{p.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main():
    args = ab_arguments(__doc__).parse_intermixed_args()
    jobs = [(w, side) for w in args.workloads for side in (0, 1)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(
            lambda j: instructions((args.a, args.b)[j[1]], j[0], args.scale,
                                   (args.env_a, args.env_b)[j[1]]), jobs)))
    print(f"instructions (cachegrind), scale {args.scale:g}; "
          f"A = {args.a} {' '.join(args.env_a)}, B = {args.b} {' '.join(args.env_b)}\n")
    print(f"| workload | A | B | B/A |\n|---|---:|---:|---:|")
    logs = []
    for w in args.workloads:
        a, b = counts[(w, 0)], counts[(w, 1)]
        logs.append(math.log(b / a))
        print(f"| {w} | {a:,} | {b:,} | {b / a:.4f} |")
    print(f"| **geomean** | | | **{math.exp(sum(logs) / len(logs)):.4f}** |")


if __name__ == "__main__":
    main()
