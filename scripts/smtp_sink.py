#!/usr/bin/env python3
"""A real SMTP server for latchkey's tests (aiosmtpd), keeping every message it receives.

    python3 scripts/smtp_sink.py --dir DIR [--port N] [--fail-first K]

Prints `listening 127.0.0.1:PORT` on its first line of stdout once it accepts connections
(port 0, the default, picks a free one). Each message is written to DIR as
`<sequence>.eml` (the raw RFC 5322 bytes, with `X-Envelope-From` and `X-Envelope-To`
headers added first) and `<sequence>.json` (`envelope_from`, `envelope_to`, and the message
as Python's `email` package decodes it: `from`, `to`, `subject`, `text`, `html`, `headers`),
atomically: written under a temporary name, then renamed (the `.json` last).
`--fail-first K` answers the first K messages with a temporary failure (451) to test
retries. Runs until killed.
"""
import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory, fail_first):
        self.directory = directory
        self.fail_left = fail_first
        self.seq = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        if self.fail_left > 0:
            self.fail_left -= 1
            return "451 4.3.0 try again later (smtp_sink --fail-first)"
        n = next(self.seq)
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        self.write(f"{n:06d}.eml", head + data)
        msg = email.message_from_bytes(data, policy=email.policy.default)

        def part(kind):
            p = msg.get_body(preferencelist=(kind,))
            return p.get_content() if p is not None else None

        parsed = {
            "envelope_from": envelope.mail_from,
            "envelope_to": list(envelope.rcpt_tos),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "text": part("plain"),
            "html": part("html"),
            "headers": [[k, str(v)] for k, v in msg.items()],
        }
        self.write(f"{n:06d}.json", json.dumps(parsed).encode())
        return "250 OK"

    def write(self, name, data):
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.directory, name))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fail-first", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    if a.port == 0:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        a.port = s.getsockname()[1]
        s.close()
    c = Controller(Sink(a.dir, a.fail_first), hostname="127.0.0.1", port=a.port)
    c.start()
    print(f"listening 127.0.0.1:{a.port}", flush=True)
    try:
        asyncio.new_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
