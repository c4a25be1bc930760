#!/usr/bin/env python3
"""hugeguard against the real kernel's limits (by hand, as root; never part of
`cargo test`). Every system setting changed is restored, also on failure and
on Ctrl-C.

    cargo build --release --workspace --examples
    sudo python3 scripts/kernel/kernel_limits.py [vma] [forks] [oom] [cgroup] [pressure]

* vma:    vm.max_map_count lowered to 2000 while `limits vma 3 4096` fragments
          the heap until marking degrades on ENOMEM; nothing may crash and
          every kept object must be intact.
* forks:  `limits forks 1000`: 8 threads busy in the allocator, 1000 forks,
          each child allocates, checks and exits; none may hang.
* oom:    under `ulimit -v` (RLIMIT_AS 2 GB): the Rust program's try_reserve
          must fail with an error and the allocator stay usable; the C program
          (scripts/kernel/oom.c under LD_PRELOAD) must get NULL with ENOMEM.
* cgroup: a memory cgroup limited to 256 MiB (v2 memory.max, no swap; or v1
          memory.limit_in_bytes) around
          `limits touch 1024`: records what the kernel does.
* pressure: real memory pressure, with HUGEGUARD_PRESSURE on and off: a
          hugeguard process frees 504 of 512 MiB under a 60 s hold-back
          (`limits hold 512 8 8`) while another, in a memory cgroup of 64 MiB
          with swap, writes 256 MiB three times (`limits squeeze 256 3`),
          stalling on memory. Without swap on the machine, a 1 GiB swap file
          is added for the case and removed afterwards.

The 10-minute stress is `HUGEGUARD_STRESS_SECS=600 cargo test --release
--test stress -- --nocapture` (see docs/RELIABILITY.md).
"""

import os
import resource
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import paths  # noqa: E402
ROOT = paths.ROOT
LIMITS = paths.release("examples", "limits")
PRELOAD = paths.release("libhugeguard_preload.so")
MAX_MAP = "/proc/sys/vm/max_map_count"
CGROUP = "/sys/fs/cgroup/hugeguard-limits"

restores = []


def restore_all(*_):
    while restores:
        fn = restores.pop()
        try:
            fn()
        except OSError as e:
            print(f"restore failed: {e}", file=sys.stderr)


def on_signal(sig, _frame):
    restore_all()
    sys.exit(128 + sig)


def result_line(out):
    for line in out.splitlines():
        if line.startswith("RESULT"):
            return line
    return "(no RESULT line)"


def run(cmd, timeout, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    return p.returncode, p.stdout, p.stderr


def case_vma(limit=2000, rounds=3, mb=4096):
    old = open(MAX_MAP).read().strip()
    restores.append(lambda: open(MAX_MAP, "w").write(old))
    open(MAX_MAP, "w").write(str(limit))
    try:
        rc, out, err = run([LIMITS, "vma", str(rounds), str(mb)], 1200)
    finally:
        restore_all()
    assert open(MAX_MAP).read().strip() == old, "max_map_count not restored"
    print(f"vma (max_map_count {limit}, restored to {old}; {rounds} rounds of {mb} MiB): exit {rc}")
    for line in out.splitlines()[-4:]:
        print("  " + line)
    if err.strip():
        print("  stderr: " + " | ".join(err.strip().splitlines()[-3:]))
    return rc == 0


def case_forks(n=1000):
    rc, out, err = run([LIMITS, "forks", str(n)], 1200)
    print(f"forks: exit {rc}\n  {result_line(out)}")
    if err.strip():
        print("  stderr: " + " | ".join(err.strip().splitlines()[-3:]))
    return rc == 0


def limit_as(nbytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return apply


def case_oom(nbytes=2_000_000_000):
    ok = True
    rc, out, err = run([LIMITS, "oom"], 600, preexec_fn=limit_as(nbytes))
    print(f"oom, Rust (ulimit -v {nbytes >> 20} MiB): exit {rc}\n  {result_line(out)}")
    ok &= rc == 0
    exe = "/tmp/hugeguard-limits-oom"
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(ROOT, "scripts/kernel/oom.c")], check=True)
    for name, env in [("glibc", {}), ("hugeguard", {"LD_PRELOAD": PRELOAD})]:
        rc, out, err = run([exe], 600, preexec_fn=limit_as(nbytes), env={**os.environ, **env})
        print(f"oom, C under {name}: exit {rc}\n  {result_line(out)}")
        ok &= rc == 0
    return ok


