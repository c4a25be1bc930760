#!/usr/bin/env python3
"""The placement floor's python scenario (issue 15), in one run.

python3 with PYTHONMALLOC=malloc builds 1.5 M dict records, keeps 1 in 64
(scripts/workloads/records.py), then idles. Three allocators: glibc with
malloc_trim(0), hugeguard, and hugeguard with HUGEGUARD_MESH=on (random
slots, class homes, meshing when idle). For each: RSS after the idle wait and after simulated khugepaged
(hugeguard-inspect run --always: process_madvise(MADV_COLLAPSE) on every
range khugepaged could collapse with THP enabled=always; needs root), and
for hugeguard the placement floor (hugeguard_print_placement) after the
idle wait, in the same process. PYTHONHASHSEED=0 in every run.

Build first: cargo build --release --workspace
Run as root from the repository root: python3 scripts/memory/python_floor.py
"""
import json, os, re, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import paths  # noqa: E402
ROOT = paths.ROOT
INSPECT = paths.release("hugeguard-inspect")
SCRIPT = os.path.join(ROOT, "scripts/workloads/records.py")


def run(allocator, mesh, trim):
    """RSS after idle, after the simulated khugepaged, and for hugeguard the
    placement floor (pages holding a live byte, what a meshing round would
    free now), all from one run of the program."""
    env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONHASHSEED="0", HUGEGUARD_MESH=mesh)
    # Idle is when the program says so (SIGUSR1 after its wait), not after
    # two quiet seconds, which come before its 6 s wait ends.
    args = [INSPECT, "run", "--allocator", allocator, "--always", "--json", "--quiet", "60", "--",
            sys.executable, SCRIPT] + (["trim"] if trim else ["placement"]) + ["6"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    d = json.loads(out.stdout[out.stdout.index("{"):])
    cells = [mb(d["rss_bytes"]), mb(d.get("rss_after_simulation_bytes")),
             str(len(d["mappings"]) + d["other_mappings"])]
    m = re.search(r"live on ([\d.]+) MiB of pages holding a live byte .*would free "
                  r"([\d.]+) MiB \(adding (\d+) mappings\)", out.stderr)
    if m:
        g = m.groups()
        mib = lambda x: mb(float(x) * 1048576)
        cells += [mib(g[0]), "%s (%s)" % (mib(g[1]), g[2])]
    else:
        cells += [""] * 2
    return cells


def mb(v):
    return "" if v is None else "%.1f MB" % (v / 1e6)


def main():
    if os.geteuid() != 0:
        sys.exit("python_floor.py: needs root (the simulated khugepaged acts on another process)")
    print("| allocator | RSS after idle | after simulated khugepaged (THP always) "
          "| mappings (VMAs) when idle | pages holding a live byte (before meshing) "
          "| a meshing round now would free (mappings added) |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("glibc + malloc_trim(0)", "system", "off", True),
            ("hugeguard", "hugeguard", "off", False),
            ("hugeguard, HUGEGUARD_MESH=on (meshing)", "hugeguard", "on", False)]
    for name, alloc, mesh, trim in rows:
        print("| %s | %s |" % (name, " | ".join(run(alloc, mesh, trim))), flush=True)


main()
