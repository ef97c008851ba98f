//! SPEC 4: access tokens — what is accepted, and every forgery that must not be.

mod at_rest;
mod common;
#[path = "tokens/schedule.rs"]
mod schedule;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn now() -> i64 {
    latchkey::clock::now_ms() / 1000
}

struct Ctx {
    app: TestApp,
    jar: Jar,
    claims: Value,
}

async fn ctx() -> Ctx {
    let app = spawn().await;
    let jar = app.signup(&unique_email("tok")).await;
    let token = jar.access.clone().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    Ctx { app, jar, claims }
}

impl Ctx {
    /// Signs `claims` with the server's real key and `kid`, under `header` tweaks.
    fn sign_real(&self, claims: &Value, tweak: impl FnOnce(&mut Header)) -> String {
        let keys = self.app.state.keys().current();
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(keys.signing.0.clone());
        tweak(&mut h);
        jsonwebtoken::encode(&h, claims, &keys.signing.1).unwrap()
    }

    /// A token of another Ed25519 key (an attacker's).
    fn sign_foreign(&self, claims: &Value, tweak: impl FnOnce(&mut Header)) -> String {
        let rec = latchkey::tokens::keys::generate_key().unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(rec.kid.clone());
        tweak(&mut h);
        jsonwebtoken::encode(
            &h,
            claims,
            &EncodingKey::from_ed_der(rec.private_der.expose_secret()),
        )
        .unwrap()
    }

    fn with(&self, k: &str, v: Value) -> Value {
        let mut c = self.claims.clone();
        c[k] = v;
        c
    }

    /// Asserts the token is refused with `code`, both as a cookie and as a Bearer token.
    async fn refused(&self, token: &str, code: &str, why: &str) {
        let cookie = Jar {
            access: Some(token.to_owned()),
            refresh: None,
        };
        let res = self.app.get("/api/v1/me", &cookie).await;
        assert_eq!(res.status(), 401, "cookie: {why}");
        assert_problem(res, 401, code).await;
        let res = self
            .app
            .http
            .get(self.app.url("/api/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "bearer: {why}");
        let www = res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(www.contains("error=\"invalid_token\""), "{why}: {www}");
        assert_problem(res, 401, code).await;
    }
}

#[tokio::test]
async fn issued_token_is_eddsa_with_kid_typ_and_every_claim() {
    let c = ctx().await;
    let token = c.jar.access.clone().unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.unwrap();
    for k in ["iss", "aud", "sub", "sid", "iat", "exp", "jti"] {
        assert!(!c.claims[k].is_null(), "claim {k} missing");
    }
    assert_eq!(c.claims["iss"], "http://localhost:8080");
    assert_eq!(c.claims["aud"], "http://localhost:8080");
    assert_eq!(
        c.claims["exp"].as_i64().unwrap() - c.claims["iat"].as_i64().unwrap(),
        900
    );
    // The JWKS publishes the key that verifies it.
    let jwks: Value = c.app.get_json("/.well-known/jwks.json").await;
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid in JWKS")
        .clone();
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert!(
        key.get("d").is_none(),
        "private part must never be published"
    );
    let dk = jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    v.set_audience(&["http://localhost:8080"]);
    v.set_issuer(&["http://localhost:8080"]);
    jsonwebtoken::decode::<Value>(&token, &dk, &v)
        .expect("another service verifies with the JWKS alone");
}

#[tokio::test]
async fn valid_token_works_as_cookie_and_as_bearer() {
    let c = ctx().await;
    assert_eq!(c.app.me_status(&c.jar).await, 200);
    let token = c.sign_real(&c.claims, |_| {});
    let res = c
        .app
        .http
        .get(c.app.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "a token signed with the real key and the same claims verifies"
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let c = ctx().await;
    for alg in ["none", "None", "NONE"] {
        let t = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "at+jwt"})),
            b64(&c.claims)
        );
        c.refused(&t, "token_invalid", alg).await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let c = ctx().await;
    let keys = c.app.state.store().signing_keys().await.unwrap();
    let k = keys.last().unwrap();
    let jwk_x = URL_SAFE_NO_PAD.encode(&k.public_key);
    for secret in [k.public_key.clone(), jwk_x.into_bytes()] {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(k.kid.clone());
        let t = jsonwebtoken::encode(&h, &c.claims, &EncodingKey::from_secret(&secret)).unwrap();
        c.refused(&t, "token_invalid", "HS256 with public key")
            .await;
    }
}

