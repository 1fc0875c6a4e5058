"""Pre-signed OCSP over plain HTTP and over several HTTPS servers on one store,
alternated run by run, with bench.py's wrk runs and CPU accounting; also the
load generator's own CPU per request (wrk shares the machine's cores).

    python3 benches/tls_ab.py '{"name": {"ENV": "value"}, ...}' RUNS SECONDS

Each name is one HTTPS server started with those extra environment variables
(SERVER_BIN=path picks another ca-server binary for all of them). The stack
A/B in BENCHMARKS.md ran with the build of commit 6866cdd, where
CA_TLS_STACK=openssl selected the OpenSSL listener:

    python3 benches/tls_ab.py '{"openssl": {"CA_TLS_STACK": "openssl"}, "rustls": {}}' 5 5
"""
import os, sys, statistics, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench
from bench import *

import resource
_orig_run = bench.run
WRK_CPU = [0.0]
def run_patched(cmd, env=None, check=True, **kw):
    if cmd[0] == "wrk":
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = _orig_run(cmd, env=env, check=check, **kw)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        WRK_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return res
    return _orig_run(cmd, env=env, check=check, **kw)
bench.run = run_patched

def main():
    variants = json.loads(sys.argv[1])   # {"name": {"ENV": "val"}, ...}
    runs = int(sys.argv[2]); duration = int(sys.argv[3])
    bench.WORK = tempfile.mkdtemp(prefix="tls-ab-")
    target = os.path.join(bench.ROOT, "target", "release")
    bench.BIN_CLI = os.path.join(target, "ca-cli"); bench.BIN_SERVER = os.environ.get("SERVER_BIN", os.path.join(target, "ca-server"))
    try:
        ca = Ca(bench.WORK); ca.start()
        plain_req = bench_ocsp(ca, argparse.Namespace(runs=1, duration=1), [])
        servers = {}
        for name, env in variants.items():
            old = dict(ca.env); ca.env.update(env)
            servers[name] = ca.start_tls()
            ca.env = old
        oenv = {"BENCH_CONTENT_TYPE": "application/ocsp-request"}
        res = {"plain": []} | {n: [] for n in variants}
        def measured(pid, url):
            settle(pid)
            before = cpu_seconds(pid)
            r = wrk(url, "/ocsp", duration, 32, plain_req, env_extra=oenv)
            r["cpu_us"] = (cpu_seconds(pid) - before) / max(r["rps"] * duration, 1) * 1e6
            r["wrk_us"] = WRK_CPU[0] / max(r["rps"] * duration, 1) * 1e6
            return r
        for i in range(runs):
            res["plain"].append(measured(ca.server.pid, ca.url))
            for n, (p, url) in servers.items():
                res[n].append(measured(p.pid, url))
            print(f"run {i}: " + "  ".join(f"{n} {res[n][-1]['rps']:.0f}/s {res[n][-1]['cpu_us']:.1f}us wrk {res[n][-1]['wrk_us']:.1f}us" for n in res), flush=True)
        pm = statistics.median(r["rps"] for r in res["plain"]); pc = statistics.median(r["cpu_us"] for r in res["plain"])
        for n in res:
            m = statistics.median(r["rps"] for r in res[n]); c = statistics.median(r["cpu_us"] for r in res[n])
            print(f"{n:12s} median {m:9.0f}/s ({min(r['rps'] for r in res[n]):.0f}-{max(r['rps'] for r in res[n]):.0f})  ratio {m/pm:.2f}x  cpu/answer {c:.1f}us ({c/pc:.2f}x)")
        print("pids:", {n: p.pid for n, (p, _) in servers.items()}, "plain", ca.server.pid, flush=True)
    finally:
        stop_all(); shutil.rmtree(bench.WORK, ignore_errors=True)
main()
