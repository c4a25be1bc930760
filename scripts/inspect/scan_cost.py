#!/usr/bin/env python3
"""The exporter's cost (docs/INSPECT.md, "What a scan costs"): starts a host's
worth of processes (PROCS in all: BIG C batches of BIG_MB each that keep
their heap, glibc without malloc_trim, and the rest `sleep`), then times
`hugeguard-inspect scan` ROUNDS times at the default --min-anon-mb (16) and
with --min-anon-mb 0 (every process measured in full), and one
`hugeguard-inspect PID` of a single 1 GiB process (its smaps and pagemap).
Prints wall and CPU time per scan and the scanner's peak RSS.

    python3 scripts/inspect/scan_cost.py target/release/hugeguard-inspect SPARSE_BINARY
(SPARSE_BINARY: inspect/tests/c/sparse.c built with gcc -O2.)"""
import os, statistics, subprocess, sys, time

inspect_bin, sparse = sys.argv[1], sys.argv[2]
PROCS, BIG, BIG_MB, ROUNDS = 500, 10, 64, 5

def ready(p):
    for line in p.stdout:
        if b"READY" in line:
            return p
    raise SystemExit("a batch ended without READY")

procs = []
try:
    for _ in range(BIG):
        procs.append(ready(subprocess.Popen([sparse, str(BIG_MB), "keep"], stdout=subprocess.PIPE)))
    large = ready(subprocess.Popen([sparse, "1024", "keep"], stdout=subprocess.PIPE))
    procs.append(large)
    while len(procs) < PROCS:
        procs.append(subprocess.Popen(["sleep", "600"]))
    time.sleep(1)
    host = sum(1 for d in os.listdir("/proc") if d.isdigit())

    def timed(args):
        """Median wall and CPU seconds over ROUNDS runs, the largest peak
        RSS, and the last run's output. Run under GNU time, whose own small
        process is the one that forks: a child forked from this Python
        would count Python's pages in its peak."""
        walls, cpus, peaks = [], [], []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            p = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M"] + args,
                               capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t)
            line = next(l for l in p.stderr.splitlines() if l.startswith("TIME "))
            _, _, user, system, kb = line.split()
            cpus.append(float(user) + float(system))
            peaks.append(int(kb) / 1024)
            out = p.stdout
        return statistics.median(walls), statistics.median(cpus), max(peaks), out

    print(f"{host} processes on the host ({PROCS} started: {BIG} x {BIG_MB} MB batches, one 1 GiB, the rest sleep)")
    print("| what | measured in full | wall (s) | CPU (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for label, extra in [("scan, default (--min-anon-mb 16)", []), ("scan --min-anon-mb 0", ["--min-anon-mb", "0"])]:
        wall, cpu, peak, out = timed([inspect_bin, "scan", "--top", "50"] + extra)
        measured = next(l for l in out.splitlines() if l.startswith('hugeguard_host_processes{measured="yes"}')).split()[-1]
        print(f"| {label} | {measured} | {wall:.3f} | {cpu:.3f} | {peak:.1f} |")
    wall, cpu, peak, _ = timed([inspect_bin, str(large.pid)])
    print(f"| `hugeguard-inspect PID` of the 1 GiB batch | 1 | {wall:.3f} | {cpu:.3f} | {peak:.1f} |")
    # serve, scanning every second for SERVE_SECS: its CPU time per second
    # and its peak RSS (VmHWM) at the end.
    SERVE_SECS = 20
    srv = subprocess.Popen([inspect_bin, "serve", "--listen", "127.0.0.1:0", "--interval", "1"],
                           stdout=subprocess.DEVNULL)
    try:
        time.sleep(SERVE_SECS)
        fields = open(f"/proc/{srv.pid}/stat").read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        hwm = next(l for l in open(f"/proc/{srv.pid}/status") if l.startswith("VmHWM")).split()[1]
        cpu_share = ticks / os.sysconf("SC_CLK_TCK") / SERVE_SECS
        print(f"serve --interval 1 for {SERVE_SECS} s: {cpu_share * 100:.1f} % of one core, peak RSS {int(hwm) / 1024:.1f} MB")
    finally:
        srv.kill()
        srv.wait()
finally:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
