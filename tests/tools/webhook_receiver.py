"""A Standard Webhooks receiver for Herald's tests (tests/process/webhooks_out.rs).

Every request is verified with the official library (PyPI `standardwebhooks`, installed by
./scripts/test into target/tools/standardwebhooks), not with Herald's own code. Each request
becomes one JSON line in the record file: {"id", "verified", "body", "status"}; verified
requests get 2xx, except the first `--fail-first` ones, which get 500.

    python webhook_receiver.py --port P --secret whsec_... --record FILE [--fail-first N]
                               [--delay-ms MS] [--secret whsec_...]

With two --secret the request must verify with each of them (both keys sign during a
rotation). The process prints "ready" once it listens.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", action="append", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()

    hooks = [Webhook(s) for s in args.secret]
    lock = threading.Lock()
    state = {"seen": 0}
    record = open(args.record, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self.answer(413)
                return
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            verified = True
            for hook in hooks:
                try:
                    hook.verify(body, headers)
                except WebhookVerificationError:
                    verified = False
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000)
            with lock:
                state["seen"] += 1
                failing = state["seen"] <= args.fail_first
                status = 401 if not verified else (500 if failing else 204)
                record.write(
                    json.dumps(
                        {
                            "id": self.headers.get("webhook-id"),
                            "verified": verified,
                            "status": status,
                            "body": body.decode("utf-8", "replace"),
                        }
                    )
                    + "\n"
                )
                record.flush()
            self.answer(status)

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
