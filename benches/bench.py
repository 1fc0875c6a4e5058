#!/usr/bin/env python3
"""Benchmarks of the portal CA side by side with the OpenSSL CLI, cfssl and nginx.

One command (see README):  python3 benches/bench.py            full run (~15 min)
                           python3 benches/bench.py --smoke    a few seconds, for CI

Everything runs on 127.0.0.1 (OpenSSL's `ocsp -port` responder, which binds every
interface, runs inside a private network namespace together with its load
generator). Every process started is stopped by PID at the end; every load loop
is bounded in time. Results are printed as a Markdown table (median and min-max
of the runs, and ratios against the peers measured in the same run).
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSPHRASE = "benchmark passphrase, not secret"
PROCS = []


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, env=None, check=True, **kw):
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{res.stdout}\n{res.stderr}")
    return res


def start(cmd, env=None, **kw):
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_all():
    for p in PROCS:
        try:
            stop(p)
        except Exception:
            pass


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.02)
    raise SystemExit(f"{url} did not come up")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def self_signed_ca(key, crt, subject):
    """A P-256 CA for a peer, made with the OpenSSL CLI."""
    env = dict(os.environ, SSL_CERT_FILE="/dev/null", SSL_CERT_DIR="/nonexistent")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
         "-out", crt, "-days", "3650", "-subj", subject], env=env)


def have(tool):
    return shutil.which(tool) is not None


# ---------------------------------------------------------------- wrk

WRK_SCRIPT = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  prefix = args[1] or ""
  body_file = args[2]
  method = args[3] or "POST"
  if body_file and body_file ~= "" then
    local f = io.open(body_file, "rb"); body = f:read("*a"); f:close()
  end
  wrk.headers["Authorization"] = os.getenv("BENCH_TOKEN") and ("Bearer " .. os.getenv("BENCH_TOKEN")) or nil
  wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
  if not string.find(prefix, "{n}") then
    -- The same request every time: let wrk build it once (no Lua per
    -- request), so the load generator takes less of the shared cores.
    wrk.method = method; wrk.path = prefix; wrk.body = body
    request = nil
  end
end
function request()
  counter = counter + 1
  local path = prefix
  if string.find(prefix, "{n}") then
    path = string.gsub(prefix, "{n}", id .. "-" .. counter .. "-" .. math.random(1, 1000000000))
  end
  return wrk.format(method, path, nil, body)
end
function done(summary, latency, requests)
  io.write(string.format("JSON {\"requests\":%d,\"duration_us\":%d,\"errors\":%d,\"non2xx\":%d,\"p50_us\":%d,\"p99_us\":%d}\n",
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url, path, duration, connections, body_file="", method="POST", env_extra=None, threads=2, netns=False):
    script = os.path.join(WORK, "bench.lua")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
    env = dict(os.environ)
    env.update(env_extra or {})
    # Every run gets its own names: wrk's Lua random generator is unseeded, so
    # without this a second run would replay the first run's admins and meet
    # conflicts (409s), which are not counted as answers.
    path = path.replace("{n}", f"{time.time_ns() % 10**12}-{{n}}")
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
           "-s", script, url, "--", path, body_file, method]
    res = run(cmd, env=env, check=False, timeout=duration + 60)
    return load_result("wrk", res)[0]


def load_result(tool, res):
    """The rate, latencies and errors of a run from the `JSON {...}` line that
    wrk's script and ca-loadgen both print; also that raw record."""
    m = re.search(r"JSON (\{.*\})", res.stdout)
    if not m:
        raise SystemExit(f"{tool} failed: {res.stdout}\n{res.stderr}")
    r = json.loads(m.group(1))
    ok = r["requests"] - r["non2xx"]
    return {
        "rps": ok / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["errors"] + r["non2xx"],
    }, r


def loadgen(url, path, duration, connections, body_file="", method="POST", content_type="application/json",
            cacert=None, token=None, threads=2):
    """The same measurement as wrk(), made by ca-loadgen (benches/loadgen): one
    fixed request on kept-alive connections, with rustls as its TLS client
    where wrk has OpenSSL 3.0. Also returns the client's own CPU per answer."""
    cmd = [BIN_LOADGEN, "--url", url + path, "--method", method, "--connections", str(connections),
           "--threads", str(min(threads, connections)), "--duration", str(duration),
           "--header", f"Content-Type: {content_type}"]
    if body_file:
        cmd += ["--body-file", body_file]
    if cacert:
        cmd += ["--cacert", cacert]
    env = dict(os.environ)
    if token:
        env["BENCH_TOKEN"] = token
        cmd += ["--bearer-env", "BENCH_TOKEN"]
    res = run(cmd, env=env, check=False, timeout=duration + 60)
    result, r = load_result("ca-loadgen", res)
    result.update(client_cpu_us=r["cpu_us"] / max(r["requests"], 1), tls=r["tls"])
    return result


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid, timeout=60):
    """Waits until the server has finished work left over from the last run
    (e.g. RSA key generation for requests whose clients gave up), so it does
    not bleed into the next measurement."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.3)
        if cpu_seconds(pid) - before < 0.03:
            return
    log("server did not settle; continuing")


def repeat(n, fn):
    return [fn() for _ in range(n)]


def summarise(results, key):
    values = [r[key] for r in results]
    return statistics.median(values), min(values), max(values)


def fmt(results, key, digits=0):
    med, lo, hi = summarise(results, key)
    f = f"{{:,.{digits}f}}"
    if len(results) == 1:
        return f.format(med)
    return f"{f.format(med)} ({f.format(lo)}–{f.format(hi)})"


# ---------------------------------------------------------------- the CA under test

BENCH_POLICIES = {
    "bench-p256-legacy.toml": """name = "bench-p256-legacy"
key = "ecdsa-p256"
validity = "397d"
subject.common_name = "{admin}"
subject.organizational_unit = "{tenant}"
pkcs12.profile = "legacy"
""",
    "bench-rsa2048-modern.toml": """name = "bench-rsa2048-modern"
