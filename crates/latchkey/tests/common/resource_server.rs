//! A separate service that verifies latchkey's access tokens offline, the way SPEC 4 and
//! the README's verifier examples tell other services to: fetch the JWKS, cache it for its
//! `Cache-Control: max-age`, verify EdDSA with `iss`, `aud` and `exp` pinned. Strict on
//! purpose: an unknown `kid` is an error, not a reason to refetch, so a test sees every
//! token signed by a key this service could not yet have known (SPEC 13).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};

pub struct CachingVerifier {
    base: String,
    http: reqwest::Client,
    validation: Validation,
    cache: Option<(Instant, Duration, HashMap<String, DecodingKey>)>,
    /// JWKS fetches made.
    pub fetches: usize,
}

impl CachingVerifier {
    /// Verifies tokens of the latchkey at `base` whose `PUBLIC_URL` is `public_url`.
    pub fn new(base: &str, public_url: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[public_url]);
        validation.set_audience(&[public_url]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            validation,
            cache: None,
            fetches: 0,
        }
    }

    async fn keys(&mut self) -> &HashMap<String, DecodingKey> {
        let fresh = self
            .cache
            .as_ref()
            .is_some_and(|(at, max_age, _)| at.elapsed() < *max_age);
        if !fresh {
            let res = self
                .http
                .get(format!("{}/.well-known/jwks.json", self.base))
                .send()
                .await
                .expect("JWKS fetch");
            let max_age = res
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split("max-age=").nth(1))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .expect("the JWKS carries Cache-Control: max-age");
            let set: JwkSet = res.json().await.expect("JWKS JSON");
            let keys = set
                .keys
                .iter()
                .map(|k| {
                    let kid = k.common.key_id.clone().expect("every JWK has a kid");
                    (kid, DecodingKey::from_jwk(k).expect("usable JWK"))
                })
                .collect();
            self.fetches += 1;
            self.cache = Some((Instant::now(), Duration::from_secs(max_age), keys));
        }
        &self.cache.as_ref().unwrap().2
    }

    /// `Ok(kid)` when the token verifies against the cached key set.
    pub async fn verify(&mut self, token: &str) -> Result<String, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let validation = self.validation.clone();
        let keys = self.keys().await;
        let key = keys
            .get(&kid)
            .ok_or_else(|| format!("unknown kid {kid} (cached set: {:?})", keys.keys()))?;
        jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
            .map_err(|e| e.to_string())?;
        Ok(kid)
    }
}

/// What [`watch_rotation`] saw.
pub struct RotationWatch {
    /// Distinct `kid`s that signed the tokens, in order of first appearance.
    pub signing_kids: Vec<String>,
    pub tokens: usize,
    /// Tokens the caching verifier refused, with why.
    pub refused: Vec<String>,
}

/// For `run`: a user refreshes every 50 ms, round-robin over `apps` (instances behind one
/// load balancer), and a resource server that fetches the JWKS through the same balancer and
/// caches it for its max-age verifies every new access token.
pub async fn watch_rotation(apps: &[super::TestApp], run: Duration) -> RotationWatch {
    let public_url = apps[0].state.config().public_url.clone();
    let mut verifier = CachingVerifier::new(&apps[0].base, &public_url);
    let mut jar = apps[0].signup(&super::unique_email("rs")).await;
    let mut watch = RotationWatch {
        signing_kids: Vec::new(),
        tokens: 0,
        refused: Vec::new(),
    };
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < run {
        let app = &apps[i % apps.len()];
        i += 1;
        let (status, _) = app.refresh(&mut jar).await;
        assert_eq!(status, 200, "refresh on {}", app.base);
        let token = jar.access.clone().expect("an access token");
        watch.tokens += 1;
        // The balancer sends the resource server's JWKS fetches to any instance.
        verifier.base = apps[i % apps.len()].base.clone();
        match verifier.verify(&token).await {
            Ok(kid) => {
                if !watch.signing_kids.contains(&kid) {
                    watch.signing_kids.push(kid);
                }
            }
            Err(e) => watch.refused.push(format!("{:?}: {e}", t0.elapsed())),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch
}
