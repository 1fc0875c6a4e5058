#!/usr/bin/python3
"""A real SMTP server for the pickup tests (Debian's python3-aiosmtpd):
accepts every message on 127.0.0.1:PORT and writes each, as received, to a
file in DIR (`<n>.eml`). Prints "ready" once listening; runs until killed.

    smtp_sink.py PORT DIR
"""

import os
import sys
import threading

from aiosmtpd.controller import Controller

PORT, DIR = int(sys.argv[1]), sys.argv[2]


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


controller = Controller(Sink(), hostname="127.0.0.1", port=PORT)
controller.start()
print("ready", flush=True)
threading.Event().wait()