key = "rsa-2048"
validity = "397d"
subject.common_name = "{admin}"
subject.organizational_unit = "{tenant}"
pkcs12.profile = "modern"
""",
}


class Ca:
    def __init__(self, work, extra_env=None):
        os.makedirs(work, exist_ok=True)
        self.dir = os.path.join(work, "ca-data")
        self.env = dict(os.environ, CA_DATA_DIR=self.dir, CA_KEY_PASSPHRASE=PASSPHRASE, CA_LOG="warn")
        self.env.update(extra_env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cli(["init", "--subject", "CN=Bench CA,O=Example", "--base-url", self.url])
        for name, text in BENCH_POLICIES.items():
            with open(os.path.join(self.dir, "policies", name), "w") as f:
                f.write(text)
        self.token = self.cli(["--json", "token", "create", "--role", "admin"], json_out=True)["token"]
        self.ca_pem = os.path.join(work, "ca.pem")
        self.cli(["ca-cert", "--out", self.ca_pem])
        self.server = None

    def cli(self, args, json_out=False):
        res = run([BIN_CLI] + args, env=self.env)
        return json.loads(res.stdout) if json_out else res.stdout

    def start(self):
        t0 = time.perf_counter()
        self.server = start([BIN_SERVER], env=dict(self.env, CA_LISTEN=f"127.0.0.1:{self.port}"))
        wait_http(self.url + "/readyz")
        return time.perf_counter() - t0

    def start_tls(self):
        """A second server on the same store, speaking HTTPS with a certificate from
        `ca-cli server-cert`; returns (process, https URL)."""
        cert, key = os.path.join(WORK, "server.pem"), os.path.join(WORK, "server.key")
        self.cli(["server-cert", "--dns", "localhost", "--ip", "127.0.0.1", "--out-cert", cert, "--out-key", key])
        port = free_port()
        env = dict(self.env, CA_LISTEN=f"127.0.0.1:{port}", CA_TLS_CERT_FILE=cert, CA_TLS_KEY_FILE=key)
        proc = start([BIN_SERVER], env=env)
        url = f"https://127.0.0.1:{port}"
        import ssl
        context = ssl.create_default_context(cafile=self.ca_pem)
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1, context=context) as r:
                    if r.status == 200:
                        return proc, url
            except Exception:
                if time.time() > deadline:
                    raise SystemExit(f"{url} did not come up")
                time.sleep(0.05)

    def stop(self):
        if self.server:
            stop(self.server)
            self.server = None

    def api(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body or {}).encode(),
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


# ---------------------------------------------------------------- 1. issuance

def bench_issuance(ca, args, rows):
    env = {"BENCH_TOKEN": ca.token}
    for policy, label in [("portal-admin", "P-256, modern PKCS#12"),
                          ("bench-p256-legacy", "P-256, legacy PKCS#12"),
                          ("bench-rsa2048-modern", "RSA-2048, modern PKCS#12"),
                          ("portal-admin-legacy", "RSA-2048, legacy PKCS#12")]:
        body = os.path.join(WORK, f"{policy}.json")
        with open(body, "w") as f:
            json.dump({"policy": policy}, f)
        for conns in (1, 32):
            results = repeat(args.runs, lambda: (settle(ca.server.pid), wrk(ca.url, "/v1/tenants/bench/admins/a{n}/certificates", args.duration, conns, body, env_extra=env))[1])
            # Legacy rows carry legacy ÷ modern for the same key and concurrency.
            ratio = None
            if "legacy" in label:
                modern = label.replace("legacy", "modern") + f", c{conns}"
                ratio = ratio_of(rows, modern, results, invert=True)
            rows.append(("Issuance via API, durable", f"{label}, c{conns}", fmt(results, "rps"), fmt(results, "p50_ms", 1), fmt(results, "p99_ms", 1), results, ratio))
            log(f"issuance {policy} c{conns}: {fmt(results, 'rps')}/s")
    return rows


def bench_pickup(ca, args, rows):
    """Issuance with delivery pickup next to direct issuance, same policy, same run:
    a pickup adds the one-time code's scrypt (N=2^13, r=8, p=1: ~8 MiB and tens of
    milliseconds of one core), AES-256-GCM of the bundle and a second row in the
    issuance's transaction."""
    env = {"BENCH_TOKEN": ca.token}
    bodies = {}
    for delivery in ("direct", "pickup"):
        bodies[delivery] = os.path.join(WORK, f"delivery-{delivery}.json")
        with open(bodies[delivery], "w") as f:
            json.dump({"policy": "portal-admin", "delivery": delivery}, f)
    for conns in (1, 32):
        direct = None
        for delivery in ("direct", "pickup"):
            prefix = "d" if delivery == "direct" else "p"
            results = repeat(args.runs, lambda: (settle(ca.server.pid), wrk(ca.url, f"/v1/tenants/bench/admins/{prefix}{conns}x{{n}}/certificates", args.duration, conns, bodies[delivery], env_extra=env))[1])
            ratio = None
            if delivery == "pickup" and direct:
                ratio = summarise(results, "rps")[0] / summarise(direct, "rps")[0]
            else:
                direct = results
            rows.append(("Issuance with delivery, durable", f"P-256 modern, {delivery}, c{conns}", fmt(results, "rps"), fmt(results, "p50_ms", 1), fmt(results, "p99_ms", 1), results, ratio))
            log(f"issuance {delivery} c{conns}: {fmt(results, 'rps')}/s")
    return rows