def case_cgroup(limit_mb=256, touch_mb=1024):
    """cgroup v2 (memory.max) where mounted, else v1's memory controller
    (memory.limit_in_bytes)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        path, limit_file, version = CGROUP, "memory.max", 2
    elif os.path.isdir("/sys/fs/cgroup/memory"):
        path, limit_file, version = "/sys/fs/cgroup/memory/hugeguard-limits", "memory.limit_in_bytes", 1
    else:
        print("cgroup: no memory controller here; skipped")
        return True
    try:
        os.mkdir(path)
    except OSError as e:
        print(f"cgroup: cannot create {path}: {e}; skipped")
        return True
    restores.append(lambda: os.rmdir(path))
    try:
        open(os.path.join(path, limit_file), "w").write(str(limit_mb << 20))
        swap = os.path.join(path, "memory.swap.max")
        if os.path.exists(swap):
            open(swap, "w").write("0")

        def enter():
            open(os.path.join(path, "cgroup.procs"), "w").write(str(os.getpid()))

        rc, out, err = run([LIMITS, "touch", str(touch_mb)], 600, preexec_fn=enter)
        if version == 2:
            events = open(os.path.join(path, "memory.events")).read().split()
            ev = dict(zip(events[::2], events[1::2]))
            counters = f"memory.events oom={ev.get('oom')} oom_kill={ev.get('oom_kill')}"
        else:
            failcnt = open(os.path.join(path, "memory.failcnt")).read().strip()
            oom = open(os.path.join(path, "memory.oom_control")).read().split()
            ev = dict(zip(oom[::2], oom[1::2]))
            counters = f"memory.failcnt {failcnt}, oom_kill {ev.get('oom_kill')}"
        how = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
        print(f"cgroup v{version} (limit {limit_mb} MiB, touching {touch_mb} MiB): {how}; {counters}")
        lines = out.splitlines()
        print("  last output: " + (lines[-1] if lines else "(none)"))
    finally:
        restore_all()
    return True


def case_pressure(hold_mb=512, keep=8, secs=8, squeeze_mb=256, limit_mb=64):
    import time
    swap_file = "/var/tmp/hugeguard-pressure-swap"
    if not open("/proc/swaps").read().strip().splitlines()[1:]:
        subprocess.run(["fallocate", "-l", "1G", swap_file], check=True)
        restores.append(lambda: os.remove(swap_file))
        os.chmod(swap_file, 0o600)
        subprocess.run(["mkswap", swap_file], check=True, capture_output=True)
        subprocess.run(["swapon", swap_file], check=True)
        restores.append(lambda: subprocess.run(["swapoff", swap_file], check=True))
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers") and "memory" in open(
            "/sys/fs/cgroup/cgroup.subtree_control").read():
        path, limit_file = "/sys/fs/cgroup/hugeguard-pressure", "memory.max"
    else:
        path, limit_file = "/sys/fs/cgroup/memory/hugeguard-pressure", "memory.limit_in_bytes"
    os.mkdir(path)
    restores.append(lambda: os.rmdir(path))
    ok = True
    try:
        open(os.path.join(path, limit_file), "w").write(str(limit_mb << 20))

        def enter():
            open(os.path.join(path, "cgroup.procs"), "w").write(str(os.getpid()))

        for setting in ["on", "off"]:
            env = {**os.environ, "HUGEGUARD_HOLDBACK_MS": "60000",
                   "HUGEGUARD_MEMORY_LIMIT": "0", "HUGEGUARD_PRESSURE": setting}
            holder = subprocess.Popen([LIMITS, "hold", str(hold_mb), str(keep), str(secs)],
                                      stdout=subprocess.PIPE, text=True, env=env)
            first = holder.stdout.readline()
            t0 = time.time()
            rc, out, _ = run([LIMITS, "squeeze", str(squeeze_mb), "3"], 600, preexec_fn=enter)
            squeeze_secs = time.time() - t0
            rest = holder.communicate(timeout=120)[0]
            line = result_line(first + rest)
            print(f"pressure {setting}: {first.strip()}; squeeze exit {rc} in {squeeze_secs:.1f} s\n  {line}")
            ok &= holder.returncode == 0 and "intact=true" in line
            if setting == "on":
                ok &= "below_ms=never" not in line
            else:
                ok &= "below_ms=never" in line
    finally:
        restore_all()
    return ok


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: this changes vm.max_map_count and creates a cgroup")
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cases = sys.argv[1:] or ["vma", "forks", "oom", "cgroup"]
    table = {"vma": case_vma, "forks": case_forks, "oom": case_oom, "cgroup": case_cgroup,
             "pressure": case_pressure}
    ok = True
    try:
        for c in cases:
            ok &= table[c]()
    finally:
        restore_all()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
