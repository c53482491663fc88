"""A real SMTP server (aiosmtpd) for Herald's provider tests, on loopback.

    python smtp_server.py PORT EVENTS_FILE

Recipients whose local part starts with `tempfail` get `451 4.3.0` at RCPT, those starting
with `reject` get `550 5.1.1`; everyone else is accepted. Every RCPT and every accepted
message is appended to EVENTS_FILE as one JSON object per line:

    {"event": "rcpt", "to": "...", "code": 250|451|550}
    {"event": "data", "mail_from": "...", "rcpt_tos": [...], "headers": {lower-case name: [values]},
     "body": "...", "content_type": "multipart/alternative", "parts": [{"content_type": ...,
     "charset": ..., "transfer_encoding": ..., "content": "..."}], "text": "..."|null,
     "html": "..."|null, "subject": "...", "from": [{"display_name": ..., "addr_spec": ...}],
     "reply_to": [...], "herald_id": "..."|null, "message_id": "..."|null,
     "max_line_length": N, "defects": ["..."]}

The message is parsed by Python's own `email` package (policy `email.policy.default`), a MIME
parser independent of Herald's: headers are decoded (RFC 2047), parts decoded from their
transfer encoding and charset, and every defect the parser noticed is listed.

Prints `listening on 127.0.0.1:PORT` once it accepts connections; runs until killed.
"""

import email
import email.policy
import json
import sys
import threading
import time

from aiosmtpd.controller import Controller


def addresses(message, name):
    """The mailboxes of an address header, each its decoded display name and address."""
    header = message[name]
    if header is None:
        return []
    return [
        {"display_name": a.display_name, "addr_spec": a.addr_spec} for a in header.addresses
    ]


def header_text(message, name):
    """One header's decoded value, or None when absent."""
    value = message[name]
    return None if value is None else str(value)


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
        html = message.get_body(preferencelist=("html",))
        leaves = list(message.iter_parts()) if message.is_multipart() else [message]
        parts = [
            {
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "transfer_encoding": part.get("content-transfer-encoding"),
                "content": part.get_content() if not part.is_multipart() else None,
            }
            for part in leaves
        ]
        defects = [
            f"{part.get_content_type()}: {type(d).__name__}"
            for part in message.walk()
            for d in part.defects
        ]
        raw_lines = envelope.content.split(b"\n")
        self.write(
            {
                "event": "data",
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "headers": headers,
                "body": body.get_content() if body is not None else "",
                "content_type": message.get_content_type(),
                "parts": parts,
                "text": body.get_content() if body is not None else None,
                "html": html.get_content() if html is not None else None,
                "subject": str(message["subject"]) if message["subject"] is not None else None,
                "from": addresses(message, "from"),
                "reply_to": addresses(message, "reply-to"),
                "herald_id": header_text(message, "x-pm-metadata-herald_id"),
                "message_id": header_text(message, "message-id"),
                "max_line_length": max(len(line.rstrip(b"\r")) for line in raw_lines),
                "defects": defects,
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