def bench_pkcs12_step(args, rows):
    """The PKCS#12 step of an issuance alone, in process on one thread (no key
    generation, signing, HTTP or store): both profiles alternated in one run
    (`ca-core/examples/pkcs12_step.rs`)."""
    log("building the PKCS#12 step example")
    run(["cargo", "build", "--release", "-q", "-p", "ca-core", "--example", "pkcs12_step"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    seconds = "0.3" if args.smoke else str(max(1, args.duration // 3))
    res = run([os.path.join(target, "release", "examples", "pkcs12_step"), seconds, str(args.runs)])
    found = {}
    for line in res.stdout.splitlines():
        if line.startswith("JSON "):
            r = json.loads(line[5:])
            found[(r["key"], r["profile"])] = r
    for key in ("P-256", "RSA-2048"):
        modern = found[(key, "modern")]["median"]
        legacy = found[(key, "legacy")]["median"]
        for profile, what, ratio in [("modern", "PKCS#12 step alone, one thread", None),
                                     ("legacy", "PKCS#12 step alone, one thread", legacy / modern),
                                     ("openssl-legacy", "PKCS#12 step, OpenSSL PKCS12_create legacy (peer)",
                                      legacy / found[(key, "openssl-legacy")]["median"])]:
            r = found[(key, profile)]
            cell = f"{r['median']:,.0f} ({r['min']:,.0f}–{r['max']:,.0f})"
            rows.append((what, f"{key} key, {profile}", cell, "–", "–", [{"rps": r["median"]}], ratio))
            log(f"pkcs12 step {key} {profile}: {cell}/s")


def openssl_pipeline(work, key_kind, n):
    """key + CSR + certificate + PKCS#12 with the OpenSSL CLI, n times; bundles per second."""
    d = os.path.join(work, "openssl-pipe")
    os.makedirs(d, exist_ok=True)
    ca_key = os.path.join(d, "ca.key")
    ca_crt = os.path.join(d, "ca.crt")
    env = dict(os.environ, SSL_CERT_FILE="/dev/null", SSL_CERT_DIR="/nonexistent")
    if not os.path.exists(ca_crt):
        self_signed_ca(ca_key, ca_crt, "/CN=OpenSSL Bench CA")
    t0 = time.perf_counter()
    for i in range(n):
        key, csr, crt, p12 = (os.path.join(d, f"l.{x}") for x in ("key", "csr", "crt", "p12"))
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_kind == "ec" else ["-newkey", "rsa:2048"]
        run(["openssl", "req", "-new"] + newkey + ["-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN=admin{i}/OU=bench"], env=env)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-set_serial", str(1000 + i), "-days", "397", "-out", crt], env=env)
        run(["openssl", "pkcs12", "-export", "-inkey", key, "-in", crt, "-certfile", ca_crt, "-name", f"admin{i}",
             "-passout", "pass:bench-password-123", "-out", p12], env=env)
    return n / (time.perf_counter() - t0)


def bench_openssl_pipeline(args, rows, ours, server_pid):
    settle(server_pid)
    n = 5 if args.smoke else 40
    for kind, label, our_key in [("ec", "P-256, modern PKCS#12", "P-256, modern PKCS#12, c32"),
                                 ("rsa", "RSA-2048, modern PKCS#12", "RSA-2048, modern PKCS#12, c32")]:
        results = repeat(args.runs, lambda: {"rps": openssl_pipeline(WORK, kind, n)})
        ratio = ratio_of(ours, our_key, results)
        rows.append(("Issuance, OpenSSL CLI pipeline (peer)", label, fmt(results, "rps", 1), "–", "–", results, ratio))
        log(f"openssl pipeline {kind}: {fmt(results, 'rps', 1)}/s")


def ratio_of(rows, label, peer_results, invert=False):
    """ours (the row named `label`) ÷ peer; with `invert`, `peer_results` ÷ that row."""
    for row in rows:
        if row[1] == label:
            ours = statistics.median(r["rps"] for r in row[5])
            theirs = statistics.median(r["rps"] for r in peer_results)
            if invert:
                return theirs / ours if ours else None
            return ours / theirs if theirs else None
    return None


# ---------------------------------------------------------------- 2. CSR signing

def make_csr(work):
    key, csr = os.path.join(work, "csr.key"), os.path.join(work, "client.csr")
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
         "-out", csr, "-subj", "/CN=robot"])
    return open(csr).read()


def start_cfssl():
    """cfssl serve on its own CA; returns (process, URL)."""
    d = os.path.join(WORK, "cfssl")
    os.makedirs(d, exist_ok=True)
    ca_key, ca_crt = os.path.join(d, "ca-key.pem"), os.path.join(d, "ca.pem")
    self_signed_ca(ca_key, ca_crt, "/CN=cfssl Bench CA")
    port = free_port()
    p = start(["cfssl", "serve", "-address", "127.0.0.1", "-port", str(port), "-ca", ca_crt, "-ca-key", ca_key, "-loglevel", "5"])
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return p, f"http://127.0.0.1:{port}"


def bench_csr(ca, args, rows):
    csr = make_csr(WORK)
    body = os.path.join(WORK, "csr.json")
    with open(body, "w") as f:
        json.dump({"policy": "automation-csr", "csr": csr}, f)
    env = {"BENCH_TOKEN": ca.token}
    path = "/v1/tenants/bench/admins/r{n}/csr"
    results = repeat(args.runs, lambda: (settle(ca.server.pid), wrk(ca.url, path, args.duration, 1, body, env_extra=env))[1])
    rows.append(("CSR signing via API, durable", "c1", fmt(results, "rps"), fmt(results, "p50_ms", 1), fmt(results, "p99_ms", 1), results))
    log(f"csr c1: {fmt(results, 'rps')}/s")
    peer = None
    if have("cfssl"):
        peer, url = start_cfssl()
        cbody = os.path.join(WORK, "cfssl-sign.json")
        with open(cbody, "w") as f:
            json.dump({"certificate_request": csr}, f)
    else:
        log("cfssl not installed: skipping the cfssl peer (apt-get install golang-cfssl)")
    # At c32 the runs alternate, ours then the peer's: this machine's speed
    # drifts by tens of percent over minutes (other guests on its host), and
    # in two blocks one side would meet more of the drift than the other.
    ours, theirs = [], []
    for _ in range(args.runs):
        settle(ca.server.pid)
        ours.append(wrk(ca.url, path, args.duration, 32, body, env_extra=env))
        if peer:
            theirs.append(wrk(url, "/api/v1/cfssl/sign", args.duration, 32, cbody))
    rows.append(("CSR signing via API, durable", "c32", fmt(ours, "rps"), fmt(ours, "p50_ms", 1), fmt(ours, "p99_ms", 1), ours))
    log(f"csr c32: {fmt(ours, 'rps')}/s")
    if not peer:
        return
    stop(peer)
    ratio = ratio_of(rows, "c32", theirs)
    rows.append(("CSR signing, cfssl serve /sign (peer, no database)", "c32", fmt(theirs, "rps"), fmt(theirs, "p50_ms", 1), fmt(theirs, "p99_ms", 1), theirs, ratio))
    log(f"cfssl sign c32: {fmt(theirs, 'rps')}/s")


# ---------------------------------------------------------------- 1b. the signer: key file vs PKCS#11 token

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def softhsm_env(work):
    """A fresh SoftHSM2 token in `work`; the variables that make a CA use it."""
    tokens = os.path.join(work, "softhsm-tokens")
    os.makedirs(tokens, exist_ok=True)
    conf = os.path.join(work, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=conf)
    run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "bench-pin", "--so-pin", "bench-so"], env=env)
    return {"SOFTHSM2_CONF": conf, "CA_KEY_SOURCE": "pkcs11", "CA_KEY_MODULE": SOFTHSM_MODULE,
            "CA_KEY_TOKEN_LABEL": "bench", "CA_PKCS11_PIN": "bench-pin"}


