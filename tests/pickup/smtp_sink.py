#!/usr/bin/python3
"""A real SMTP server for the pickup tests (Debian's python3-aiosmtpd):
accepts every message on 127.0.0.1:PORT and writes each, as received, to a
file in DIR (`<n>.eml`). Prints "ready" once listening; runs until killed.
With `starttls CERT KEY` it offers STARTTLS and refuses mail before it; with
`smtps CERT KEY` it speaks TLS from the first byte (implicit TLS).

    smtp_sink.py PORT DIR [starttls|smtps CERT KEY]
"""

import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller

PORT, DIR = int(sys.argv[1]), sys.argv[2]
MODE = sys.argv[3] if len(sys.argv) > 3 else "plain"


class Sink:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        path = os.path.join(DIR, f"{n}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK"



def tls_context():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    return context


if MODE == "plain":
    controller = Controller(Sink(), hostname="127.0.0.1", port=PORT)
elif MODE == "starttls":
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=PORT,
        tls_context=tls_context(), require_starttls=True,
    )
elif MODE == "smtps":
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=PORT, ssl_context=tls_context()
    )
else:
    sys.exit(f"unknown mode {MODE!r}: use starttls or smtps")
controller.start()
print("ready", flush=True)
threading.Event().wait()
