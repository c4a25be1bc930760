# Build 1.5 M dict records, keep 1 in 64, drop the rest; optionally
# malloc_trim(0); with `placement` (under the hugeguard library) print the
# placement floor (hugeguard_print_placement, to stderr); wait SECONDS;
# tell the inspector we are idle; sleep. Without an inspector, `placement`
# exits after printing.
import ctypes, os, signal, sys, time
trim = "trim" in sys.argv[1:]
wait = float(sys.argv[-1]) if sys.argv[-1].replace('.', '').isdigit() else 0
recs = {i: {"id": i, "name": "user%d" % i, "tags": ["a%d" % (i % 97), "b"], "score": i * 0.5}
        for i in range(1_500_000)}
kept = {k: v for k, v in recs.items() if k % 64 == 0}
del recs
if trim:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
if "placement" in sys.argv[1:]:
    # Under libhugeguard_preload.so: print the placement floor. Before the
    # wait: its buffers (16 MB here) are freed and given back by then.
    ctypes.CDLL(None).hugeguard_print_placement()
    if "HUGEGUARD_INSPECT_PID" not in os.environ:
        print("kept", len(kept), flush=True)
        sys.exit(0)
time.sleep(wait)
if "HUGEGUARD_INSPECT_PID" in os.environ:
    os.kill(int(os.environ["HUGEGUARD_INSPECT_PID"]), signal.SIGUSR1)
print("READY", flush=True)
while True:
    time.sleep(60)