def bench_signers(args, rows):
    """P-256 issuance and OCSP with a nonce (both sign per request), with the
    CA and responder keys in a file and in a SoftHSM2 token, same run."""
    if not (have("softhsm2-util") and os.path.exists(SOFTHSM_MODULE)):
        log("softhsm2 missing: skipping the PKCS#11 signer rows (apt-get install softhsm2)")
        return
    measured = {}
    for signer in ("file", "SoftHSM2"):
        work = os.path.join(WORK, f"signer-{signer}")
        os.makedirs(work, exist_ok=True)
        ca = Ca(work, softhsm_env(work) if signer == "SoftHSM2" else None)
        ca.start()
        try:
            body = os.path.join(work, "issue.json")
            with open(body, "w") as f:
                json.dump({"policy": "portal-admin"}, f)
            env = {"BENCH_TOKEN": ca.token}
            issued = repeat(args.runs, lambda: (settle(ca.server.pid), wrk(ca.url, "/v1/tenants/bench/admins/s{n}/certificates", args.duration, 32, body, env_extra=env))[1])
            leaf = os.path.join(work, "leaf.pem")
            serial = ca.api("POST", "/v1/tenants/bench/admins/ocsp-target/certificates", {"policy": "portal-admin"})["serial"]
            with open(leaf, "w") as f:
                f.write(ca.api("GET", f"/v1/certificates/{serial}")["pem"])
            nonce = ocsp_request_file(work, leaf, ca.ca_pem, "ocsp-nonce.der", nonce=True)
            ocsp = repeat(args.runs, lambda: (settle(ca.server.pid), wrk(ca.url, "/ocsp", args.duration, 32, nonce, env_extra={"BENCH_CONTENT_TYPE": "application/ocsp-request"}))[1])
        finally:
            ca.stop()
        measured[signer] = (issued, ocsp)
        log(f"signer {signer}: issuance {fmt(issued, 'rps')}/s, OCSP nonce {fmt(ocsp, 'rps')}/s")
    for index, (what, digits) in enumerate([("Issuance via API, durable, P-256 modern PKCS#12", 1), ("OCSP, live (nonce)", 2)]):
        file_results = measured["file"][index]
        for signer in ("file", "SoftHSM2"):
            results = measured[signer][index]
            row = (f"{what}, {signer} signer", "c32", fmt(results, "rps"), fmt(results, "p50_ms", digits), fmt(results, "p99_ms", digits), results)
            if signer == "file":
                rows.append(row + (None,))
            else:
                ratio = summarise(results, "rps")[0] / summarise(file_results, "rps")[0]
                rows.append(row + (ratio, f"{ratio:.2f}× the file signer"))


# ---------------------------------------------------------------- 3. OCSP

def ocsp_request_file(work, cert_pem, issuer_pem, name, nonce=False):
    path = os.path.join(work, name)
    cmd = ["openssl", "ocsp", "-issuer", issuer_pem, "-cert", cert_pem, "-reqout", path]
    if not nonce:
        cmd.append("-no_nonce")
    run(cmd)
    return path


def bench_ocsp(ca, args, rows):
    issued = ca.api("POST", "/v1/tenants/bench/admins/ocsp-target/certificates", {"policy": "portal-admin"})
    leaf = os.path.join(WORK, "ocsp-leaf.pem")
    with open(leaf, "w") as f:
        f.write(ca.api("GET", f"/v1/certificates/{issued['serial']}")["pem"])
    plain = ocsp_request_file(WORK, leaf, ca.ca_pem, "ocsp-plain.der")
    nonce = ocsp_request_file(WORK, leaf, ca.ca_pem, "ocsp-nonce.der", nonce=True)
    env = {"BENCH_CONTENT_TYPE": "application/ocsp-request"}
    for label, body in [("pre-signed (no nonce)", plain), ("live (nonce)", nonce)]:
        results = repeat(args.runs, lambda: (settle(ca.server.pid), wrk(ca.url, "/ocsp", args.duration, 32, body, env_extra=env))[1])
        rows.append(("OCSP, ours", f"{label}, c32", fmt(results, "rps"), fmt(results, "p50_ms", 2), fmt(results, "p99_ms", 2), results))
        log(f"ocsp {label}: {fmt(results, 'rps')}/s")
    return plain


# ---------------------------------------------------------------- 3b. over TLS

def bench_tls(ca, args, rows, plain_request):
    """Issuance and OCSP over HTTPS (keep-alive: wrk reuses its connections), each
    run next to the same measurement over plain HTTP, so the ratio is within one run."""
    proc, tls_url = ca.start_tls()
    try:
        body = os.path.join(WORK, "portal-admin.json")
        with open(body, "w") as f:
            json.dump({"policy": "portal-admin"}, f)
        env = {"BENCH_TOKEN": ca.token}
        for conns in (1, 32):
            plain, tls = [], []
            for _ in range(args.runs):
                settle(ca.server.pid)
                plain.append(wrk(ca.url, "/v1/tenants/bench/admins/p{n}/certificates", args.duration, conns, body, env_extra=env))
                settle(proc.pid)
                tls.append(wrk(tls_url, "/v1/tenants/bench/admins/t{n}/certificates", args.duration, conns, body, env_extra=env))
            ratio = statistics.median(r["rps"] for r in tls) / max(statistics.median(r["rps"] for r in plain), 1e-9)
            rows.append(("Issuance over TLS (keep-alive)", f"P-256 modern, c{conns}; HTTP same run {fmt(plain, 'rps')}/s; TLS/HTTP {ratio:.2f}x",
                         fmt(tls, "rps"), fmt(tls, "p50_ms", 1), fmt(tls, "p99_ms", 1), tls))
            log(f"issuance TLS c{conns}: {fmt(tls, 'rps')}/s vs HTTP {fmt(plain, 'rps')}/s ({ratio:.2f}x)")
        oenv = {"BENCH_CONTENT_TYPE": "application/ocsp-request"}

        def by_wrk(url):
            return wrk(url, "/ocsp", args.duration, 32, plain_request, env_extra=oenv)

        def by_loadgen(url):
            return loadgen(url, "/ocsp", args.duration, 32, plain_request, content_type="application/ocsp-request",
                           cacert=ca.ca_pem)
        # Two clients: wrk, whose TLS is OpenSSL 3.0 and costs it about twice
        # per request what TLS costs our server (BENCHMARKS.md, "Over TLS"),
        # and ca-loadgen, the same load with rustls as the client.
        for client, load in (("wrk", by_wrk), ("ca-loadgen", by_loadgen)):
            bench_tls_ocsp(ca, proc, tls_url, args, rows, client, load)
    finally:
        stop(proc)


