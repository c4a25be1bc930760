#!/usr/bin/env python3
"""CPython's own regression tests under glibc and under hugeguard's LD_PRELOAD
library, side by side; prints a Markdown table (one row per test file).

    cargo build --release --workspace
    python3 scripts/compat/cpython_tests.py [--jobs 2] [--timeout 300] [FILE ...]

Both runs use PYTHONMALLOC=malloc, so every Python object comes from the C
allocator under test. Each run writes JUnit XML (regrtest's --junit-xml), from
which the per-file counts are read. Needs CPython's `test` package (pyenv and
most distribution builds ship it; Debian's is `libpython3.X-testsuite`).
"""

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict

# Threads, fork, subprocess, signals, ctypes, mmap, sqlite, pickle, unicode,
# json, and a spread of container and I/O tests.
DEFAULT_FILES = """
test_threading test_thread test_threading_local test_threadsignals
test_fork1 test_wait3 test_wait4 test_subprocess test_os test_posix
test_signal test_faulthandler test_pty test_queue test_decimal
test_multiprocessing_main_handling test_ctypes test_mmap test_sqlite3 test_pickle
test_unicode test_codecs test_json test_re test_dict test_list test_set
test_bytes test_array test_memoryview test_struct test_gc test_weakref
test_zlib test_hashlib test_socket test_select test_selectors test_tracemalloc
test_sys test_io
""".split()

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import paths  # noqa: E402
ROOT = paths.ROOT
LIBRARY = paths.release("libhugeguard_preload.so")


def run(name, preload, files, jobs, timeout, outdir):
    env = dict(os.environ, PYTHONMALLOC="malloc")
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    xml = os.path.join(outdir, f"{name}.xml")
    log = os.path.join(outdir, f"{name}.log")
    cmd = [sys.executable, "-m", "test", "-j", str(jobs), "--timeout",
           str(timeout), "--junit-xml", xml, *files]
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                             cwd=outdir)
    return xml, log, rc, time.time() - t0


def per_file(xml_path, files):
    """{file: [run, failures, errors, skipped]} from regrtest's JUnit XML."""
    out = defaultdict(lambda: [0, 0, 0, 0])
    if not os.path.exists(xml_path):
        return out
    root = ET.parse(xml_path).getroot()
    for case in root.iter("testcase"):
        cls = case.get("classname") or case.get("name") or ""
        # "test.test_x.Class.test_y", "test.test_x.sub.Class.test_y", or
        # for a package outside test/ ("ctypes.test.test_z...") its name.
        parts = cls.split(".")
        f = next((p for p in parts if p in files), None)
        if f is None:
            f = "test_" + parts[0]
        row = out[f]
        row[0] += 1
        if case.find("failure") is not None:
            row[1] += 1
        if case.find("error") is not None:
            row[2] += 1
        if case.find("skipped") is not None:
            row[3] += 1
    return out


def outcome(log_path):
    """{file: outcome word} from regrtest's progress lines."""
    res = {}
    words = ("passed", "failed", "skipped", "resource denied", "crashed",
             "timed out", "interrupted", "env changed", "run no tests",
             "non-zero exit code")
    with open(log_path, errors="replace") as f:
        for line in f:
            if "] test_" not in line:
                continue
            tail = line.split("] ", 1)[1].strip()
            name = tail.split()[0]
            for w in words:
                if w in tail[len(name):]:
                    # regrtest reports a test file killed by --timeout as
                    # its worker's non-zero exit code.
                    res[name] = "timed out" if w == "non-zero exit code" else w
                    break
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--library", default=LIBRARY)
    ap.add_argument("--outdir", default=os.path.join(paths.target_dir(), "cpython-tests"))
    ap.add_argument("--report-only", action="store_true",
                    help="print the table from the last run's files")
    ap.add_argument("files", nargs="*", default=DEFAULT_FILES)
    a = ap.parse_args()
    if not os.path.exists(a.library):
        sys.exit(f"{a.library} missing: cargo build --release --workspace first")
    os.makedirs(a.outdir, exist_ok=True)
    results = {}
    for name, preload in (("glibc", None), ("hugeguard", a.library)):
        if a.report_only:
            xml = os.path.join(a.outdir, f"{name}.xml")
            log = os.path.join(a.outdir, f"{name}.log")
            rc, secs = 0, float(open(log + ".secs").read()) if os.path.exists(log + ".secs") else 0
        else:
            xml, log, rc, secs = run(name, preload, a.files, a.jobs, a.timeout, a.outdir)
            with open(log + ".secs", "w") as f:
                f.write(f"{secs}")
        results[name] = (per_file(xml, a.files), outcome(log), rc, secs)
        print(f"{name}: exit {rc}, {secs:.0f} s, log {log}", file=sys.stderr)

    print(f"Python {sys.version.split()[0]}, `PYTHONMALLOC=malloc`, "
          f"`-j {a.jobs} --timeout {a.timeout}`\n")
    print("| test file | glibc | tests (fail/err/skip) | hugeguard | tests (fail/err/skip) |")
    print("|---|---|---:|---|---:|")
    tot = {k: [0, 0, 0, 0] for k in results}
    for f in a.files:
        cells = []
        for k, (counts, words, _, _) in results.items():
            c = counts.get(f, [0, 0, 0, 0])
            for i in range(4):
                tot[k][i] += c[i]
            cells += [words.get(f, "?"), f"{c[0]} ({c[1]}/{c[2]}/{c[3]})"]
        print(f"| {f} | " + " | ".join(cells) + " |")
    cells = []
    for k, (_, words, rc, secs) in results.items():
        passed = sum(1 for f in a.files if words.get(f) == "passed")
        t = tot[k]
        cells += [f"{passed}/{len(a.files)} passed, {secs:.0f} s",
                  f"{t[0]} ({t[1]}/{t[2]}/{t[3]})"]
    print("| **total** | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
