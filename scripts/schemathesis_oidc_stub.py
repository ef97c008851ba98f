"""A minimal OpenID Provider for scripts/schemathesis.sh: discovery and an empty JWKS, nothing else.

With it, latchkey's Google routes and those of the named provider `corp` (SPEC 13) do their
real work under the fuzzer instead of answering 404 `provider_not_configured`. It is two
issuers on one port, `http://127.0.0.1:PORT` (Google's preset) and `http://127.0.0.1:PORT/corp`
(no two providers may share an issuer): `/google/login` discovers the provider and redirects to its
authorization endpoint (302, state cookie set), and `/google/callback` checks whatever query
the fuzzer sends against the state cookie (302 to `/login?error=…`). No code can ever be
exchanged here: the fuzzer has no state cookie to match. (The full sign-in is tested against
a real OpenID Provider in crates/latchkey/tests/google.rs.)

Usage: python3 schemathesis_oidc_stub.py PORT_FILE — binds 127.0.0.1 on a free port, writes
the port to PORT_FILE, serves until killed.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        prefix = "/corp" if self.path.startswith("/corp/") else ""
        path = self.path[len(prefix):]
        issuer = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}"
        if path == "/.well-known/openid-configuration":
            body = {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        elif path == "/jwks":
            body = {"keys": []}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()