def bench_tls_ocsp(ca, proc, tls_url, args, rows, client, load):
    """Pre-signed OCSP at c32 over HTTPS against plain HTTP, measured by `load`."""
    plain, tls = [], []

    def measured(pid, url):
        # The server's own CPU per answer: the client shares the cores and pays
        # for its side of TLS too, so the rate ratio understates the server's.
        settle(pid)
        before = cpu_seconds(pid)
        r = load(url)
        r["cpu_us"] = (cpu_seconds(pid) - before) / max(r["rps"] * args.duration, 1) * 1e6
        return r
    # This machine's speed drifts within seconds, so each TLS run is paired
    # with a plain run next to it, the order alternating (plain first, then
    # TLS first: a steady drift favours neither), and the ratio of each pair
    # is kept besides the ratio of the medians.
    pairs = []
    for i in range(args.runs):
        if i % 2 == 0:
            p = measured(ca.server.pid, ca.url)
            t = measured(proc.pid, tls_url)
        else:
            t = measured(proc.pid, tls_url)
            p = measured(ca.server.pid, ca.url)
        plain.append(p)
        tls.append(t)
        pairs.append(t["rps"] / max(p["rps"], 1e-9))
    ratio = statistics.median(r["rps"] for r in tls) / max(statistics.median(r["rps"] for r in plain), 1e-9)
    paired = statistics.median(pairs)
    cpu = statistics.median(r["cpu_us"] for r in tls) / max(statistics.median(r["cpu_us"] for r in plain), 1e-9)
    listed = ", ".join(f"{x:.2f}" for x in pairs)
    client_cpu = ""
    if "client_cpu_us" in tls[0]:
        client_cpu = (f"; client CPU per answer HTTP {fmt(plain, 'client_cpu_us', 1)} us, "
                      f"TLS {fmt(tls, 'client_cpu_us', 1)} us ({tls[0]['tls']})")
    rows.append((f"OCSP over TLS (keep-alive), {client}", f"pre-signed, c32; HTTP same run {fmt(plain, 'rps')}/s; TLS/HTTP {ratio:.2f}x, "
                 f"median of pairs {paired:.2f}x ({listed}) (target >= 0.8x); "
                 f"server CPU per answer HTTP {fmt(plain, 'cpu_us', 1)} us, TLS {fmt(tls, 'cpu_us', 1)} us ({cpu:.2f}x){client_cpu}",
                 fmt(tls, "rps"), fmt(tls, "p50_ms", 2), fmt(tls, "p99_ms", 2), tls))
    log(f"ocsp TLS by {client}: {fmt(tls, 'rps')}/s vs HTTP {fmt(plain, 'rps')}/s ({ratio:.2f}x; pairs {listed}, "
        f"median {paired:.2f}x); server CPU/answer {cpu:.2f}x{client_cpu}")


def bench_openssl_ocsp(args, rows):
    """`openssl ocsp -index … -multi 2` in a private network namespace with wrk."""
    if not have("unshare"):
        log("unshare missing: skipping openssl ocsp peer")
        return
    d = os.path.join(WORK, "openssl-ocsp")
    os.makedirs(d, exist_ok=True)
    key, crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    self_signed_ca(key, crt, "/CN=OpenSSL OCSP CA")
    leaf_key, leaf_csr, leaf = (os.path.join(d, x) for x in ("leaf.key", "leaf.csr", "leaf.pem"))
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", leaf_key,
         "-out", leaf_csr, "-subj", "/CN=admin"])
    run(["openssl", "x509", "-req", "-in", leaf_csr, "-CA", crt, "-CAkey", key, "-set_serial", "0x1001", "-days", "397", "-out", leaf])
    expiry = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 397 * 86400))
    with open(os.path.join(d, "index.txt"), "w") as f:
        f.write(f"V\t{expiry}\t\t1001\tunknown\t/CN=admin\n")
    req = ocsp_request_file(d, leaf, crt, "req.der")
    script = os.path.join(WORK, "bench.lua")
    port = 8899
    results = []
    for _ in range(args.runs):
        shell = (
            "ip link set lo up; "
            f"openssl ocsp -index {d}/index.txt -port {port} -rsigner {crt} -rkey {key} -CA {crt} -multi 2 -ndays 1 >/dev/null 2>&1 & "
            "P=$!; sleep 1; "
            f"BENCH_CONTENT_TYPE=application/ocsp-request wrk -t2 -c32 -d{args.duration}s --timeout 10s -s {script} http://127.0.0.1:{port} -- / {req} POST; "
            "kill $P; pkill -P $P; wait"
        )
        res = run(["unshare", "-n", "sh", "-c", shell], check=False, timeout=args.duration + 60)
        m = re.search(r"JSON (\{.*\})", res.stdout)
        if not m:
            log(f"openssl ocsp run failed: {res.stdout[-500:]} {res.stderr[-500:]}")
            return
        r = json.loads(m.group(1))
        results.append({"rps": (r["requests"] - r["non2xx"]) / (r["duration_us"] / 1e6),
                        "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000})
    ratio = ratio_of(rows, "pre-signed (no nonce), c32", results)
    rows.append(("OCSP, openssl ocsp -multi 2 (peer)", "c32", fmt(results, "rps"), fmt(results, "p50_ms", 2), fmt(results, "p99_ms", 2), results, ratio))
    log(f"openssl ocsp: {fmt(results, 'rps')}/s")


def bench_nginx_static(args, rows, response_size):
    if not have("nginx"):
        log("nginx missing: skipping the static-file ceiling")
        return
    d = os.path.join(WORK, "nginx")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    os.makedirs(os.path.join(d, "html"), exist_ok=True)
    with open(os.path.join(d, "html", "file"), "wb") as f:
        f.write(os.urandom(response_size))
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"user root; worker_processes 2; pid {d}/nginx.pid; error_log {d}/logs/error.log;\n"
                f"events {{ worker_connections 1024; }}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{port}; root {d}/html; }} }}\n")
    run(["nginx", "-p", d, "-c", conf])
    try:
        results = repeat(args.runs, lambda: wrk(f"http://127.0.0.1:{port}", "/file", args.duration, 32, method="GET"))
    finally:
        run(["nginx", "-p", d, "-c", conf, "-s", "stop"], check=False)
    ratio = ratio_of(rows, "pre-signed (no nonce), c32", results)
    rows.append((f"nginx static file of {response_size} B (ceiling)", "c32", fmt(results, "rps"), fmt(results, "p50_ms", 2), fmt(results, "p99_ms", 2), results, ratio))
    log(f"nginx static: {fmt(results, 'rps')}/s")


# ---------------------------------------------------------------- 4. CRL scale

def fill_revoked(db, n, start_index=0):
    """Inserts n revoked certificate records straight into the store (setup only).
    Each row carries 600 bytes standing in for a certificate's DER, as real rows
    do, so reads that touch the table pay what they would in production."""
    con = sqlite3.connect(db)
    now = int(time.time())
    der = os.urandom(600)
    batch = []
    for i in range(start_index, start_index + n):
        serial = "%032x" % (0x10000000000000000000000000000000 + i)
        batch.append((serial, "bulk", f"a{i}", "portal-admin", 1, now - 3600, now + 365 * 86400, now - 60, 4, now, der))
        if len(batch) == 50000:
            con.executemany("INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, revoked_at, reason, created_at, der) VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
            batch = []
    if batch:
        con.executemany("INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, revoked_at, reason, created_at, der) VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
    con.execute("UPDATE crl_state SET revision = revision + 1")
    con.commit()
    con.close()


GNU_TIME = "/usr/bin/time"


def timed(cmd, env=None):
    """Wall seconds and peak RSS (MB) of a command, via GNU time or wait4.

    GNU time first: Linux counts a child's peak RSS from the moment it was
    forked, so wait4 on a child of this (by then large) Python process reports
    at least Python's own size; GNU time's child is forked from a small process.
    """
    wrapped = [GNU_TIME, "-f", "maxrss_kb=%M"] + cmd if os.path.exists(GNU_TIME) else cmd
    # stderr goes to a file, not a pipe: a command that writes more than a
    # pipe holds would otherwise block before wait4 returns.
    with tempfile.TemporaryFile() as stderr:
        t0 = time.perf_counter()
        p = subprocess.Popen(wrapped, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {err[-500:]}")
    peak = re.findall(r"^maxrss_kb=(\d+)$", err, re.M)
    rss_kb = int(peak[-1]) if peak else usage.ru_maxrss
    return {"seconds": wall, "rss_mb": rss_kb / 1024}


def bench_crl(args, rows):
    sizes = [1000] if args.smoke else [10_000, 100_000, 1_000_000]
    d = os.path.join(WORK, "crl-scale")
    os.makedirs(d, exist_ok=True)
    ca = Ca(d)
    have_cfssl = have("cfssl") and not args.smoke
    done = 0
    for n in sizes:
        fill_revoked(os.path.join(ca.dir, "ca.db"), n - done, done)
        done = n
        out = os.path.join(d, "crl.der")
        results = repeat(args.runs, lambda: timed([BIN_CLI, "crl", "--out", out], env=ca.env))
        size_mb = os.path.getsize(out) / 1e6
        rows.append(("CRL build + sign, ours (`ca-cli crl`)", f"{n:,} entries, {size_mb:.1f} MB",
                     fmt(results, "seconds", 2) + " s", fmt(results, "rss_mb") + " MB", "–", results))
        log(f"crl {n}: {fmt(results, 'seconds', 2)} s, {fmt(results, 'rss_mb')} MB")
        peer = openssl_gencrl(d, n, args.runs)
        ratio = statistics.median(r["seconds"] for r in peer) / statistics.median(r["seconds"] for r in results)
        mem = statistics.median(r["rss_mb"] for r in results) / statistics.median(r["rss_mb"] for r in peer)
        rows.append(("CRL, openssl ca -gencrl (peer)", f"{n:,} entries", fmt(peer, "seconds", 2) + " s",
                     fmt(peer, "rss_mb") + " MB", "–", peer, ratio, f"{ratio:.1f}× time, {mem:.2f}× the memory"))
        if have_cfssl:
            peer = cfssl_gencrl(d, n, args.runs)
            ratio = statistics.median(r["seconds"] for r in peer) / statistics.median(r["seconds"] for r in results)
            rows.append(("CRL, cfssl gencrl (peer)", f"{n:,} entries", fmt(peer, "seconds", 2) + " s",
                         fmt(peer, "rss_mb") + " MB", "–", peer, ratio, f"{ratio:.1f}× time"))
    return ca


def openssl_gencrl(d, n, runs):
    p = os.path.join(d, "openssl-ca")
    os.makedirs(p, exist_ok=True)
    key, crt = os.path.join(p, "ca.key"), os.path.join(p, "ca.pem")
    if not os.path.exists(crt):
        self_signed_ca(key, crt, "/CN=OpenSSL CRL CA")
    expiry = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 365 * 86400))
    revoked = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() - 60))
    with open(os.path.join(p, "index.txt"), "w") as f:
        for i in range(n):
            f.write(f"R\t{expiry}\t{revoked},superseded\t{0x10000000000000000000000000000000 + i:032X}\tunknown\t/CN=a{i}\n")
    with open(os.path.join(p, "crlnumber"), "w") as f:
        f.write("1000\n")
    conf = os.path.join(p, "ca.cnf")
    with open(conf, "w") as f:
        f.write(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {p}/index.txt\ncrlnumber = {p}/crlnumber\n"
                f"certificate = {crt}\nprivate_key = {key}\ndefault_md = sha256\ndefault_crl_days = 1\n"
                "crl_extensions = e\n[e]\nauthorityKeyIdentifier = keyid:always\n")
    env = dict(os.environ, SSL_CERT_FILE="/dev/null", SSL_CERT_DIR="/nonexistent")
    return repeat(runs, lambda: timed(["openssl", "ca", "-gencrl", "-config", conf, "-out", os.path.join(p, "crl.pem")], env=env))


