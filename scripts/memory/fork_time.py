#!/usr/bin/env python3
"""The cost of fork in mesh mode (docs/MESH.md): python builds 1 M dict
records, keeps 1 in 64, idles 4 s (mesh mode meshes), then times five
os.fork() + child exit + waitpid and prints the median and its RSS. Run it
under the preload library with HUGEGUARD_MESH=off and on, and without."""
import os, sys, time
recs = [{"id": i, "name": "n%d" % i, "tags": [i, i+1]} for i in range(1_000_000)]
kept = recs[::64]; del recs
time.sleep(4)
ts = []
for _ in range(5):
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if kept[100]["id"] == 6400 else 1)
    _, st = os.waitpid(pid, 0)
    ts.append(time.perf_counter() - t)
    assert st == 0
rss = int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1])
print("fork ms median %.1f rss %.1f MB" % (sorted(ts)[2]*1000, rss/1000))
