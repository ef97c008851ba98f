"""How another Python service verifies latchkey's access tokens offline (PyJWT + cryptography).

    echo "$ACCESS_TOKEN" | python3 verify.py http://localhost:8080

The argument is latchkey's PUBLIC_URL (the tokens' `iss` and `aud`); the token comes on stdin.
Prints `valid sub=… sid=…` and exits 0, or `invalid: <reason>` and exits 1.
"""
import sys

import jwt

issuer = sys.argv[1].rstrip("/")
# Fetched once, then cached (60 s, latchkey's JWKS max-age; refetched on an unknown `kid`).
jwks = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json", cache_jwk_set=True, lifespan=60)


def verify(token: str) -> dict:
    """The pinned checks: EdDSA only, `typ: at+jwt`, `iss`, `aud`, `exp`/`nbf` (5 s clock skew)."""
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("typ is not at+jwt")
    key = jwks.get_signing_key_from_jwt(token).key
    return jwt.decode(token, key, algorithms=["EdDSA"], issuer=issuer, audience=issuer, leeway=5,
                      options={"require": ["exp", "iss", "aud", "sub"]})


try:
    claims = verify(sys.stdin.read().strip())
    print(f"valid sub={claims['sub']} sid={claims['sid']}")
except jwt.PyJWTError as error:
    print(f"invalid: {type(error).__name__}: {error}")
    sys.exit(1)
