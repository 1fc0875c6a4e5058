#!/usr/bin/env python3
"""Soak: bounded mixed load against one ca-server, watching for leaks and drift.

    python3 tests/chaos/soak.py --minutes 10              # the campaign
    python3 tests/chaos/soak.py --seconds 30 --build debug  # the short version CI runs

Operators reissue and revoke through the API at a steady rate (--rate), gateways ask OCSP
(pre-signed and with a nonce) about the most recent certificates
and fetch the CRL (plain and conditional) for the whole run. The certificates come from a
soak-only policy, `soak-admin` (2-minute validity), that the harness writes into its own
data directory (it is not shipped): revoked certificates expire and fall off the CRL, so
the CRL reaches a steady size after about two minutes instead of growing for the whole
run, as a real CA's does once its oldest revocations expire. The CRL's size is read from
the server's `ca_crl_bytes` gauge at every sample. Every 5 s the harness samples
the server's RSS, open files and threads, and the window's p99 latency. It passes when there
were no errors, RSS grew less than 10% after the warm-up (the first fifth of the run), open
files (give or take one socket per client) did not grow, threads grew by at most 2 (tokio's blocking pool starts and retires threads
on demand), and the last window's p99 is within 3x (+50 ms) of the first
after warm-up. Loopback only; bounded in time; the server is stopped by PID.
"""

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos import Ca, api, binaries, fetch, log  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
import hashlib  # noqa: E402


# Like portal-admin, but certificates live two minutes: see the module text.
SOAK_POLICY = """\
name = "soak-admin"
description = "Soak test only: short-lived administrator certificates"
key = "ecdsa-p256"
validity = "2m"
subject.common_name = "{admin}"
subject.organizational_unit = "{tenant}"
extended_key_usage = ["client-auth"]
max_active_per_admin = 1
pkcs12.profile = "modern"
pkcs12.password_length = 20
"""


