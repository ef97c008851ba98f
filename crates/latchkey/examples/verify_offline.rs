//! How another service verifies latchkey's access tokens offline (SPEC 4, 13): fetch the
//! public keys once from `/.well-known/jwks.json`, keep them for the `max-age` the response's
//! `Cache-Control` gives, and check each token locally — no call to latchkey per request.
//!
//! ```sh
//! echo "$ACCESS_TOKEN" | cargo run -p latchkey --example verify_offline -- http://localhost:8080
//! ```
//!
//! The argument is latchkey's `PUBLIC_URL` (the tokens' `iss` and `aud`); the token comes on
//! standard input (never on the command line, where `ps` shows it). Prints `valid sub=… sid=…`
//! and exits 0, or `invalid: <reason>` and exits 1.
//!
//! The limit of any offline check: revocation (logout, a revoked session) is seen only by
//! latchkey itself. A revoked session's access token verifies here until it expires
//! (≤ `ACCESS_TOKEN_TTL`); keep that short, or ask latchkey (`GET /api/v1/me`) before
//! critical actions.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::Mutex;

/// The claims this service relies on (latchkey's access token has more: `iat`, `jti`, …).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
}

/// JWKS kept no longer than its `Cache-Control: max-age` (latchkey publishes a new signing
/// key in the JWKS at least one max-age before it signs with it).
struct Cached {
    keys: JwkSet,
    fetched: Instant,
    max_age: Duration,
}

struct Verifier {
    issuer: String,
    jwks_url: String,
    http: reqwest::Client,
    cache: Mutex<Option<Cached>>,
}

/// Without `max-age` (or `no-store`/`no-cache`): refetch every time. Never longer than an hour.
fn max_age(cache_control: Option<&str>) -> Duration {
    let secs = cache_control
        .unwrap_or("")
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_secs(secs.min(3600))
}

impl Verifier {
    fn new(public_url: &str) -> Self {
        let issuer = public_url.trim_end_matches('/').to_owned();
        Self {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            cache: Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<Cached, String> {
        let res = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("JWKS: {e}"))?;
        let max_age = max_age(
            res.headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let keys = res
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("JWKS: {e}"))?;
        Ok(Cached {
            keys,
            fetched: Instant::now(),
            max_age,
        })
    }

    /// The key named `kid`, from the cache while it is fresh. A scheduled rotation publishes
    /// the next key a max-age before it signs, so a fresh copy already has it; an unknown
    /// `kid` (a manual `latchkey keys rotate` signs at once) refetches, at most every 10 s so
    /// that forged `kid`s cannot make this service hammer latchkey.
    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        let mut cache = self.cache.lock().await;
        let stale = |c: &Cached| {
            c.fetched.elapsed() >= c.max_age
                || (c.keys.find(kid).is_none() && c.fetched.elapsed() >= Duration::from_secs(10))
        };
        if cache.as_ref().is_none_or(stale) {
            *cache = Some(self.fetch().await?);
        }
        let jwk = cache
            .as_ref()
            .and_then(|c| c.keys.find(kid))
            .ok_or_else(|| format!("unknown kid {kid:?}"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK {kid:?}: {e}"))
    }

    async fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
        // Pinned: only EdDSA (never `none`, never HS* with the public key as secret), only
        // access tokens (typ at+jwt), only keys from the JWKS (`jku`/`x5u`/`jwk` ignored).
        if header.alg != Algorithm::EdDSA {
            return Err(format!("alg {:?} is not EdDSA", header.alg));
        }
        if header.typ.as_deref() != Some("at+jwt") {
            return Err(format!("typ {:?} is not at+jwt", header.typ));
        }
        let kid = header.kid.ok_or("no kid")?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5; // seconds of clock skew between the two machines
        decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(public_url) = std::env::args().nth(1) else {
        eprintln!("usage: verify_offline PUBLIC_URL < token");
        return ExitCode::from(2);
    };
    let mut token = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut token) {
        eprintln!("reading the token: {e}");
        return ExitCode::from(2);
    }
    let verifier = Verifier::new(&public_url);
    match verifier.verify(token.trim()).await {
        Ok(claims) => {
            println!("valid sub={} sid={}", claims.sub, claims.sid);
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("invalid: {reason}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::max_age;
    use std::time::Duration;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age(Some("public, max-age=60")), Duration::from_secs(60));
        assert_eq!(max_age(Some("max-age=999999")), Duration::from_secs(3600));
        assert_eq!(max_age(Some("no-store")), Duration::ZERO);
        assert_eq!(max_age(None), Duration::ZERO);
    }
}
