#!/usr/bin/env python3
"""Crash at any instant: kill -9 the CA under mixed load and prove nothing acknowledged is lost.

    python3 tests/chaos/chaos.py                         # 200 kills per backend (SQLite, PostgreSQL)
    python3 tests/chaos/chaos.py --kills 20 --build debug  # the short version CI runs

Several client threads issue, reissue, revoke and sign CSRs through the HTTP API and record
every acknowledged answer. The harness kills `ca-server` with SIGKILL at random instants and
restarts it; in every other cycle it also starts a `ca-cli revoke`, `ca-cli crl` or
`ca-cli issue --out` and kills that at a random instant. After every restart and at the end
it checks (DESIGN §3):

- every acknowledged certificate exists, with the acknowledged status;
- every acknowledged revocation is in the CRL served after the restart and OCSP says revoked;
- at most one active certificate per (tenant, admin, policy);
- CRL numbers never go backwards, and grow when revocations were added;
- `ca-cli audit verify` passes (every 10th cycle and at the end);
- no `--out` bundle of a killed `ca-cli issue` is half-written.

Loopback only; every loop is bounded in count and time; every process is stopped by PID.
PostgreSQL: `CA_TEST_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432/test); each run
creates and drops its own database. Exit status 0 when every check held; the last line is
`N passed, N failed` (checks).
"""

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSPHRASE = "chaos passphrase, not secret"
PROCS = []


def log(msg):
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failures:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            log(f"FAILED: {what}")


# ------------------------------------------------------------------ the CA under test


