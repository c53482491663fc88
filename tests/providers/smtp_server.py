"""A real SMTP server (aiosmtpd) for Herald's provider tests, on loopback.

    python smtp_server.py PORT EVENTS_FILE

Recipients whose local part starts with `tempfail` get `451 4.3.0` at RCPT, those starting
with `reject` get `550 5.1.1`; everyone else is accepted. Every RCPT and every accepted
message is appended to EVENTS_FILE as one JSON object per line:

    {"event": "rcpt", "to": "...", "code": 250|451|550}
    {"event": "data", "mail_from": "...", "rcpt_tos": [...], "headers": {lower-case name: [values]},
     "body": "..."}

Prints `listening on 127.0.0.1:PORT` once it accepts connections; runs until killed.
"""

import email
import email.policy
import json
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def write(self, record):
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("tempfail"):
            code, reply = 451, "451 4.3.0 Mailbox temporarily unavailable, try again later"
        elif local.startswith("reject"):
            code, reply = 550, "550 5.1.1 No such user here"
        else:
            code, reply = 250, "250 OK"
            envelope.rcpt_tos.append(address)
        self.write({"event": "rcpt", "to": address, "code": code})
        return reply

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        headers = {}
        for name, value in message.items():
            headers.setdefault(name.lower(), []).append(str(value))
        body = message.get_body(preferencelist=("plain",))
        self.write(
            {
                "event": "data",
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "headers": headers,
                "body": body.get_content() if body is not None else "",
            }
        )
        return "250 2.0.0 Message accepted for delivery"


def main():
    port = int(sys.argv[1])
    handler = Handler(sys.argv[2])
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
