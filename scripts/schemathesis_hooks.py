"""schemathesis hooks for scripts/schemathesis.sh: how the fuzzer signs in, two links that
need a schemathesis extension, and one extra check.

Loaded through `hooks = ...` in the schemathesis.toml the script writes. Environment (set
by the script): LATCHKEY_URL (the server's origin), LATCHKEY_AUTH (`cookie` or `bearer`: how
the access token is presented to the signed-in operations), LK_ACCESS, LK_REFRESH,
LK_LOGOUT_REFRESH (the cookies of the account the script signed up).

Signing in
----------
Every operation whose OpenAPI `security` names `access_cookie`/`bearer` gets the run's access
token, as the `access_token` cookie or as `Authorization: Bearer` (one pass each). `refresh`
gets the refresh cookie of the same session, and the jar is updated from its answers the way
a browser's is, so rotation keeps working for the whole run. `logout` gets the refresh cookie
of a session of its own (a fresh one after each logout), so each logout ends a real session
but not the one the other operations use.

Some operations end the run's session on purpose: `logout-all`, and `DELETE /sessions/{id}`
when it picks the caller's own session (the `GET /sessions` link offers it). Nothing is
excluded for that: when the server answers 401 `session_revoked` (or a refresh answers 401) to
the run's own credentials, the run signs up a fresh account and goes on with it, as a client
whose session was ended signs in again. A fresh account each time, so that the per-account
failure budget, which the wrong passwords sent to `password/change` and `email/change` use
up, never locks the run out.

Passwords
---------
`password/change` and `email/change` re-check the account's password. Three in four of their
schema-valid requests get the run's real one, so they can succeed (204, 202: the new password
is then the run's) instead of always answering 403 `invalid_credentials`; the rest keep the
generated, wrong one.

Client addresses
----------------
The server runs with TRUSTED_PROXIES=127.0.0.1, and every request carries an
`X-Forwarded-For` address of its own, so the per-IP rate limits (30 sign-ins per IP, then one
per 2 s) do not answer 429 to nearly everything after the first seconds: requests reach the
validation and business logic they are meant to test. The per-account limits still apply.
"""

import base64
import hashlib
import hmac
import itertools
import json
import struct
import time
import os
import random
import threading
import uuid

import requests
import schemathesis

BASE = os.environ["LATCHKEY_URL"].rstrip("/")
MODE = os.environ.get("LATCHKEY_AUTH", "cookie")
assert MODE in ("cookie", "bearer"), MODE

_addresses = itertools.count(1)


