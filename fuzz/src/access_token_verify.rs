//! `tokens::access::verify`: access-token verification against a real key ring.
//!
//! Input: the first byte picks a mode (its value modulo 3; `0`, `1`, `2` in the seeds):
//! - `0`: the rest is a token, verified as is;
//! - `1`: the rest edits a valid token (see [`super::mutate`]), which is then verified;
//! - `2`: the rest is a JWT header and payload, one line each, in JSON, signed with the ring's
//!   key (`$KID`, `$URL`, `$NOW`, `$EXP` are replaced by the key id, PUBLIC_URL, now and
//!   now + 10 minutes), then verified.
//!
//! Properties: a token that verifies carries `alg: EdDSA`, `typ: at+jwt`, the ring's `kid`,
//! no `crit`, `iss` and `aud` equal to PUBLIC_URL, an unexpired `exp` and no future `nbf`;
//! its claims survive a JSON round trip and verify again when re-signed; an edited token
//! verifies only if it is byte for byte the original, with the original's claims.

use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use latchkey::domain::{SessionId, UserId};
use latchkey::tokens::access::{self, AccessClaims, LEEWAY_SECS, Subject, TYP};
use latchkey::tokens::keys::{KeySet, generate_key};
use secrecy::ExposeSecret;

const URL: &str = "https://auth.example.test";

struct Fixture {
    keys: KeySet,
    token: String,
    claims: AccessClaims,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let g = generate_key().expect("a key");
    let keys = KeySet {
        signing: (
            g.kid.clone(),
            EncodingKey::from_ed_der(g.private_der.expose_secret()),
        ),
        verifying: HashMap::from([(g.kid.clone(), DecodingKey::from_ed_der(&g.public_key))]),
        jwks: serde_json::Value::Null,
    };
    let now = super::now_secs();
    let who = Subject {
        sub: UserId::new(),
        sid: SessionId::new(),
        auth_time: now,
        amr: latchkey::mfa::Amr::PWD,
    };
    // Ten years: long fuzzing runs must not see it expire.
    let (token, claims) = access::issue(&keys, URL, who, now, 10 * 365 * 86_400).expect("issued");
    Fixture {
        keys,
        token,
        claims,
    }
});

fn sign(header: &str, payload: &str) -> String {
    let f = &*FIXTURE;
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &f.keys.signing.1, Algorithm::EdDSA)
        .expect("signed");
    format!("{msg}.{sig}")
}

/// What every verified token must satisfy.
fn check_verified(token: &str, c: &AccessClaims) {
    let f = &*FIXTURE;
    let h = jsonwebtoken::decode_header(token).expect("a verified token has a header");
    assert_eq!(h.alg, Algorithm::EdDSA);
    assert_eq!(h.typ.as_deref(), Some(TYP));
    assert_eq!(h.kid.as_deref(), Some(f.keys.signing.0.as_str()));
    assert!(h.crit.is_none());
    assert_eq!(c.iss, URL);
    assert_eq!(c.aud, URL);
    let now = super::now_secs();
    assert!(c.exp + LEEWAY_SECS as i64 >= now, "expired: {c:?}");
    // No future `nbf`, whatever shape the payload gave it.
    let payload = token.split('.').nth(1).expect("three parts");
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON");
    if let Some(nbf) = payload.get("nbf").and_then(serde_json::Value::as_f64) {
        assert!(
            nbf <= (now + LEEWAY_SECS as i64 + 1) as f64,
            "future nbf {nbf}"
        );
    }
    // The claims round-trip through JSON and verify again once re-signed.
    let json = serde_json::to_string(c).expect("serialises");
    let back: AccessClaims = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(&back, c);
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"{TYP}","kid":"{}"}}"#,
        f.keys.signing.0
    );
    let again = access::verify(&f.keys, URL, &sign(&header, &json));
    assert_eq!(again.as_ref(), Ok(c));
}

pub fn run(data: &[u8]) {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        // The fixture itself verifies, to its own claims.
        assert_eq!(access::verify(&f.keys, URL, &f.token), Ok(f.claims.clone()));
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(c) = access::verify(&f.keys, URL, token) {
                check_verified(token, &c);
            }
        }
        1 => {
            let edited = super::mutate(f.token.as_bytes(), rest);
            let Ok(token) = std::str::from_utf8(&edited) else {
                return;
            };
            if let Ok(c) = access::verify(&f.keys, URL, token) {
                assert_eq!(token, f.token, "an edited token verified");
                assert_eq!(c, f.claims);
                check_verified(token, &c);
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let now = super::now_secs();
            let fill = |s: &str| {
                s.replace("$KID", &f.keys.signing.0)
                    .replace("$URL", URL)
                    .replace("$NOW", &now.to_string())
                    .replace("$EXP", &(now + 600).to_string())
            };
            let (header, payload) = text.split_once('\n').unwrap_or((text, ""));
            let token = sign(&fill(header), &fill(payload));
            if let Ok(c) = access::verify(&f.keys, URL, &token) {
                check_verified(&token, &c);
            }
        }
    }
}