def cfssl_gencrl(d, n, runs):
    p = os.path.join(d, "cfssl-ca")
    os.makedirs(p, exist_ok=True)
    key, crt = os.path.join(p, "ca-key.pem"), os.path.join(p, "ca.pem")
    if not os.path.exists(crt):
        self_signed_ca(key, crt, "/CN=cfssl CRL CA")
    serials = os.path.join(p, "serials.txt")
    with open(serials, "w") as f:
        for i in range(n):
            f.write(f"{0x10000000000000000000000000000000 + i}\n")
    # cfssl 1.2 reads a TIME argument as a path: leave it out (default expiry).
    return repeat(runs, lambda: timed(["cfssl", "gencrl", serials, crt, key]))


# ---------------------------------------------------------------- 5. revocation to visible

def ocsp_status(url, request_der):
    req = urllib.request.Request(url + "/ocsp", data=request_der, method="POST",
                                 headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


def bench_revocation_latency(ca, args, rows):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    issuer = x509.load_pem_x509_certificate(open(ca.ca_pem, "rb").read())
    n = 5 if args.smoke else 100
    to_ocsp, to_crl, reissues = [], [], []
    for i in range(n):
        admin = f"latency-{i}"
        first = ca.api("POST", f"/v1/tenants/bench/admins/{admin}/certificates", {"policy": "portal-admin"})
        cert = x509.load_pem_x509_certificate(ca.api("GET", f"/v1/certificates/{first['serial']}")["pem"].encode())
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build().public_bytes(serialization.Encoding.DER)
        ocsp_status(ca.url, request)  # warm the pre-signed cache with "good"
        t0 = time.perf_counter()
        ca.api("POST", f"/v1/tenants/bench/admins/{admin}/reissue", {"reason": "key-compromise"})
        t_resp = time.perf_counter()
        reissues.append(t_resp - t0)
        serial = int(first["serial"], 16)
        seen_ocsp = seen_crl = None
        while seen_ocsp is None or seen_crl is None:
            now = time.perf_counter()
            if now - t_resp > 10:
                raise SystemExit("revocation not visible within 10 s")
            if seen_ocsp is None:
                resp = ocsp.load_der_ocsp_response(ocsp_status(ca.url, request))
                if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                    seen_ocsp = time.perf_counter() - t_resp
            if seen_crl is None:
                with urllib.request.urlopen(ca.url + "/crl", timeout=5) as r:
                    crl = x509.load_der_x509_crl(r.read())
                if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                    seen_crl = time.perf_counter() - t_resp
            time.sleep(0.005)
        to_ocsp.append(seen_ocsp * 1000)
        to_crl.append(seen_crl * 1000)

    def pct(values, p):
        values = sorted(values)
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
    rows.append(("Reissue (issue + revoke + CRL trigger), sequential", f"{n} reissues",
                 f"{n / sum(reissues):,.0f}/s", f"{pct([r * 1000 for r in reissues], 50):.1f}", f"{pct([r * 1000 for r in reissues], 99):.1f}", []))
    rows.append(("Revocation → visible in OCSP", f"{n} reissues", "–", f"{pct(to_ocsp, 50):.1f}", f"{pct(to_ocsp, 99):.1f}", []))
    rows.append(("Revocation → listed in /crl", f"{n} reissues", "–", f"{pct(to_crl, 50):.1f}", f"{pct(to_crl, 99):.1f}", []))
    log(f"revocation visible: OCSP p99 {pct(to_ocsp, 99):.1f} ms, CRL p99 {pct(to_crl, 99):.1f} ms")


# ---------------------------------------------------------------- 5b. revocation to /crl at a million entries

def fill_revoked_sql(n, sqlite_db=None, postgres_url=None):
    """Writes n revoked certificate records straight into the store with one
    INSERT ... SELECT inside the database (SQLite's recursive CTE, PostgreSQL's
    generate_series), 600 bytes of stand-in DER each, serials 0x20... (setup
    only: ~10 s for a million rows here, against minutes through the API).
    Their revoked_rev stays NULL, like rows revoked before migration 0012:
    the server lists them from its full read at start-up."""
    now = int(time.time())
    if sqlite_db:
        con = sqlite3.connect(sqlite_db)
        con.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, revoked_at, reason, created_at, der) "
            "SELECT printf('2%031x', i), 'bulk', 'a' || i, 'portal-admin', 1, ?, ?, ?, 4, ?, randomblob(600) FROM n",
            (n - 1, now - 3600, now + 365 * 86400, now - 60, now))
        con.execute("UPDATE crl_state SET revision = revision + 1")
        con.commit()
        con.close()
    else:
        run(["psql", postgres_url, "-qc",
             "INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, revoked_at, reason, created_at, der) "
             f"SELECT '2' || lpad(to_hex(i), 31, '0'), 'bulk', 'a' || i, 'portal-admin', 1, {now - 3600}, {now + 365 * 86400}, "
             f"{now - 60}, 4, {now}, decode(repeat(md5(i::text), 38), 'hex') FROM generate_series(0, {n - 1}) AS i; "
             "UPDATE crl_state SET revision = revision + 1; ANALYZE certificates;"])