class Ca:
    def __init__(self, bins, backend, pg_url):
        self.bins = bins
        self.backend = backend
        self.dir = tempfile.mkdtemp(prefix="ca-chaos-")
        self.data = os.path.join(self.dir, "ca-data")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, CA_KEY_PASSPHRASE=PASSPHRASE, CA_DATA_DIR=self.data,
                        CA_LISTEN=f"127.0.0.1:{self.port}", CA_LOG="warn")
        for k in ("CA_CONFIG", "CA_DATABASE_URL"):
            self.env.pop(k, None)
        self.pg_admin = None
        if backend == "postgres":
            name = f"chaos_{os.getpid()}_{random.randrange(1 << 30)}"
            self.pg_admin = pg_url
            psql(pg_url, f"CREATE DATABASE {name}")
            self.pg_name = name
            self.env["CA_DATABASE_URL"] = pg_url.rsplit("/", 1)[0] + "/" + name
        self.cli("init", "--subject", "CN=Chaos CA,O=Example", "--base-url", self.base)
        self.token = json.loads(self.cli("--json", "token", "create", "--role", "operator", "--name", "chaos"))["token"]
        self.ca_cert = x509.load_pem_x509_certificate(open(os.path.join(self.data, "ca.pem"), "rb").read())
        self.server = None

    def cli(self, *args, check=True):
        res = subprocess.run([self.bins["ca-cli"], *args], env=self.env, capture_output=True, text=True,
                             timeout=120)
        if check and res.returncode != 0:
            raise SystemExit(f"ca-cli {' '.join(args)} failed: {res.stderr}")
        return res.stdout

    def start(self):
        log_file = open(os.path.join(self.dir, "server.log"), "ab")
        self.server = subprocess.Popen([self.bins["ca-server"]], env=self.env, stdout=log_file,
                                       stderr=log_file)
        PROCS.append(self.server)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.server.poll() is not None:
                raise SystemExit(f"ca-server exited with {self.server.returncode}; see {self.dir}/server.log")
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception:
                time.sleep(0.02)
        raise SystemExit("ca-server did not become ready")

    def kill(self):
        os.kill(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def stop(self):
        if self.server and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def rows(self):
        """serial -> (tenant, admin, policy, state, not_after) straight from the store."""
        sql = "SELECT serial, tenant, admin, policy, state, not_after FROM certificates"
        if self.backend == "sqlite":
            db = sqlite3.connect(f"file:{os.path.join(self.data, 'ca.db')}?mode=ro", uri=True, timeout=30)
            try:
                return {r[0]: r[1:] for r in db.execute(sql)}
            finally:
                db.close()
        out = psql(self.env["CA_DATABASE_URL"], sql, fields=True)
        rows = {}
        for line in out.splitlines():
            serial, tenant, admin, policy, state, not_after = line.split("|")
            rows[serial] = (tenant, admin, policy, int(state), int(not_after))
        return rows

    def cleanup(self, keep):
        self.stop()
        if self.pg_admin:
            psql(self.pg_admin, f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def psql(url, sql, fields=False):
    args = ["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql]
    if fields:
        args[4:4] = ["-F", "|"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise SystemExit(f"psql failed: {res.stderr}")
    return res.stdout


# ------------------------------------------------------------------ what clients saw acknowledged


class Ledger:
    """Acknowledged answers. `uncertain` admins had an answer lost (connection cut):
    their certificates may have changed without us knowing, so only existence is checked."""

    def __init__(self):
        self.lock = threading.Lock()
        self.issued = {}  # serial -> (tenant, admin, policy)
        self.revoked = set()
        self.uncertain = set()  # (tenant, admin)
        self.counts = {"issue": 0, "reissue": 0, "revoke": 0, "csr": 0, "lost": 0, "cli_revoke": 0,
                       "cli_crl": 0, "cli_issue": 0}

    def ack_issue(self, serial, who, policy, op):
        with self.lock:
            self.issued[serial] = (*who, policy)
            self.counts[op] += 1

    def ack_revoke(self, serials, op):
        with self.lock:
            self.revoked.update(serials)
            self.counts[op] += 1

    def lost(self, who):
        with self.lock:
            self.uncertain.add(who)
            self.counts["lost"] += 1

    def snapshot(self):
        with self.lock:
            return dict(self.issued), set(self.revoked), set(self.uncertain)


def api(ca, method, path, body=None, timeout=20):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(ca.base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {ca.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def client(ca, ledger, tid, stop, csrs, rng):
    """One operator: its own admins, a random walk of issue/reissue/revoke/CSR."""
    active = {}  # (tenant, admin, policy) -> serial
    admins = [("chaos", f"c{tid}-{k}") for k in range(6)]
    while not stop.is_set():
        tenant, admin = rng.choice(admins)
        csr = rng.random() < 0.2
        policy = "automation-csr" if csr else "portal-admin"
        key = (tenant, admin, policy)
        try:
            if key not in active:
                if csr:
                    status, v = api(ca, "POST", f"/v1/tenants/{tenant}/admins/{admin}/csr",
                                    {"policy": policy, "csr": rng.choice(csrs)})
                else:
                    status, v = api(ca, "POST", f"/v1/tenants/{tenant}/admins/{admin}/certificates",
                                    {"policy": policy})
                if status == 201:
                    active[key] = v["serial"]
                    ledger.ack_issue(v["serial"], (tenant, admin), policy, "csr" if csr else "issue")
                elif status == 409:
                    # An earlier answer was lost after its commit: find what is active.
                    status, v = api(ca, "GET", f"/v1/certificates?tenant={tenant}&admin={admin}&policy={policy}&status=active")
                    if status == 200 and v["items"]:
                        active[key] = v["items"][0]["serial"]
            elif csr or rng.random() < 0.35:
                serial = active[key]
                status, v = api(ca, "POST", f"/v1/certificates/{serial}/revoke", {"reason": "key-compromise"})
                if status == 200:
                    ledger.ack_revoke([serial], "revoke")
                if status in (200, 409):
                    del active[key]
            else:
                status, v = api(ca, "POST", f"/v1/tenants/{tenant}/admins/{admin}/reissue",
                                {"policy": policy, "reason": "key-compromise"})
                if status == 201:
                    ledger.ack_revoke(v["revoked"], "reissue")
                    ledger.ack_issue(v["serial"], (tenant, admin), policy, "reissue")
                    active[key] = v["serial"]
                elif status == 404:
                    del active[key]
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                time.sleep(0.02)  # the server is down: nothing was sent
                continue
            ledger.lost((tenant, admin))
            active.pop(key, None)
            time.sleep(0.05)
        except (ConnectionError, TimeoutError, OSError, json.JSONDecodeError):
            ledger.lost((tenant, admin))
            active.pop(key, None)
            time.sleep(0.05)


# ------------------------------------------------------------------ checks


def fetch(url, data=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def served_crl(ca):
    crl = x509.load_der_x509_crl(fetch(ca.base + "/crl"))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return number, {format(r.serial_number, "032x") for r in crl}


def ocsp_status(ca, serial):
    builder = ocsp.OCSPRequestBuilder()
    name_hash = hashlib.sha1(ca.ca_cert.subject.public_bytes()).digest()
    key_bits = ca.ca_cert.public_key().public_bytes(serialization.Encoding.X962,
                                                     serialization.PublicFormat.UncompressedPoint)
    key_hash = hashlib.sha1(key_bits).digest()
    builder = builder.add_certificate_by_hash(name_hash, key_hash, int(serial, 16), hashes.SHA1())
    der = builder.build().public_bytes(serialization.Encoding.DER)
    body = fetch(ca.base + "/ocsp", data=der, headers={"Content-Type": "application/ocsp-request"})
    response = ocsp.load_der_ocsp_response(body)
    return response.certificate_status


def check_store(ca, ledger, f, label, full=False, revoked_before=None):
    """`revoked_before`: the revocations acknowledged before the restart. Those
    acknowledged since may still be inside the CRL's debounce (<= 1 s)."""
    issued, revoked, uncertain = ledger.snapshot()
    rows = ca.rows()
    missing = [s for s in issued if s not in rows]
    f.check(not missing, f"{label}: acknowledged certificates missing from the store: {missing[:5]}")
    not_revoked = [s for s in revoked if s in rows and rows[s][3] != 1]
    f.check(not not_revoked, f"{label}: acknowledged revocations not revoked in the store: {not_revoked[:5]}")
    if full:
        # Certificates of admins whose every answer arrived must have exactly the acknowledged status.
        wrong = [s for s, (t, a, _p) in issued.items()
                 if (t, a) not in uncertain and s not in revoked and s in rows and rows[s][3] != 0]
        f.check(not wrong, f"{label}: acknowledged active certificates not active: {wrong[:5]}")
    now = int(time.time())
    seen = {}
    for serial, (tenant, admin, policy, state, not_after) in rows.items():
        if state == 0 and not_after > now:
            seen[(tenant, admin, policy)] = seen.get((tenant, admin, policy), 0) + 1
    doubles = [k for k, n in seen.items() if n > 1]
    f.check(not doubles, f"{label}: more than one active certificate for {doubles[:3]}")
    return revoked if revoked_before is None else revoked_before


def check_crl_and_ocsp(ca, revoked, f, label, last_number, sample):
    number, listed = served_crl(ca)
    f.check(number >= last_number, f"{label}: CRL number went back from {last_number} to {number}")
    unlisted = [s for s in revoked if s not in listed]
    f.check(not unlisted, f"{label}: acknowledged revocations missing from CRL {number}: {unlisted[:5]}")
    for serial in random.sample(sorted(revoked), min(sample, len(revoked))):
        status = ocsp_status(ca, serial)
        f.check(status == ocsp.OCSPCertStatus.REVOKED, f"{label}: OCSP says {status} for revoked {serial}")
    return number


def audit_verify(ca, f, label):
    res = subprocess.run([ca.bins["ca-cli"], "--json", "audit", "verify"], env=ca.env, capture_output=True,
                         text=True, timeout=300)
    f.check(res.returncode == 0, f"{label}: audit verify failed: {res.stdout}{res.stderr}")


# ------------------------------------------------------------------ ca-cli killed in flight


def cli_in_flight(ca, ledger, f, rng, label, cycle):
    """Starts one ca-cli command and SIGKILLs it at a random instant."""
    kind = rng.choice(["revoke", "crl", "issue"])
    out = None
    if kind == "revoke":
        issued, revoked, _ = ledger.snapshot()
        candidates = sorted(set(issued) - revoked)
        if not candidates:
            return
        serial = rng.choice(candidates)
        args = ["--json", "revoke", serial, "--reason", "superseded"]
    elif kind == "crl":
        args = ["--json", "crl"]
    else:
        out = os.path.join(ca.dir, f"bundle-{cycle}.p12")
        args = ["--json", "issue", "--tenant", "chaos-cli", "--admin", f"a{cycle}", "--out", out]
    proc = subprocess.Popen([ca.bins["ca-cli"], *args], env=ca.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    PROCS.append(proc)
    try:
        stdout, stderr = proc.communicate(timeout=rng.uniform(0.0, 2.5))
        finished = proc.returncode == 0
        if not finished:
            # It ran to its end and refused: a refusal must say why, and change nothing.
            f.check(bool(stderr.strip()), f"{label}: ca-cli {kind} failed without a message")
            log(f"{label}: ca-cli {kind} refused: {stderr.strip()[:200]}")
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, _ = proc.communicate()
        finished = False
    if kind == "revoke" and finished:
        ledger.ack_revoke([serial], "cli_revoke")
    elif kind == "revoke":
        # Killed: the revocation may or may not have committed.
        issued, _, _ = ledger.snapshot()
        ledger.lost(issued[serial][:2])
    elif finished and kind == "crl":
        with ledger.lock:
            ledger.counts["cli_crl"] += 1
    elif kind == "issue":
        if finished:
            v = json.loads(stdout)
            ledger.ack_issue(v["serial"], ("chaos-cli", f"a{cycle}"), "portal-admin", "cli_issue")
            ok = subprocess.run(["openssl", "pkcs12", "-in", out, "-noout", "-passin", f"pass:{v['password']}"],
                                capture_output=True).returncode == 0
            f.check(ok, f"{label}: acknowledged bundle {out} does not open")
        elif os.path.exists(out):
            # Killed after the rename: the file must be whole (a complete PKCS#12 DER).
            ok = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", out],
                                capture_output=True).returncode == 0
            f.check(ok, f"{label}: half-written bundle {out}")


# ------------------------------------------------------------------ one backend


def campaign(bins, backend, kills, args, f):
    log(f"{backend}: {kills} kills")
    ca = Ca(bins, backend, args.pg_url)
    rng = random.Random(args.seed)
    csrs = []
    for i in range(3):
        key = os.path.join(ca.dir, f"csr{i}.key")
        out = subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                              "-nodes", "-keyout", key, "-subj", f"/CN=robot{i}"], capture_output=True, text=True)
        csrs.append(out.stdout)
    ledger = Ledger()
    started = time.time()
    last_number = 0
    stop = threading.Event()
    try:
        ca.start()
        threads = [threading.Thread(target=client, args=(ca, ledger, t, stop, csrs, random.Random(args.seed + t)),
                                    daemon=True) for t in range(args.clients)]
        for t in threads:
            t.start()
        for cycle in range(1, kills + 1):
            if time.time() - started > args.max_minutes * 60:
                f.check(False, f"{backend}: time limit reached after {cycle - 1} kills")
                break
            time.sleep(rng.uniform(0.1, args.max_interval))
            ca.kill()
            label = f"{backend} kill {cycle}"
            if cycle % 2 == 0:
                cli_in_flight(ca, ledger, f, rng, label, cycle)
            # Everything acknowledged so far must be in the CRL the restarted
            # server serves; what is acknowledged after it starts, in a later one.
            _, revoked_before, _ = ledger.snapshot()
            ca.start()
            revoked = check_store(ca, ledger, f, label, revoked_before=revoked_before)
            last_number = check_crl_and_ocsp(ca, revoked, f, label, last_number, sample=5)
            if cycle % 10 == 0:
                audit_verify(ca, f, label)
                log(f"{label}: {ledger.counts}")
        stop.set()
        for t in threads:
            t.join(timeout=30)
        label = f"{backend} final"
        revoked = check_store(ca, ledger, f, label, full=True)
        # The last revocations may still be inside the CRL's 1 s debounce.
        time.sleep(1.5)
        check_crl_and_ocsp(ca, revoked, f, label, last_number, sample=len(revoked))
        audit_verify(ca, f, label)
        # A killed `issue` may leave its staging file (`<out>.tmp-<pid>`, encrypted, never
        # under the --out name); counted, not failed.
        ledger.counts["staging_left"] = len([n for n in os.listdir(ca.dir) if ".p12.tmp-" in n])
    finally:
        stop.set()
        ca.cleanup(args.keep)
    seconds = time.time() - started
    log(f"{backend}: done in {seconds:.0f} s; acknowledged {ledger.counts}")
    return {"backend": backend, "kills": kills, "seconds": round(seconds), **ledger.counts,
            "certificates": len(ledger.issued), "revocations": len(ledger.revoked)}


def binaries(build, compile=True):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    profile = "release" if build == "release" else "debug"
    cmd = ["cargo", "build", "-q", "-p", "ca-server", "-p", "ca-cli"] + (["--release"] if profile == "release" else [])
    if compile:
        subprocess.run(cmd, cwd=ROOT, check=True)
    return {name: os.path.join(target, profile, name) for name in ("ca-server", "ca-cli")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200, help="server kills per backend")
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-interval", type=float, default=1.2, help="longest load between two kills (s)")
    parser.add_argument("--max-minutes", type=float, default=40, help="bound per backend")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--build", default="release", choices=["release", "debug"])
    parser.add_argument("--no-compile", action="store_true", help="use the binaries already built")
    parser.add_argument("--pg-url", default=os.environ.get("CA_TEST_POSTGRES_URL",
                                                           "postgres://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()
    log(f"seed {args.seed}")
    bins = binaries(args.build, compile=not args.no_compile)
    f = Failures()
    results = []
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    try:
        for backend in backends:
            results.append(campaign(bins, backend, args.kills, args, f))
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"seed": args.seed, "results": results, "checks_passed": f.passed,
                       "checks_failed": f.failed}, out, indent=2)
    print(json.dumps(results))
    print(f"chaos: {f.passed} passed, {len(f.failed)} failed")
    sys.exit(1 if f.failed else 0)


if __name__ == "__main__":
    main()
