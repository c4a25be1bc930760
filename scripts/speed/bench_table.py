#!/usr/bin/env python3
"""Turns `cargo bench -p hugeguard-bench --bench alloc` output into a Markdown table of medians
and ratios (HugeGuard against System and against the faster of mimalloc and
jemalloc). Usage: cargo bench -p hugeguard-bench --bench alloc -- --noplot | python3 scripts/speed/bench_table.py"""
import re
import sys

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
results = {}
name = None
for line in sys.stdin:
    line = line.rstrip()
    m = re.match(r"^(\S+/\S+/\S+)", line)
    if m:
        name = m.group(1)
    t = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", line)
    if t and name:
        group, alloc, param = name.split("/")
        results.setdefault((group, param), {})[alloc] = float(t.group(1)) * UNITS[t.group(2)]
        name = None

print("| benchmark | hugeguard | system | mimalloc | jemalloc | hg/system | hg/best(mi,je) |")
print("|---|---:|---:|---:|---:|---:|---:|")
worst_sys = worst_peer = 0.0
for (group, param), r in results.items():
    if len(r) < 4:
        continue
    hg, sy, mi, je = r["hugeguard"], r["system"], r["mimalloc"], r["jemalloc"]
    rs, rp = hg / sy, hg / min(mi, je)
    worst_sys, worst_peer = max(worst_sys, rs), max(worst_peer, rp)
    fmt = lambda ns: f"{ns/1e3:.2f} µs" if ns >= 1e3 else f"{ns:.2f} ns"
    print(f"| {group}/{param} | {fmt(hg)} | {fmt(sy)} | {fmt(mi)} | {fmt(je)} | {rs:.2f} | {rp:.2f} |")
print()
print(f"Worst ratio against System: {worst_sys:.2f}; against the faster of mimalloc and jemalloc: {worst_peer:.2f}.")