def crl_get(url, etag=None, wait=0):
    """GET /crl, conditional on etag, long-polling up to `wait` s: (etag, DER or None if 304)."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
        if wait:
            headers["Prefer"] = f"wait={wait}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/crl", headers=headers), timeout=wait + 30) as r:
            return r.headers["ETag"], r.read()
    except urllib.error.HTTPError as e:
        if e.code == 304:
            return etag, None
        raise


def crl_listing_latency(revoke_url, watch_url, token, serials, gap=0.0):
    """Revokes each serial through revoke_url's API, then long-polls watch_url's
    /crl (If-None-Match + Prefer: wait, as `crl pull --watch` does) until a CRL
    listing it arrives; returns (ms per serial, last CRL's size in bytes).
    `gap` seconds pass before each revocation."""
    etag, der = crl_get(watch_url)
    times = []
    for serial in serials:
        time.sleep(gap)
        etag, newer = crl_get(watch_url, etag)  # catch up with any CRL published meanwhile
        needle = bytes.fromhex("0210" + serial)  # INTEGER, 16 content octets (top bit clear)
        t0 = time.perf_counter()
        req = urllib.request.Request(f"{revoke_url}/v1/certificates/{serial}/revoke", method="POST",
                                     data=b'{"reason":"key-compromise"}',
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        while True:
            etag, newer = crl_get(watch_url, etag, wait=10)
            if newer is not None:
                der = newer
                if needle in der:
                    break
            if time.perf_counter() - t0 > 20:
                raise SystemExit(f"{serial} not listed in {watch_url}/crl within 20 s")
        times.append((time.perf_counter() - t0) * 1000)
    return times, len(der)


def wait_crl_entries(url, n, timeout=300):
    """Seconds until url's /crl is a CRL of at least n entries (the start-up build)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            _, der = crl_get(url)
            if len(der) > n * 30:
                return time.perf_counter() - t0
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url}/crl did not reach {n} entries within {timeout} s")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench_crl_latency(args, rows):
    """Revocation through the API → listed in /crl with a million revoked
    entries in the store: SQLite (one server), and PostgreSQL with the CRL
    watched at a second replica (env CA_TEST_POSTGRES_URL, else skipped)."""
    n = 10_000 if args.smoke else 1_000_000
    count = 3 if args.smoke else 50
    cases = [("SQLite, same server", None)]
    admin_url = os.environ.get("CA_TEST_POSTGRES_URL")
    if admin_url and have("psql"):
        cases.append(("PostgreSQL, revoked at replica A, watched at replica B", admin_url))
    else:
        log("crl-latency: CA_TEST_POSTGRES_URL not set, PostgreSQL case skipped")
    for label, pg_admin in cases:
        work = os.path.join(WORK, "crl-latency-" + ("pg" if pg_admin else "sqlite"))
        extra, db_name = {}, None
        if pg_admin:
            db_name = f"ca_bench_crl_{os.getpid()}"
            run(["psql", pg_admin, "-qc", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"])
            run(["psql", pg_admin, "-qc", f"CREATE DATABASE {db_name}"])
            extra["CA_DATABASE_URL"] = pg_admin.rsplit("/", 1)[0] + "/" + db_name
        try:
            ca = Ca(work, extra)
            t0 = time.perf_counter()
            if pg_admin:
                fill_revoked_sql(n, postgres_url=extra["CA_DATABASE_URL"])
            else:
                fill_revoked_sql(n, sqlite_db=os.path.join(ca.dir, "ca.db"))
            log(f"crl-latency: {n:,} revoked rows written in {time.perf_counter() - t0:.1f} s ({label})")
            # The server builds the first CRL (a full read) before /readyz.
            first = ca.start() + wait_crl_entries(ca.url, n)
            watch_url, other = ca.url, None
            if pg_admin:
                port = free_port()
                other = start([BIN_SERVER], env=dict(ca.env, CA_LISTEN=f"127.0.0.1:{port}"))
                watch_url = f"http://127.0.0.1:{port}"
                wait_http(watch_url + "/readyz", timeout=120)
                wait_crl_entries(watch_url, n)
            serials = [ca.api("POST", f"/v1/tenants/bench/admins/crl-latency-{i}/certificates",
                              {"policy": "portal-admin"})["serial"] for i in range(count)]
            # One revocation every ~2 s: each finds the server idle (at 1M the
            # previous CRL's 49 MB is still being stored for ~0.5 s after it
            # is served, and a revocation arriving then waits for SQLite's
            # one writer).
            gap = 0 if args.smoke else 1.5
            times, size = crl_listing_latency(ca.url, watch_url, ca.token, serials, gap=gap)
            rows.append((f"Revocation → listed in /crl, {label}",
                         f"{n:,} revoked entries ({size / 1e6:.1f} MB CRL), {count} revocations {gap} s apart",
                         f"start → first CRL served {first:.1f} s", f"{pct(times, 50):.0f}", f"{pct(times, 99):.0f}",
                         [{"ms": t} for t in times]))
            log(f"crl-latency ({label}): p50 {pct(times, 50):.0f} ms, p99 {pct(times, 99):.0f} ms, max {max(times):.0f} ms; "
                f"in order: {', '.join(f'{t:.0f}' for t in times)}")
            if other is not None:
                stop(other)
            ca.stop()
        finally:
            if db_name:
                run(["psql", pg_admin, "-qc", f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"], check=False)


# ---------------------------------------------------------------- 6. footprint

def bench_footprint(ca, crl_ca, args, rows):
    ready = []
    for _ in range(max(args.runs, 3)):
        ca.stop()
        ready.append({"seconds": ca.start()})
    time.sleep(1)
    idle = rss_mb(ca.server.pid)
    rows.append(("Server start → /readyz 200", "SQLite, key unlock (scrypt) included", fmt(ready, "seconds", 3) + " s", "–", "–", ready))
    rows.append(("Server idle RSS", "after start", f"{idle:.1f} MB", "–", "–", []))
    if crl_ca is not None:
        crl_ca.start()
        time.sleep(1)
        big = rss_mb(crl_ca.server.pid)
        con = sqlite3.connect(os.path.join(crl_ca.dir, "ca.db"))
        count = con.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
        con.close()
        rows.append(("Server RSS with a large store", f"{count:,} certificate records (CRL loaded)", f"{big:.1f} MB", "–", "–", []))
        crl_ca.stop()


# ---------------------------------------------------------------- main

def table(rows):
    out = ["| what | case | throughput / time | p50 ms (or peak RSS) | p99 ms | ratio (ours ÷ peer) |",
           "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ratio = ""
        if len(row) >= 7 and row[6] is not None:
            ratio = row[7] if len(row) >= 8 else (f"{row[6]:.2f}×" if row[6] < 10 else f"{row[6]:.1f}×")
        out.append(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]} | {ratio} |")
    return "\n".join(out)


def versions():
    v = {"openssl": run(["openssl", "version"]).stdout.strip()}
    for tool, cmd in [("wrk", ["wrk", "-v"]), ("nginx", ["nginx", "-v"]), ("cfssl", ["cfssl", "version"])]:
        if have(tool):
            r = run(cmd, check=False)
            v[tool] = (r.stdout + r.stderr).strip().splitlines()[0]
    v["cpu"] = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    v["cores"] = os.cpu_count()
    return v


def main():
    global WORK, BIN_CLI, BIN_SERVER, BIN_LOADGEN
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run of every part (CI), no peers but OpenSSL")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement (median reported)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--only", default="", help="comma list: pkcs12,issuance,pickup,signers,csr,ocsp,tls,crl,latency,crl-latency,footprint")
    parser.add_argument("--json", help="also write raw results here")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.duration = 1, 1
    parts = set(args.only.split(",")) if args.only else {"pkcs12", "issuance", "pickup", "signers", "csr", "ocsp", "tls", "crl", "latency", "crl-latency", "footprint"}
    if not have("wrk"):
        raise SystemExit("wrk is required (apt-get install wrk)")
    profile = "release"
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    BIN_CLI = os.path.join(target, profile, "ca-cli")
    BIN_SERVER = os.path.join(target, profile, "ca-server")
    BIN_LOADGEN = os.path.join(target, profile, "ca-loadgen")
    log("building release binaries")
    run(["cargo", "build", "--release", "-q", "-p", "ca-cli", "-p", "ca-server", "-p", "ca-loadgen"], cwd=ROOT)
    WORK = tempfile.mkdtemp(prefix="ca-bench-")
    rows = []
    crl_ca = None
    try:
        ca = Ca(WORK)
        ca.start()
        if "pkcs12" in parts:
            bench_pkcs12_step(args, rows)
        if "issuance" in parts:
            bench_issuance(ca, args, rows)
            bench_openssl_pipeline(args, rows, rows, ca.server.pid)
        if "pickup" in parts:
            bench_pickup(ca, args, rows)
        settle(ca.server.pid)
        if "csr" in parts:
            if args.smoke:
                csr = make_csr(WORK)
                body = os.path.join(WORK, "csr.json")
                json.dump({"policy": "automation-csr", "csr": csr}, open(body, "w"))
                r = [wrk(ca.url, "/v1/tenants/bench/admins/r{n}/csr", 1, 4, body, env_extra={"BENCH_TOKEN": ca.token})]
                rows.append(("CSR signing via API, durable", "c4", fmt(r, "rps"), fmt(r, "p50_ms", 1), fmt(r, "p99_ms", 1), r))
            else:
                bench_csr(ca, args, rows)
        plain = None
        if "ocsp" in parts:
            plain = bench_ocsp(ca, args, rows)
            if not args.smoke:
                bench_openssl_ocsp(args, rows)
                size = len(ocsp_status(ca.url, open(plain, "rb").read()))
                bench_nginx_static(args, rows, size)
        if "tls" in parts:
            if plain is None:
                plain = bench_ocsp(ca, argparse.Namespace(**dict(vars(args), runs=1, duration=1)), [])
            bench_tls(ca, args, rows, plain)
        if "latency" in parts:
            bench_revocation_latency(ca, args, rows)
        if "crl-latency" in parts:
            bench_crl_latency(args, rows)
        if "signers" in parts:
            bench_signers(args, rows)
        if "crl" in parts:
            crl_ca = bench_crl(args, rows)
        if "footprint" in parts:
            bench_footprint(ca, crl_ca, args, rows)
        ca.stop()
    finally:
        stop_all()
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"\nMachine: {versions()}\nCommand: python3 benches/bench.py {' '.join(sys.argv[1:])}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([list(r[:5]) + [r[5]] for r in rows], f, indent=1, default=str)
    if args.smoke:
        # The plain closing line CI reads: every part produced a measurement.
        print(f"\nsmoke: {len(rows)} passed, 0 failed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