def crl_bytes(ca):
    """The active issuer's CRL size from /metrics (ca_crl_bytes), or 0 before the first."""
    text = fetch(ca.base + "/metrics").decode()
    sizes = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ca_crl_bytes{")]
    return max(sizes, default=0)


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    rss_kb = int(status["VmRSS"].split()[0])
    threads = int(status["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb, fds, threads


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.errors = []
        self.counts = {}

    def record(self, kind, seconds, ok, what=""):
        with self.lock:
            self.latencies.append(seconds)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if not ok:
                self.errors.append(f"{kind}: {what}")

    def window(self):
        with self.lock:
            values, self.latencies = self.latencies, []
        values.sort()
        return (values[int(len(values) * 0.99) - 1] if values else 0.0), len(values)


def ocsp_request(ca, serial, nonce):
    name_hash = hashlib.sha1(ca.ca_cert.subject.public_bytes()).digest()
    key_bits = ca.ca_cert.public_key().public_bytes(serialization.Encoding.X962,
                                                     serialization.PublicFormat.UncompressedPoint)
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, hashlib.sha1(key_bits).digest(), int(serial, 16), hashes.SHA1())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def operator(ca, rec, stop, tid, serials, rate):
    rng = random.Random(tid)
    n = 0
    while not stop.is_set():
        # A steady rate: a soak looks for drift at a constant load, not for
        # how the CRL grows when revocations pile up as fast as they can.
        time.sleep(1.0 / rate)
        n += 1
        admin = f"s{tid}-{n % 50}"
        started = time.time()
        status, v = api(ca, "POST", f"/v1/tenants/soak/admins/{admin}/reissue",
                        {"policy": "soak-admin", "reason": "superseded"})
        ok = status == 201
        rec.record("reissue", time.time() - started, ok, f"{status} {v}")
        if ok:
            serials.append(v["serial"])
            if rng.random() < 0.2:
                started = time.time()
                status, v = api(ca, "POST", f"/v1/certificates/{v['serial']}/revoke", {})
                rec.record("revoke", time.time() - started, status == 200, f"{status} {v}")


def gateway(ca, rec, stop, tid, serials):
    rng = random.Random(1000 + tid)
    etag = None
    while not stop.is_set():
        if not serials:
            time.sleep(0.05)
            continue
        # The most recent certificates (the last 500 issued, all within
        # their two minutes), as a gateway's logged-in admins would be.
        serial = rng.choice(serials[-500:])
        nonce = rng.random() < 0.3
        started = time.time()
        try:
            body = fetch(ca.base + "/ocsp", data=ocsp_request(ca, serial, nonce),
                         headers={"Content-Type": "application/ocsp-request"})
            ok = ocsp.load_der_ocsp_response(body).response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            rec.record("ocsp_nonce" if nonce else "ocsp", time.time() - started, ok, "not successful")
        except Exception as e:  # any failure is an error of the soak
            rec.record("ocsp", time.time() - started, False, repr(e))
        if rng.random() < 0.1:
            started = time.time()
            req = urllib.request.Request(ca.base + "/crl", headers={"If-None-Match": etag} if etag else {})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
                    etag = r.headers.get("ETag")
                rec.record("crl", time.time() - started, True)
            except urllib.error.HTTPError as e:
                rec.record("crl", time.time() - started, e.code == 304, f"HTTP {e.code}")
            except Exception as e:
                rec.record("crl", time.time() - started, False, repr(e))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seconds", type=float, help="overrides --minutes")
    parser.add_argument("--operators", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10, help="reissues per second per operator")
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--build", default="release", choices=["release", "debug"])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--pg-url", default=os.environ.get("CA_TEST_POSTGRES_URL",
                                                           "postgres://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--json", help="write the samples here")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds else args.minutes * 60
    ca = Ca(binaries(args.build), args.backend, args.pg_url)
    rec = Recorder()
    stop = threading.Event()
    serials = []
    samples = []
    try:
        with open(os.path.join(ca.data, "policies", "soak-admin.toml"), "w") as f:
            f.write(SOAK_POLICY)
        ca.start()
        threads = [threading.Thread(target=operator, args=(ca, rec, stop, t, serials, args.rate), daemon=True)
                   for t in range(args.operators)]
        threads += [threading.Thread(target=gateway, args=(ca, rec, stop, t, serials), daemon=True)
                    for t in range(args.gateways)]
        for t in threads:
            t.start()
        started = time.time()
        interval = min(5.0, seconds / 6)
        while time.time() - started < seconds:
            time.sleep(interval)
            rss, fds, tasks = proc_stats(ca.server.pid)
            p99, n = rec.window()
            samples.append({"t": round(time.time() - started, 1), "rss_mb": round(rss / 1024, 1), "fds": fds,
                            "threads": tasks, "p99_ms": round(p99 * 1000, 1), "requests": n,
                            "crl_kb": round(crl_bytes(ca) / 1024, 1)})
            log(json.dumps(samples[-1]))
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        ca.cleanup(keep=False)

    clients = args.operators + args.gateways
    warm = max(1, len(samples) // 5)
    base, last = samples[warm], samples[-1]
    checks = [
        (not rec.errors, f"errors: {len(rec.errors)} {rec.errors[:3]}"),
        (last["rss_mb"] < base["rss_mb"] * 1.10, f"RSS {base['rss_mb']} -> {last['rss_mb']} MB after warm-up"),
        # One socket per client may be open at a sampling instant, or not.
        (last["fds"] <= base["fds"] + clients, f"open files {base['fds']} -> {last['fds']} (±{clients} client sockets)"),
        (last["threads"] <= base["threads"] + 2, f"threads {base['threads']} -> {last['threads']}"),
        (last["p99_ms"] <= 3 * base["p99_ms"] + 50, f"p99 {base['p99_ms']} -> {last['p99_ms']} ms"),
    ]
    if seconds >= 300:
        # Past the certificates' two minutes the CRL only trades old entries for new.
        checks.append((last["crl_kb"] <= base["crl_kb"] * 1.25,
                       f"CRL {base['crl_kb']} -> {last['crl_kb']} KiB after warm-up (steady size)"))
    for ok, what in checks:
        log(("ok: " if ok else "FAILED: ") + what)
    summary = {"seconds": round(seconds), "counts": rec.counts, "errors": len(rec.errors),
               "after_warmup": base, "end": last}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "samples": samples}, f, indent=2)
    print(json.dumps(summary))
    failed = sum(1 for ok, _ in checks if not ok)
    print(f"soak: {len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