def _address() -> str:
    """A client address no other request of the run has used (10.0.0.0/8, in order)."""
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class Credentials:
    """The run's cookie jar. One object for the whole run, updated in place."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.password = os.environ["LK_PASSWORD"]
        self.access = os.environ["LK_ACCESS"]
        self.refresh = os.environ["LK_REFRESH"]
        self.logout_refresh: str | None = os.environ["LK_LOGOUT_REFRESH"]
        self.accounts = 1
        # Every access and refresh token the run has held: a case generated before a renewal
        # still carries an old one, which `before_call` swaps for the current one.
        self.old_access: set = set()
        self.old_refresh: set = set()

    def renew(self, seen_access: str | None, seen_refresh: str | None) -> None:
        """The session the run used was ended: sign up a fresh account (once, however many
        requests noticed it at the same time)."""
        with self.lock:
            if seen_access not in (None, self.access) or seen_refresh not in (None, self.refresh):
                return  # another thread renewed already
            password = f"pw-{uuid.uuid4().hex}"
            signup = _signup(password)
            self.password = password
            self.old_access.add(self.access)
            self.old_refresh.add(self.refresh)
            self.access = _cookie(signup, "access_token")
            self.refresh = _cookie(signup, "refresh_token")
            self.accounts += 1

    def rotated(self, presented: str, successor: str) -> None:
        with self.lock:
            if self.refresh == presented:
                self.old_refresh.add(presented)
                self.refresh = successor

    def take_logout_session(self) -> str:
        with self.lock:
            token = self.logout_refresh
            self.logout_refresh = None
        if token is None:
            token = _cookie(_signup(f"pw-{uuid.uuid4().hex}"), "refresh_token")
        return token


def _cookie(res: requests.Response, name: str) -> str:
    value = res.cookies.get(name)
    if not value:
        raise RuntimeError(f"{res.request.method} {res.url}: {res.status_code}, no {name} cookie: {res.text[:200]}")
    return value


def _signup(password: str) -> requests.Response:
    return requests.post(
        f"{BASE}/api/v1/auth/signup",
        json={"email": f"st-{uuid.uuid4().hex[:16]}@example.com", "password": password},
        headers={"X-Forwarded-For": _address()},
        timeout=30,
    )


JAR = Credentials()


# Second factors (SPEC 11). `mfa/verify` reads the second-factor cookie, which only a password
# login of an account with TOTP on gives; `totp/confirm` needs a setup and `recovery-codes` a
# factor that is on. So: one helper account with TOTP on gives every `verify` case a fresh
# pending sign-in, and the run's own account gets TOTP turned on before the first case that
# needs it (then `confirm` answers 409 `totp_already_enabled`, `recovery-codes` 200).
def _totp(secret: str, offset: int = 0) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    step = int(time.time()) // 30 + offset
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    o = mac[-1] & 15
    return f"{(struct.unpack('>I', mac[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def _enable_totp(access: str) -> None:
    cookies = {"access_token": access}
    setup = requests.post(f"{BASE}/api/v1/auth/mfa/totp/setup", cookies=cookies, headers={"X-Forwarded-For": _address()}, timeout=30)
    if setup.status_code != 200:
        return  # already on (409), or the session just ended: the case tests what it gets
    secret = setup.json()["secret"]
    requests.post(f"{BASE}/api/v1/auth/mfa/totp/confirm", json={"code": _totp(secret)}, cookies=cookies, headers={"X-Forwarded-For": _address()}, timeout=30)


class MfaAccount:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.email: str | None = None
        self.password = f"pw-{uuid.uuid4().hex}"
        self.totp_for: str | None = None  # the run's access token TOTP was turned on for

    def pending_cookie(self) -> str:
        with self.lock:
            if self.email is None:
                email = f"st-mfa-{uuid.uuid4().hex[:16]}@example.com"
                signup = requests.post(f"{BASE}/api/v1/auth/signup", json={"email": email, "password": self.password}, headers={"X-Forwarded-For": _address()}, timeout=30)
                _enable_totp(_cookie(signup, "access_token"))
                self.email = email
        login = requests.post(f"{BASE}/api/v1/auth/login", json={"email": self.email, "password": self.password}, headers={"X-Forwarded-For": _address()}, timeout=30)
        return _cookie(login, "mfa_pending")

    def run_account_has_totp(self) -> None:
        with self.lock:
            if self.totp_for != JAR.access:
                _enable_totp(JAR.access)
                self.totp_for = JAR.access


MFA = MfaAccount()


def _security(case) -> set:
    names = set()
    for requirement in case.operation.definition.raw.get("security") or []:
        names.update(requirement)
    return names


# retry_on=[]: a 401 is not retried by schemathesis (which would sign in again behind the
# run's back); `after_call` renews the credentials instead, in every phase including the
# stateful one.
@schemathesis.auth(retry_on=[], refresh_interval=None)
class LatchkeyAuth:
    def get(self, case, context):
        return JAR

    def set(self, case, data: Credentials, context):
        security = _security(case)
        path = case.operation.path
        if case.cookies is None:
            case.cookies = {}
        if case.headers is None:
            case.headers = {}
        # Credentials a stateful link put there (the links below) stay: the step is about them.
        if "access_token" in case.cookies or "Authorization" in case.headers:
            return
        if "mfa_pending_cookie" in security:
            case.cookies["mfa_pending"] = MFA.pending_cookie()
            return
        if path in ("/api/v1/auth/mfa/totp/confirm", "/api/v1/auth/mfa/recovery-codes"):
            MFA.run_account_has_totp()
        if path == "/api/v1/auth/logout":
            case.cookies["refresh_token"] = data.take_logout_session()
        elif "refresh_cookie" in security:
            case.cookies["refresh_token"] = data.refresh
        elif "bearer" in security and MODE == "bearer":
            case.headers["Authorization"] = f"Bearer {data.access}"
        elif "access_cookie" in security:
            case.cookies["access_token"] = data.access


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.headers is None:
        case.headers = {}
    case.headers["X-Forwarded-For"] = _address()
    # Cases are generated ahead of their call, some before the last renewal: bring the run's
    # own credentials up to date (a link's or a probe's are left as they are).
    cookies = case.cookies or {}
    if cookies.get("access_token") in JAR.old_access:
        cookies["access_token"] = JAR.access
    if cookies.get("refresh_token") in JAR.old_refresh and case.operation.path != "/api/v1/auth/logout":
        cookies["refresh_token"] = JAR.refresh
    auth = case.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[len("Bearer ") :] in JAR.old_access:
        case.headers["Authorization"] = f"Bearer {JAR.access}"
    # The operations that re-check the password: most schema-valid requests get the account's
    # real one, so they can succeed (204/202) instead of always answering 403
    # `invalid_credentials`; the others keep the generated one, which is wrong.
    field = PASSWORD_FIELDS.get(case.operation.path)
    if (
        field
        and case.meta is not None
        and case.meta.generation.mode.is_positive
        and isinstance(case.body, dict)
        and isinstance(case.body.get(field), str)
        and _sent_access(case) == JAR.access
        and random.random() < 0.75
    ):
        case.body[field] = JAR.password


def _sent_access(case):
    auth = (case.headers or {}).get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :]
    return (case.cookies or {}).get("access_token")


PASSWORD_FIELDS = {
    "/api/v1/auth/password/change": "current_password",
    "/api/v1/auth/email/change": "password",
    # {"method": "password", "password": …}; a TOTP body has no such field and is left.
    "/api/v1/auth/reauthenticate": "password",
}


@schemathesis.hook
def after_call(context, case, response):
    path = case.operation.path
    cookies = case.cookies or {}
    if path == "/api/v1/auth/password/change" and response.status_code == 204 and _sent_access(case) == JAR.access:
        JAR.password = case.body["new_password"]
    if path == "/api/v1/auth/refresh":
        sent = cookies.get("refresh_token")
        if sent != JAR.refresh:
            return
        if response.status_code == 200:
            # The cookie jar: the rotated refresh token replaces the one presented.
            for header in response.headers.get("set-cookie", []):
                name, _, rest = header.partition("=")
                value = rest.split(";", 1)[0]
                if name.strip() == "refresh_token" and value:
                    JAR.rotated(sent, value)
        elif response.status_code == 401:
            JAR.renew(None, sent)
        return
    if response.status_code != 401:
        return
    access = _sent_access(case)
    if access != JAR.access:
        return
    try:
        code = json.loads(response.content).get("code")
    except ValueError:
        return
    if code == "session_revoked":
        JAR.renew(access, None)


# Links the OpenAPI document cannot state: a new account's access token is in its
# Set-Cookie header, which an OpenAPI runtime expression can only name as a whole; the
# `#regex:` extractor is schemathesis's. (signup → login and sessions → delete_session are
# links of the document itself.)
_ACCESS_FROM_SET_COOKIE = "$response.header.Set-Cookie#regex:access_token=([^;]+)"


@schemathesis.hook
def before_load_schema(context, raw_schema):
    paths = raw_schema["paths"]
    if MODE == "cookie":
        credentials = {"cookie.access_token": _ACCESS_FROM_SET_COOKIE}
    else:
        credentials = {"header.Authorization": "Bearer {" + _ACCESS_FROM_SET_COOKIE + "}"}
    for source, status in (("/api/v1/auth/signup", "201"), ("/api/v1/auth/login", "200")):
        links = paths[source]["post"]["responses"][status].setdefault("links", {})
        for target in ("me", "list_sessions", "logout_all"):
            links[f"{target}_as_new_session"] = {"operationId": target, "parameters": dict(credentials)}


# Operations that redeem a mailed token: a schema-valid token (43 base64url characters) that
# no mail ever carried is refused with 400 `token_invalid` — the documented business answer,
# which the generated config lets positive_data_acceptance accept for these operations only.
# This check keeps that allowance narrow: any other 400 to a schema-valid request fails.
TOKEN_OPERATIONS = {
    "/api/v1/auth/email/verify",
    "/api/v1/auth/email/change/confirm",
    "/api/v1/auth/password/reset",
}


@schemathesis.check
def only_token_invalid_refuses_valid_tokens(ctx, response, case):
    if case.operation.path not in TOKEN_OPERATIONS or response.status_code != 400:
        return None
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    try:
        code = json.loads(response.content).get("code")
    except ValueError:
        code = None
    if code != "token_invalid":
        raise AssertionError(
            f"schema-valid request refused with 400 `{code}`; only `token_invalid` (an unknown token) is expected"
        )
    return None


# Operations whose schema-valid requests can only be refused with one expected code:
# those that check a second-factor code (SPEC 11: a schema-valid code is wrong, or not 6
# digits — 400 `invalid_code`), and the passkey ceremonies' finish (a schema-valid body names
# no live ceremony and carries no signed response — one of the passkey codes). Any other 400
# to a schema-valid request fails, as for the mail tokens above.
CODE_OPERATIONS = {
    "/api/v1/auth/mfa/verify",
    "/api/v1/auth/mfa/totp/confirm",
    "/api/v1/auth/reauthenticate",
}
PASSKEY_FINISH_OPERATIONS = {
    "/api/v1/auth/passkeys/register/finish",
    "/api/v1/auth/passkeys/login/finish",
}
PASSKEY_CODES = {"passkey_invalid", "passkey_challenge_expired", "passkey_unknown"}


def expected_400_codes(path):
    if path in CODE_OPERATIONS:
        return {"invalid_code"}
    if path in PASSKEY_FINISH_OPERATIONS:
        return PASSKEY_CODES
    return None


@schemathesis.check
def only_expected_codes_refuse_valid_codes_and_ceremonies(ctx, response, case):
    allowed = expected_400_codes(case.operation.path)
    if allowed is None or response.status_code != 400:
        return None
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    try:
        code = json.loads(response.content).get("code")
    except ValueError:
        code = None
    if code not in allowed:
        raise AssertionError(
            f"schema-valid request refused with 400 `{code}`; only {sorted(allowed)} are expected"
        )
    return None