#[tokio::test]
async fn unknown_kid_and_embedded_keys_are_refused() {
    let c = ctx().await;
    c.refused(
        &c.sign_foreign(&c.claims, |_| {}),
        "token_invalid",
        "unknown kid",
    )
    .await;
    c.refused(
        &c.sign_real(&c.claims, |h| h.kid = None),
        "token_invalid",
        "no kid",
    )
    .await;
    // An attacker's key announced in the header itself must be ignored.
    let rec = latchkey::tokens::keys::generate_key().unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&rec.public_key), "kid": rec.kid})).unwrap();
    let with_jwk = c.sign_foreign(&c.claims, |h| h.jwk = Some(jwk.clone()));
    c.refused(&with_jwk, "token_invalid", "jwk header").await;
    let real_kid = c.app.state.keys().current().signing.0.clone();
    let with_jku = c.sign_foreign(&c.claims, |h| {
        h.jku = Some("http://127.0.0.1:1/jwks.json".into());
        h.kid = Some(real_kid.clone());
    });
    c.refused(&with_jku, "token_invalid", "jku header with our kid")
        .await;
    let with_x5u = c.sign_foreign(&c.claims, |h| {
        h.x5u = Some("http://127.0.0.1:1/cert.pem".into())
    });
    c.refused(&with_x5u, "token_invalid", "x5u header").await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let c = ctx().await;
    let t = now();
    let expired = c.sign_real(&c.with("exp", json!(t - 120)), |_| {});
    c.refused(&expired, "token_expired", "expired").await;
    let mut future = c.with("nbf", json!(t + 3600));
    future["exp"] = json!(t + 7200);
    c.refused(
        &c.sign_real(&future, |_| {}),
        "token_invalid",
        "nbf in the future",
    )
    .await;
    let no_exp = {
        let mut v = c.claims.clone();
        v.as_object_mut().unwrap().remove("exp");
        v
    };
    c.refused(&c.sign_real(&no_exp, |_| {}), "token_invalid", "no exp")
        .await;
}

#[tokio::test]
async fn wrong_issuer_audience_or_type_is_refused() {
    let c = ctx().await;
    c.refused(
        &c.sign_real(&c.with("iss", json!("https://evil.example")), |_| {}),
        "token_invalid",
        "iss",
    )
    .await;
    c.refused(
        &c.sign_real(&c.with("aud", json!("https://other.example")), |_| {}),
        "token_invalid",
        "aud",
    )
    .await;
    c.refused(
        &c.sign_real(&c.with("sub", json!("not-a-uuid")), |_| {}),
        "token_invalid",
        "sub",
    )
    .await;
    c.refused(
        &c.sign_real(&c.claims, |h| h.typ = Some("JWT".into())),
        "token_invalid",
        "typ JWT",
    )
    .await;
    c.refused(
        &c.sign_real(&c.claims, |h| h.typ = None),
        "token_invalid",
        "no typ",
    )
    .await;
}

#[tokio::test]
async fn tampered_truncated_garbage_and_oversize_tokens_are_refused() {
    let c = ctx().await;
    let good = c.jar.access.clone().unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let other_sub = c.with("sub", json!(uuid::Uuid::new_v4().to_string()));
    let tampered = format!("{}.{}.{}", parts[0], b64(&other_sub), parts[2]);
    c.refused(&tampered, "token_invalid", "tampered payload")
        .await;
    c.refused(&good[..good.len() - 5], "token_invalid", "truncated")
        .await;
    c.refused(
        &format!("{}.{}", parts[0], parts[1]),
        "token_invalid",
        "two segments",
    )
    .await;
    for garbage in ["garbage", "a.b.c", "....", "eyJ.eyJ.eyJ", "%00%ff"] {
        c.refused(garbage, "token_invalid", garbage).await;
    }
    let oversize = format!("{}.{}.{}", parts[0], "A".repeat(5000), parts[2]);
    c.refused(&oversize, "token_invalid", "oversize").await;
}

#[tokio::test]
async fn two_differing_access_cookies_are_refused() {
    let c = ctx().await;
    let good = c.jar.access.clone().unwrap();
    let res = c
        .app
        .http
        .get(c.app.url("/api/v1/me"))
        .header("cookie", format!("access_token={good}; access_token=other"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "token_invalid").await;
    let res = c
        .app
        .http
        .get(c.app.url("/api/v1/me"))
        .header(
            "cookie",
            format!("access_token={good}; access_token={good}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the same value twice is one cookie");
}

#[tokio::test]
async fn missing_token_is_token_missing_without_error_parameter() {
    let app = spawn().await;
    let res = app.get("/api/v1/me", &Jar::default()).await;
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"latchkey\""
    );
    assert_problem(res, 401, "token_missing").await;
}

#[tokio::test]
async fn rotated_key_keeps_verifying_old_tokens_and_signs_new_ones() {
    let c = ctx().await;
    let old_kid = jsonwebtoken::decode_header(c.jar.access.as_ref().unwrap())
        .unwrap()
        .kid
        .unwrap();
    let new = latchkey::tokens::keys::KeyRing::rotate(
        c.app.state.store(),
        c.app.state.secrets_key(),
        c.app.state.config().access_ttl,
    )
    .await
    .unwrap();
    c.app.state.keys().reload().await.unwrap();
    assert_eq!(
        c.app.me_status(&c.jar).await,
        200,
        "old token still verifies after rotation"
    );
    let mut jar = c.jar.clone();
    assert_eq!(c.app.refresh(&mut jar).await.0, 200);
    let new_kid = jsonwebtoken::decode_header(jar.access.as_ref().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(new_kid, new.kid, "new tokens are signed with the new key");
    assert_eq!(c.app.me_status(&jar).await, 200);
    let jwks: Value = c.app.get_json("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new.kid.as_str()),
        "{kids:?}"
    );
}
