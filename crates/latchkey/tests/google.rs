//! Sign in with Google (issue 3) and with any named OpenID provider (SPEC 13), over real
//! HTTP on loopback.
//!
//! Every test of one provider's flow is written once, `async fn name(via: Via)`, and run
//! twice by [`provider_tests!`]: `google::name` through the Google preset
//! (`/api/v1/auth/google/*`) and `named::name` through a named provider
//! (`/api/v1/auth/oidc/corp/*`, its own client id and secret). The tests under "Provider
//! isolation" run both in one latchkey at once.
//!
//! - End to end against a real OpenID Provider: the npm package `oidc-provider` (pinned in
//!   `tests/oidc/package-lock.json`, installed here with `npm ci` when missing), started on
//!   127.0.0.1 with one client. The test plays the browser through its login and consent
//!   pages. Without Node.js these tests fail; they never pass silently.
//! - Every negative case against a test issuer written here (axum: discovery, authorization,
//!   token and JWKS endpoints) that signs whatever ID token the test asks for.
//! - The authorization redirect's parameters, one by one.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Jar, TestApp, set_cookie_lines, set_cookies, spawn_with_addr};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latchkey::config::{GoogleConfig, OidcClientConfig, OidcProviderConfig};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

const CLIENT_ID: &str = "latchkey-test-client";
const CLIENT_SECRET: &str = "latchkey-test-secret";
/// The named provider of the tests, and its own client at its issuer.
const NAMED: &str = "corp";
const NAMED_CLIENT_ID: &str = "latchkey-corp-client";
const NAMED_CLIENT_SECRET: &str = "latchkey-corp-secret";

/// Which kind of provider a test signs in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The Google preset: `GOOGLE_*`, `/api/v1/auth/google/*`.
    Google,
    /// A named provider: `OIDC_PROVIDERS=corp`, `/api/v1/auth/oidc/corp/*`.
    Named,
}

impl Via {
    /// The routes' prefix, which is also the state cookie's `Path`.
    fn base(self) -> &'static str {
        match self {
            Via::Google => "/api/v1/auth/google",
            Via::Named => "/api/v1/auth/oidc/corp",
        }
    }
    fn login_path(self) -> String {
        format!("{}/login", self.base())
    }
    fn callback_path(self) -> String {
        format!("{}/callback", self.base())
    }
    fn client_id(self) -> &'static str {
        match self {
            Via::Google => CLIENT_ID,
            Via::Named => NAMED_CLIENT_ID,
        }
    }
    fn client_secret(self) -> &'static str {
        match self {
            Via::Google => CLIENT_SECRET,
            Via::Named => NAMED_CLIENT_SECRET,
        }
    }
    /// The name `/api/v1/me` gives this sign-in method.
    fn method(self) -> &'static str {
        match self {
            Via::Google => "google",
            Via::Named => NAMED,
        }
    }
    /// Points this provider of `cfg` at `issuer`.
    fn configure(self, cfg: &mut latchkey::Config, issuer: String) {
        let client = OidcClientConfig {
            client_id: self.client_id().into(),
            client_secret: SecretString::from(self.client_secret()),
            issuer,
        };
        match self {
            Via::Google => cfg.google = Some(client),
            Via::Named => cfg.oidc.push(OidcProviderConfig {
                name: NAMED.into(),
                display_name: "Corp SSO".into(),
                client,
            }),
        }
    }
}

/// Runs each listed `async fn name(via: Via)` as two tests: `google::name` and `named::name`.
macro_rules! provider_tests {
    ($($name:ident),* $(,)?) => {
        mod google {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Via::Google).await
            })*
        }
        mod named {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Via::Named).await
            })*
        }
    };
}

provider_tests!(
    authorization_redirect_carries_every_parameter,
    unreachable_provider_fails_cleanly_and_does_not_block_start,
    first_sign_in_creates_a_user_and_issues_working_cookies,
    users_are_keyed_on_subject_not_email,
    verified_google_email_links_the_existing_password_account,
    verified_google_email_links_to_a_verified_password_account_and_keeps_its_password,
    unverified_google_email_matching_an_account_is_refused,
    unverified_google_email_without_an_account_creates_no_user,
    string_email_verified_is_understood,
    disabled_user_cannot_sign_in_with_google,
    new_signing_key_is_fetched_once_and_forged_kids_are_rate_limited,
    wrong_audience_is_refused,
    untrusted_extra_audience_is_refused,
    several_audiences_without_azp_are_refused,
    foreign_azp_is_refused,
    wrong_issuer_is_refused,
    googles_bare_issuer_spelling_is_refused_for_other_issuers,
    expired_token_is_refused,
    token_issued_in_the_future_is_refused,
    token_issued_long_ago_is_refused,
    wrong_nonce_is_refused,
    missing_nonce_is_refused,
    tampered_payload_is_refused,
    signature_by_another_key_is_refused,
    alg_none_is_refused,
    hs256_signed_with_the_client_secret_is_refused,
    token_without_email_is_refused,
    state_mismatch_is_refused,
    missing_state_cookie_is_refused,
    missing_state_parameter_is_refused,
    forged_or_tampered_state_cookie_is_refused,
    state_cookie_of_another_attempt_is_refused,
    state_cookie_from_another_latchkey_is_refused,
    replayed_callback_is_refused,
    state_is_consumed_even_when_the_attempt_fails,
    provider_error_is_oauth_denied,
    provider_error_without_our_state_is_a_state_mismatch,
    authorization_response_from_another_issuer_is_refused,
    callback_without_code_fails,
    rejected_code_at_the_token_endpoint_fails,
    open_redirect_attempts_end_at_root,
    same_origin_next_is_honoured,
    an_account_with_a_second_factor_takes_the_second_step_after_google,
);

// ---------------------------------------------------------------------------------------
// Signing keys (generated once per test binary)

/// What the test issuer's token endpoint last received: Authorization header and form.
type TokenRequest = (Option<String>, HashMap<String, String>);

struct TestKey {
    kid: &'static str,
    encoding: EncodingKey,
    jwk: Value,
}

fn make_key(kid: &'static str) -> TestKey {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
    let der = key.to_pkcs1_der().expect("PKCS#1 DER");
    let jwk = json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    });
    TestKey {
        kid,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk,
    }
}

static KEY_A: LazyLock<TestKey> = LazyLock::new(|| make_key("key-a"));
static KEY_B: LazyLock<TestKey> = LazyLock::new(|| make_key("key-b"));

// ---------------------------------------------------------------------------------------
// The test issuer

/// How the next ID token is made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TokenKind {
    /// RS256 with the current signing key.
    Good,
    /// Signed, then the payload changed (signature no longer matches).
    Tampered,
    /// Signed by another key under the current key's `kid`.
    ForeignKey,
    /// `alg: none`, empty signature.
    AlgNone,
    /// HS256 with the client secret as key (what a confused verifier would accept).
    Hs256ClientSecret,
    /// A `kid` the issuer never published.
    UnknownKid,
}

#[derive(Clone, Debug)]
struct Scenario {
    sub: String,
    email: Option<String>,
    email_verified: Value,
    name: Option<String>,
    /// Claim overrides applied last; `null` removes the claim.
    overrides: Vec<(&'static str, Value)>,
    token: TokenKind,
    /// The authorization endpoint answers `error=access_denied`.
    deny: bool,
    /// The `iss` authorization-response parameter (RFC 9207); `None` sends the issuer.
    response_iss: Option<String>,
}

impl Default for Scenario {
    fn default() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            email: Some(format!("g-{id}@example.com")),
            sub: format!("sub-{id}"),
            email_verified: json!(true),
            name: Some("Grace Hopper".into()),
            overrides: Vec::new(),
            token: TokenKind::Good,
            deny: false,
            response_iss: None,
        }
    }
}

struct Grant {
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: String,
    code_challenge_method: String,
}

struct IssuerInner {
    base: String,
    /// The one client registered here (latchkey's, for this provider).
    client_id: &'static str,
    client_secret: &'static str,
    published: Mutex<Vec<&'static TestKey>>,
    signer: Mutex<&'static TestKey>,
    scenario: Mutex<Scenario>,
    codes: Mutex<HashMap<String, Grant>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
    token_hits: AtomicUsize,
    last_token_request: Mutex<Option<TokenRequest>>,
}

#[derive(Clone)]
struct Issuer(Arc<IssuerInner>);

impl Issuer {
    /// A test issuer with latchkey's client for `via` registered.
    async fn start(via: Via) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(IssuerInner {
            base,
            client_id: via.client_id(),
            client_secret: via.client_secret(),
            published: Mutex::new(vec![&*KEY_A]),
            signer: Mutex::new(&*KEY_A),
            scenario: Mutex::new(Scenario::default()),
            codes: Mutex::new(HashMap::new()),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
            token_hits: AtomicUsize::new(0),
            last_token_request: Mutex::new(None),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Issuer(inner)
    }

    fn base(&self) -> &str {
        &self.0.base
    }

    fn scenario(&self, f: impl FnOnce(&mut Scenario)) {
        f(&mut self.0.scenario.lock().unwrap());
    }

    fn current(&self) -> Scenario {
        self.0.scenario.lock().unwrap().clone()
    }

    fn rotate_to(&self, key: &'static TestKey) {
        *self.0.published.lock().unwrap() = vec![key];
        *self.0.signer.lock().unwrap() = key;
    }

    fn hits(&self) -> (usize, usize, usize) {
        (
            self.0.discovery_hits.load(Ordering::SeqCst),
            self.0.jwks_hits.load(Ordering::SeqCst),
            self.0.token_hits.load(Ordering::SeqCst),
        )
    }
}

type Shared = Arc<IssuerInner>;

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let b = &s.base;
    Json(json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        // Advertises `none` and HS256 too: latchkey must refuse them anyway.
        "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
    }))
}

async fn jwks(State(s): State<Shared>) -> Json<Value> {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = s
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.jwk.clone())
        .collect();
    Json(json!({ "keys": keys }))
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn redirect(to: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn authorize(State(s): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let p = query_map(q.as_deref());
    if p.get("client_id").map(String::as_str) != Some(s.client_id) {
        return (StatusCode::BAD_REQUEST, "unknown client").into_response();
    }
    let redirect_uri = p.get("redirect_uri").cloned().unwrap_or_default();
    let state = p.get("state").cloned().unwrap_or_default();
    let sc = s.scenario.lock().unwrap().clone();
    let mut back = Url::parse(&redirect_uri).expect("redirect_uri is a URL");
    if sc.deny {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &state);
        return redirect(back.to_string());
    }
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    s.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            redirect_uri,
            nonce: p.get("nonce").cloned(),
            code_challenge: p.get("code_challenge").cloned().unwrap_or_default(),
            code_challenge_method: p.get("code_challenge_method").cloned().unwrap_or_default(),
        },
    );
    let iss = sc.response_iss.unwrap_or_else(|| s.base.clone());
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state)
        .append_pair("iss", &iss);
    redirect(back.to_string())
}

fn token_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    s.token_hits.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    *s.last_token_request.lock().unwrap() = Some((auth.clone(), form.clone()));
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", s.client_id, s.client_secret))
    );
    if auth.as_deref() != Some(expected.as_str()) {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // Codes are single use.
    let Some(grant) = form
        .get("code")
        .and_then(|c| s.codes.lock().unwrap().remove(c))
    else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if grant.code_challenge_method != "S256"
        || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.code_challenge
    {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let sc = s.scenario.lock().unwrap().clone();
    let signer: &'static TestKey = *s.signer.lock().unwrap();
    let id_token = make_id_token(&s, &sc, grant.nonce.as_deref(), signer);
    Json(json!({ "access_token": "opaque-access-token", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token })).into_response()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn make_id_token(
    issuer: &IssuerInner,
    sc: &Scenario,
    nonce: Option<&str>,
    signer: &'static TestKey,
) -> String {
    let t = now();
    let mut claims = json!({
        "iss": issuer.base, "sub": sc.sub, "aud": issuer.client_id, "azp": issuer.client_id,
        "iat": t, "exp": t + 300, "email_verified": sc.email_verified,
    });
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    if let Some(e) = &sc.email {
        claims["email"] = json!(e);
    }
    if let Some(n) = &sc.name {
        claims["name"] = json!(n);
    }
    let obj = claims.as_object_mut().unwrap();
    for (k, v) in &sc.overrides {
        if v.is_null() {
            obj.remove(*k);
        } else {
            obj.insert((*k).to_owned(), v.clone());
        }
    }
    let rs256 = |key: &TestKey, kid: &str| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, &claims, &key.encoding).unwrap()
    };
    match sc.token {
        TokenKind::Good => rs256(signer, signer.kid),
        TokenKind::UnknownKid => rs256(signer, "forged-kid"),
        TokenKind::ForeignKey => {
            let other: &TestKey = if signer.kid == KEY_A.kid {
                &KEY_B
            } else {
                &KEY_A
            };
            rs256(other, signer.kid)
        }
        TokenKind::Tampered => {
            let good = rs256(signer, signer.kid);
            let parts: Vec<&str> = good.split('.').collect();
            let mut payload: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            payload["sub"] = json!("someone-else");
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
                parts[2]
            )
        }
        TokenKind::AlgNone => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            format!(
                "{header}.{}.",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
            )
        }
        TokenKind::Hs256ClientSecret => jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(issuer.client_secret.as_bytes()),
        )
        .unwrap(),
    }
}

// ---------------------------------------------------------------------------------------
// latchkey with Google pointed at an issuer

/// A latchkey and the provider its tests sign in through.
struct App {
    app: Arc<TestApp>,
    via: Via,
}

impl std::ops::Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl App {
    /// The same latchkey, signing in through another of its providers.
    fn through(&self, via: Via) -> App {
        App {
            app: self.app.clone(),
            via,
        }
    }
}

async fn app_for(via: Via, issuer: &str) -> App {
    app_for_with(via, issuer, |_| {}).await
}

async fn app_for_with(via: Via, issuer: &str, tweak: impl FnOnce(&mut latchkey::Config)) -> App {
    let issuer = issuer.to_owned();
    let app = spawn_with_addr(move |cfg, addr| {
        tweak(cfg);
        cfg.public_url = format!("http://{addr}");
        cfg.public_origin = cfg.public_url.clone();
        cfg.allowed_origins = vec![cfg.public_url.clone()];
        via.configure(cfg, issuer);
    })
    .await;
    App {
        app: Arc::new(app),
        via,
    }
}

async fn setup(via: Via) -> (Issuer, App) {
    let issuer = Issuer::start(via).await;
    let app = app_for(via, issuer.base()).await;
    (issuer, app)
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(header::LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The OAuth state cookie value the response set.
fn state_cookie(res: &reqwest::Response) -> String {
    set_cookies(res.headers())
        .into_iter()
        .find(|(n, v, cleared)| n == "oauth_state" && !v.is_empty() && !cleared)
        .map(|(_, v, _)| v)
        .expect("the OAuth state cookie is set")
}

struct Started {
    authorize: Url,
    params: HashMap<String, String>,
    cookie: String,
}

/// `GET {provider's base}/login?{query}` (query sent as written).
async fn start(app: &App, query: &str) -> Started {
    let path = if query.is_empty() {
        app.via.login_path()
    } else {
        format!("{}?{query}", app.via.login_path())
    };
    let res = app.http.get(app.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), 302, "login starts with a redirect");
    let authorize = Url::parse(&location(&res)).expect("an absolute authorization URL");
    let params = authorize.query_pairs().into_owned().collect();
    let cookie = state_cookie(&res);
    Started {
        authorize,
        params,
        cookie,
    }
}

/// Plays the provider's part: the authorization endpoint's redirect back to latchkey.
async fn authorize_at(app: &TestApp, started: &Started) -> Url {
    let res = app
        .http
        .get(started.authorize.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "the test issuer redirects back");
    Url::parse(&location(&res)).unwrap()
}

async fn callback(app: &TestApp, url: &Url, cookie: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(url.clone());
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("oauth_state={c}"));
    }
    req.send().await.unwrap()
}

/// A whole sign-in: start (with `query`), the provider's redirect, the callback.
async fn sign_in(app: &App, query: &str) -> reqwest::Response {
    let started = start(app, query).await;
    let back = authorize_at(app, &started).await;
    callback(app, &back, Some(&started.cookie)).await
}

fn assert_no_auth_cookies(res: &reqwest::Response) {
    for line in set_cookie_lines(res.headers()) {
        assert!(
            !line.contains("access_token") && !line.contains("refresh_token"),
            "no auth cookie may be set or cleared: {line}"
        );
    }
}

/// The provider whose route answered `res`: its routes' prefix (the state cookie's path),
/// and its name when it is a named provider.
fn answered_by(res: &reqwest::Response) -> (String, Option<String>) {
    let path = res.url().path();
    let base = path
        .rsplit_once('/')
        .expect("a provider route")
        .0
        .to_owned();
    let named = base.strip_prefix("/api/v1/auth/oidc/").map(str::to_owned);
    (base, named)
}

/// The state cookie of the provider whose route answered is cleared, under its own path.
fn assert_state_cleared(res: &reqwest::Response) {
    let (base, _) = answered_by(res);
    let lines = set_cookie_lines(res.headers());
    assert!(
        lines.iter().any(|l| l.starts_with("oauth_state=;")
            && l.contains("Max-Age=0")
            && l.split("; ").any(|a| a == format!("Path={base}"))),
        "state cookie cleared under {base}: {lines:?}"
    );
}

/// Ends on `/login?error=CODE` (plus `&provider=NAME` from a named provider), with no auth
/// cookies, the state cookie cleared, no-store.
fn assert_failed(res: &reqwest::Response, code: &str) {
    assert_eq!(res.status(), 302, "failure is a redirect ({code})");
    let expected = match answered_by(res).1 {
        None => format!("/login?error={code}"),
        Some(name) => format!("/login?error={code}&provider={name}"),
    };
    assert_eq!(location(res), expected);
    assert_no_auth_cookies(res);
    assert_state_cleared(res);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
}

/// Signed in: redirected to `next`, both auth cookies set, state cookie cleared.
fn assert_signed_in(res: &reqwest::Response, next: &str) -> Jar {
    assert_eq!(res.status(), 302);
    assert_eq!(location(res), next, "redirected to next");
    assert_state_cleared(res);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    let mut jar = Jar::default();
    jar.update(res.headers());
    assert!(
        jar.access.is_some() && jar.refresh.is_some(),
        "auth cookies set: {:?}",
        set_cookie_lines(res.headers())
    );
    jar
}

async fn me(app: &TestApp, jar: &Jar) -> Value {
    let res = app.get("/api/v1/me", jar).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn user_count(app: &TestApp) -> usize {
    app.state.store().list_users().await.unwrap().len()
}

// ---------------------------------------------------------------------------------------
// Configuration and the authorization request

#[tokio::test]
async fn google_off_answers_404_provider_not_configured() {
    let app = common::spawn().await;
    for path in [
        "/api/v1/auth/google/login?next=/account",
        "/api/v1/auth/google/callback?code=x&state=y",
        "/api/v1/auth/oidc/corp/login?next=/account",
        "/api/v1/auth/oidc/corp/callback?code=x&state=y",
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        common::assert_problem(res, 404, "provider_not_configured").await;
    }
}

#[tokio::test]
async fn unknown_provider_names_answer_404_provider_not_configured() {
    // Only `corp` is configured. Google's preset lives at its own routes only.
    let (_issuer, app) = setup(Via::Named).await;
    for name in [
        "other", "google", "CORP", "corp-", "corp%2Fx", "%FF", "corp%00",
    ] {
        for end in ["login?next=/account", "callback?code=x&state=y"] {
            let path = format!("/api/v1/auth/oidc/{name}/{end}");
            let res = app.http.get(app.url(&path)).send().await.unwrap();
            assert!(set_cookie_lines(res.headers()).is_empty(), "{path}");
            common::assert_problem(res, 404, "provider_not_configured").await;
        }
    }
    let res = app
        .http
        .get(app.url("/api/v1/auth/google/login"))
        .send()
        .await
        .unwrap();
    common::assert_problem(res, 404, "provider_not_configured").await;
}

#[tokio::test]
async fn openapi_documents_both_routes() {
    let app = common::spawn().await;
    let doc: Value = app.get_json("/api/v1/openapi.json").await;
    for p in [
        "/api/v1/auth/google/login",
        "/api/v1/auth/google/callback",
        "/api/v1/auth/oidc/{name}/login",
        "/api/v1/auth/oidc/{name}/callback",
    ] {
        let op = &doc["paths"][p]["get"];
        assert!(
            op["responses"]["302"].is_object() && op["responses"]["404"].is_object(),
            "{p} documented with its 302 and 404"
        );
        if p.contains("{name}") {
            let params = op["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|x| x["name"] == "name" && x["in"] == "path" && x["required"] == true),
                "{p}: the name parameter"
            );
        }
    }
}

async fn authorization_redirect_carries_every_parameter(via: Via) {
    let (issuer, app) = setup(via).await;
    let res = app
        .http
        .get(app.url(&format!("{}?next=%2Faccount", via.login_path())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");

    let url = Url::parse(&location(&res)).unwrap();
    assert_eq!(
        format!("{}{}", url.origin().ascii_serialization(), url.path()),
        format!("{}/authorize", issuer.base()),
        "the discovered authorization endpoint"
    );
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let p: HashMap<String, String> = pairs.iter().cloned().collect();
    assert_eq!(p.len(), pairs.len(), "no parameter is repeated: {pairs:?}");
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["scope"], "openid email profile");
    assert_eq!(p["client_id"], via.client_id());
    assert_eq!(
        p["redirect_uri"],
        format!("{}{}", app.base, via.callback_path()),
        "exact redirect_uri = PUBLIC_URL + callback"
    );
    assert_eq!(p["code_challenge_method"], "S256");
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    assert!(
        p["code_challenge"].len() == 43 && b64url(&p["code_challenge"]),
        "S256 challenge: base64url of 32 bytes"
    );
    assert!(
        p["state"].len() >= 22 && b64url(&p["state"]),
        "state: at least 128 random bits"
    );
    assert!(
        p["nonce"].len() >= 22 && b64url(&p["nonce"]),
        "nonce: at least 128 random bits"
    );
    assert_ne!(p["state"], p["nonce"]);
    let expected: std::collections::BTreeSet<&str> = [
        "response_type",
        "scope",
        "client_id",
        "redirect_uri",
        "code_challenge",
        "code_challenge_method",
        "state",
        "nonce",
    ]
    .into();
    assert_eq!(
        p.keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        expected,
        "nothing else is sent"
    );

    // The state cookie: SPEC 3's attributes; sealed, so nothing of the attempt shows.
    let lines = set_cookie_lines(res.headers());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let mut attrs: Vec<&str> = lines[0].split("; ").skip(1).collect();
    attrs.sort();
    assert_eq!(
        attrs,
        [
            "HttpOnly",
            "Max-Age=600",
            &format!("Path={}", via.base()),
            "SameSite=Lax"
        ]
    );
    let cookie = state_cookie(&res);
    for secret in [&p["state"], &p["nonce"], &p["code_challenge"]] {
        assert!(!cookie.contains(secret.as_str()));
    }
    let decoded =
        String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(&cookie).expect("base64url cookie"))
            .into_owned();
    assert!(
        !decoded.contains("/account") && !decoded.contains(p["state"].as_str()),
        "the cookie is encrypted"
    );

    // Fresh values per attempt.
    let again = start(&app, "").await;
    for k in ["state", "nonce", "code_challenge"] {
        assert_ne!(again.params[k], p[k], "{k} is fresh per attempt");
    }
    assert_ne!(again.cookie, cookie);
}

async fn unreachable_provider_fails_cleanly_and_does_not_block_start(via: Via) {
    // Nothing listens there: start-up must not care, sign-in must fail with oauth_failed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = app_for(via, &dead).await;
    let res = app
        .http
        .get(app.url(&format!("{}?next=/account", via.login_path())))
        .send()
        .await
        .unwrap();
    assert_failed(&res, "oauth_failed");
    // Password sign-in is unaffected.
    app.signup(&common::unique_email("pw")).await;
}

// ---------------------------------------------------------------------------------------
// Success paths (test issuer)

async fn first_sign_in_creates_a_user_and_issues_working_cookies(via: Via) {
    let (issuer, app) = setup(via).await;
    let sc = issuer.current();
    let res = sign_in(&app, "next=%2Faccount%3Ftab%3Dsessions").await;
    let mut jar = assert_signed_in(&res, "/account?tab=sessions");

    let user = me(&app, &jar).await;
    assert_eq!(user["email"], sc.email.clone().unwrap());
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["name"], "Grace Hopper");
    assert_eq!(user["providers"], json!([via.method()]));

    // The code exchange: HTTP Basic client authentication, the PKCE verifier, the exact
    // redirect_uri (the issuer refuses otherwise; checked here too).
    let (auth, form) = issuer.0.last_token_request.lock().unwrap().clone().unwrap();
    assert!(auth.unwrap().starts_with("Basic "));
    assert_eq!(
        form["redirect_uri"],
        format!("{}{}", app.base, via.callback_path())
    );
    assert!(form["code_verifier"].len() >= 43);
    assert!(
        !form.contains_key("client_secret"),
        "the secret travels in the Authorization header only"
    );

    // The cookies are the same as a password login's: refresh works.
    let (status, _) = app.refresh(&mut jar).await;
    assert_eq!(status, 200);
    assert_eq!(me(&app, &jar).await["id"], user["id"]);

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let method = match via {
        Via::Google => "google",
        Via::Named => "oidc",
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&format!("latchkey_logins_total{{method=\"{method}\"}}"))),
        "{method} logins counted"
    );

    // Discovery and JWKS were fetched once, for both requests.
    let again = sign_in(&app, "").await;
    assert_signed_in(&again, "/");
    let (discovery, jwks, _) = issuer.hits();
    assert_eq!(
        (discovery, jwks),
        (1, 1),
        "discovery document and keys are cached"
    );
}

async fn users_are_keyed_on_subject_not_email(via: Via) {
    let (issuer, app) = setup(via).await;
    let first = me(&app, &assert_signed_in(&sign_in(&app, "").await, "/")).await;
    // Same Google account, new email address: same user.
    issuer.scenario(|s| s.email = Some(common::unique_email("renamed")));
    let second = me(&app, &assert_signed_in(&sign_in(&app, "").await, "/")).await;
    assert_eq!(first["id"], second["id"]);
    // Another Google account: another user.
    issuer.scenario(|s| *s = Scenario::default());
    let third = me(&app, &assert_signed_in(&sign_in(&app, "").await, "/")).await;
    assert_ne!(first["id"], third["id"]);
    assert_eq!(user_count(&app).await, 2);
}

async fn verified_google_email_links_the_existing_password_account(via: Via) {
    let issuer = Issuer::start(via).await;
    // Polling the store would only notice the revocation later: with a long poll interval,
    // the squatter's token must still be refused at once (finding 7 of issue 9).
    let app = app_for_with(via, issuer.base(), |c| {
        c.poll_interval = std::time::Duration::from_secs(3600)
    })
    .await;
    let email = common::unique_email("linked");
    let pw_jar = app.signup(&email).await;
    let before = me(&app, &pw_jar).await;
    assert_eq!(before["providers"], json!(["password"]));

    // Google's address in another case and with spaces canonicalises to the same email.
    issuer.scenario(|s| s.email = Some(format!("  {}  ", email.to_uppercase())));
    let jar = assert_signed_in(&sign_in(&app, "").await, "/");
    let after = me(&app, &jar).await;
    assert_eq!(after["id"], before["id"], "same account");
    assert_eq!(
        after["email_verified"], true,
        "Google vouched for the address"
    );
    assert_eq!(user_count(&app).await, 1);
    // Nobody had proven owning the address before Google did: the password set at signup
    // (possibly by a squatter) is removed and its sessions are revoked.
    assert_eq!(after["providers"], json!([via.method()]));
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": common::PASSWORD}),
        )
        .await;
    assert_eq!(
        res.status(),
        401,
        "the pre-existing password no longer signs in"
    );
    // Finding 7 (issue 9): the linking instance refuses the squatter's access token at
    // once, not after its next poll of the store.
    assert_eq!(
        app.me_status(&pw_jar).await,
        401,
        "the squatter's session is revoked at once"
    );
    assert_eq!(app.me_status(&jar).await, 200, "the Google session works");
}

/// The verification link the development outbox holds for `email` (the test app has no
/// `SMTP_URL`), as `/dev/mail` would show it.
async fn verification_token_in_outbox(app: &TestApp, email: &str) -> String {
    let prefix = format!("{}/verify-email#token=", app.state.config().public_url);
    app.state
        .store()
        .recent_mail(50)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| app.state.mailer().open(e))
        .filter(|m| m.to == email)
        .flat_map(|m| m.links)
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("a verification link for {email} in the outbox"))
}

async fn verified_google_email_links_to_a_verified_password_account_and_keeps_its_password(
    via: Via,
) {
    let issuer = Issuer::start(via).await;
    // A long poll interval: a revocation would have to be marked at once to show.
    let app = app_for_with(via, issuer.base(), |c| {
        c.poll_interval = std::time::Duration::from_secs(3600)
    })
    .await;
    let email = common::unique_email("owner");
    let mut pw_jar = app.signup(&email).await;
    // The owner proves the address to latchkey first (SPEC 10).
    let token = verification_token_in_outbox(&app, &email).await;
    let res = app
        .post_json("/api/v1/auth/email/verify", &json!({"token": token}))
        .await;
    assert_eq!(res.status(), 200);
    let before = me(&app, &pw_jar).await;
    assert_eq!(before["email_verified"], true);
    assert_eq!(before["providers"], json!(["password"]));

    issuer.scenario(|s| s.email = Some(email.clone()));
    let jar = assert_signed_in(&sign_in(&app, "").await, "/");
    let after = me(&app, &jar).await;
    assert_eq!(after["id"], before["id"], "same account");
    assert_eq!(user_count(&app).await, 1);
    let mut providers: Vec<String> = serde_json::from_value(after["providers"].clone()).unwrap();
    providers.sort();
    let mut expected = [via.method(), "password"];
    expected.sort();
    assert_eq!(providers, expected, "both sign-in methods");

    // The password and the earlier session survive the link.
    assert_eq!(app.me_status(&pw_jar).await, 200, "the earlier session");
    assert_eq!(
        app.refresh(&mut pw_jar).await.0,
        200,
        "and its refresh token"
    );
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": common::PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 200, "the password still signs in");
    let sessions: Value = app
        .get("/api/v1/auth/sessions", &jar)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        3,
        "signup, Google and the new password sign-in: {sessions}"
    );
    // And Google again signs in as the same account.
    let again = assert_signed_in(&sign_in(&app, "").await, "/");
    assert_eq!(me(&app, &again).await["id"], before["id"]);
}

async fn unverified_google_email_matching_an_account_is_refused(via: Via) {
    let (issuer, app) = setup(via).await;
    let email = common::unique_email("victim");
    let pw_jar = app.signup(&email).await;
    issuer.scenario(|s| {
        s.email = Some(email.clone());
        s.email_verified = json!(false);
    });
    assert_failed(&sign_in(&app, "").await, "email_not_verified");
    assert_eq!(
        me(&app, &pw_jar).await["providers"],
        json!(["password"]),
        "nothing linked"
    );
    assert_eq!(user_count(&app).await, 1);
    // Once Google says it is verified, the same Google account links.
    issuer.scenario(|s| s.email_verified = json!(true));
    assert_signed_in(&sign_in(&app, "").await, "/");
}

async fn unverified_google_email_without_an_account_creates_no_user(via: Via) {
    let (issuer, app) = setup(via).await;
    issuer.scenario(|s| s.email_verified = json!(false));
    assert_failed(&sign_in(&app, "").await, "email_not_verified");
    assert_eq!(
        user_count(&app).await,
        0,
        "no account squats an unverified address"
    );
}

async fn string_email_verified_is_understood(via: Via) {
    // Some Google tokens have carried "true" as a string.
    let (issuer, app) = setup(via).await;
    issuer.scenario(|s| s.email_verified = json!("true"));
    let jar = assert_signed_in(&sign_in(&app, "").await, "/");
    assert_eq!(me(&app, &jar).await["email_verified"], true);
}

async fn disabled_user_cannot_sign_in_with_google(via: Via) {
    let (_issuer, app) = setup(via).await;
    let jar = assert_signed_in(&sign_in(&app, "").await, "/");
    let id: latchkey::domain::UserId = me(&app, &jar).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        app.state
            .store()
            .set_user_disabled(id, Some(1), &[])
            .await
            .unwrap()
    );
    assert_failed(&sign_in(&app, "").await, "oauth_failed");
}

async fn new_signing_key_is_fetched_once_and_forged_kids_are_rate_limited(via: Via) {
    let (issuer, app) = setup(via).await;
    assert_signed_in(&sign_in(&app, "").await, "/");
    assert_eq!(issuer.hits().1, 1);
    // The provider rotates its key: the unknown kid triggers one JWKS refetch.
    issuer.rotate_to(&KEY_B);
    assert_signed_in(&sign_in(&app, "").await, "/");
    assert_eq!(issuer.hits().1, 2, "refetched for the new kid");
    // A forged kid right after: refused without hitting the provider again.
    issuer.scenario(|s| s.token = TokenKind::UnknownKid);
    for _ in 0..3 {
        assert_failed(&sign_in(&app, "").await, "oauth_failed");
    }
    assert_eq!(issuer.hits().1, 2, "JWKS refetch is rate-limited");
    // The known key keeps working.
    issuer.scenario(|s| s.token = TokenKind::Good);
    assert_signed_in(&sign_in(&app, "").await, "/");
}

// ---------------------------------------------------------------------------------------
// ID tokens that must be refused

async fn assert_token_refused(via: Via, tweak: impl FnOnce(&mut Scenario)) {
    let (issuer, app) = setup(via).await;
    issuer.scenario(tweak);
    let res = sign_in(&app, "next=%2Faccount").await;
    assert_failed(&res, "oauth_failed");
    assert_eq!(user_count(&app).await, 0, "nothing of the token was used");
    assert_eq!(issuer.hits().2, 1, "the code was exchanged once");
}

async fn wrong_audience_is_refused(via: Via) {
    assert_token_refused(via, |s| s.overrides.push(("aud", json!("another-client")))).await;
}

async fn untrusted_extra_audience_is_refused(via: Via) {
    assert_token_refused(via, |s| {
        s.overrides
            .push(("aud", json!([via.client_id(), "another-client"])))
    })
    .await;
}

async fn several_audiences_without_azp_are_refused(via: Via) {
    assert_token_refused(via, |s| {
        s.overrides
            .push(("aud", json!([via.client_id(), "another-client"])));
        s.overrides.push(("azp", Value::Null));
    })
    .await;
}

async fn foreign_azp_is_refused(via: Via) {
    assert_token_refused(via, |s| s.overrides.push(("azp", json!("another-client")))).await;
}

async fn wrong_issuer_is_refused(via: Via) {
    assert_token_refused(via, |s| {
        s.overrides.push(("iss", json!("https://evil.example")))
    })
    .await;
}

async fn googles_bare_issuer_spelling_is_refused_for_other_issuers(via: Via) {
    assert_token_refused(via, |s| {
        s.overrides.push(("iss", json!("accounts.google.com")))
    })
    .await;
}

async fn expired_token_is_refused(via: Via) {
    assert_token_refused(via, |s| {
        s.overrides.push(("exp", json!(now() - 5)));
        s.overrides.push(("iat", json!(now() - 305)));
    })
    .await;
}

async fn token_issued_in_the_future_is_refused(via: Via) {
    assert_token_refused(via, |s| s.overrides.push(("iat", json!(now() + 3600)))).await;
}

async fn token_issued_long_ago_is_refused(via: Via) {
    assert_token_refused(via, |s| {
        s.overrides.push(("iat", json!(now() - 86_400)));
        s.overrides.push(("exp", json!(now() + 300)));
    })
    .await;
}

async fn wrong_nonce_is_refused(via: Via) {
    assert_token_refused(via, |s| {
        s.overrides.push(("nonce", json!("not-the-nonce-we-sent")))
    })
    .await;
}

async fn missing_nonce_is_refused(via: Via) {
    assert_token_refused(via, |s| s.overrides.push(("nonce", Value::Null))).await;
}

async fn tampered_payload_is_refused(via: Via) {
    assert_token_refused(via, |s| s.token = TokenKind::Tampered).await;
}

async fn signature_by_another_key_is_refused(via: Via) {
    assert_token_refused(via, |s| s.token = TokenKind::ForeignKey).await;
}

async fn alg_none_is_refused(via: Via) {
    assert_token_refused(via, |s| s.token = TokenKind::AlgNone).await;
}

async fn hs256_signed_with_the_client_secret_is_refused(via: Via) {
    assert_token_refused(via, |s| s.token = TokenKind::Hs256ClientSecret).await;
}

async fn token_without_email_is_refused(via: Via) {
    assert_token_refused(via, |s| s.email = None).await;
}

// ---------------------------------------------------------------------------------------
// State, replay, provider errors

async fn state_mismatch_is_refused(via: Via) {
    let (issuer, app) = setup(via).await;
    let started = start(&app, "").await;
    let mut back = authorize_at(&app, &started).await;
    let pairs: Vec<(String, String)> = back
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, format!("{v}x"))
            } else {
                (k, v)
            }
        })
        .collect();
    back.query_pairs_mut().clear().extend_pairs(pairs);
    assert_failed(
        &callback(&app, &back, Some(&started.cookie)).await,
        "oauth_state_mismatch",
    );
    assert_eq!(
        issuer.hits().2,
        0,
        "no code exchange without a matching state"
    );
}

async fn missing_state_cookie_is_refused(via: Via) {
    let (issuer, app) = setup(via).await;
    let started = start(&app, "").await;
    let back = authorize_at(&app, &started).await;
    assert_failed(&callback(&app, &back, None).await, "oauth_state_mismatch");
    assert_failed(
        &callback(&app, &back, Some("")).await,
        "oauth_state_mismatch",
    );
    assert_eq!(issuer.hits().2, 0);
}

async fn missing_state_parameter_is_refused(via: Via) {
    let (_issuer, app) = setup(via).await;
    let started = start(&app, "").await;
    let back = authorize_at(&app, &started).await;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let url = Url::parse(&app.url(&format!("{}?code={code}", via.callback_path()))).unwrap();
    assert_failed(
        &callback(&app, &url, Some(&started.cookie)).await,
        "oauth_state_mismatch",
    );
}

async fn forged_or_tampered_state_cookie_is_refused(via: Via) {
    let (_issuer, app) = setup(via).await;
    let started = start(&app, "").await;
    let back = authorize_at(&app, &started).await;
    let mut raw = URL_SAFE_NO_PAD.decode(&started.cookie).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    assert_failed(
        &callback(&app, &back, Some(&URL_SAFE_NO_PAD.encode(&raw))).await,
        "oauth_state_mismatch",
    );
    // A cookie in clear text with the right state is not ours either.
    let state = back
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let forged = URL_SAFE_NO_PAD
        .encode(json!({"s": state, "n": "x", "v": "y", "r": "/", "e": i64::MAX}).to_string());
    assert_failed(
        &callback(&app, &back, Some(&forged)).await,
        "oauth_state_mismatch",
    );
    // The genuine cookie still works afterwards: failures did not consume it.
    assert_signed_in(&callback(&app, &back, Some(&started.cookie)).await, "/");
}

async fn state_cookie_of_another_attempt_is_refused(via: Via) {
    let (_issuer, app) = setup(via).await;
    let first = start(&app, "").await;
    let second = start(&app, "").await;
    let back = authorize_at(&app, &second).await;
    assert_failed(
        &callback(&app, &back, Some(&first.cookie)).await,
        "oauth_state_mismatch",
    );
}

async fn state_cookie_from_another_latchkey_is_refused(via: Via) {
    // Another deployment (another key) cannot mint state cookies for this one.
    let (issuer, app) = setup(via).await;
    let other = app_for(via, issuer.base()).await;
    let foreign = start(&other, "").await;
    let back = authorize_at(&other, &foreign).await;
    let mut to_app = back.clone();
    to_app.set_port(Some(app.addr.port())).unwrap();
    assert_failed(
        &callback(&app, &to_app, Some(&foreign.cookie)).await,
        "oauth_state_mismatch",
    );
}

async fn replayed_callback_is_refused(via: Via) {
    let (issuer, app) = setup(via).await;
    let started = start(&app, "").await;
    let back = authorize_at(&app, &started).await;
    assert_signed_in(&callback(&app, &back, Some(&started.cookie)).await, "/");
    // Same URL, same (still unexpired) state cookie: refused before any code exchange.
    let replay = callback(&app, &back, Some(&started.cookie)).await;
    assert_failed(&replay, "oauth_state_mismatch");
    assert_eq!(
        issuer.hits().2,
        1,
        "the replay did not reach the token endpoint"
    );
}

async fn state_is_consumed_even_when_the_attempt_fails(via: Via) {
    let (issuer, app) = setup(via).await;
    issuer.scenario(|s| s.token = TokenKind::Tampered);
    let started = start(&app, "").await;
    let back = authorize_at(&app, &started).await;
    assert_failed(
        &callback(&app, &back, Some(&started.cookie)).await,
        "oauth_failed",
    );
    issuer.scenario(|s| s.token = TokenKind::Good);
    assert_failed(
        &callback(&app, &back, Some(&started.cookie)).await,
        "oauth_state_mismatch",
    );
}

async fn provider_error_is_oauth_denied(via: Via) {
    let (issuer, app) = setup(via).await;
    issuer.scenario(|s| s.deny = true);
    let res = sign_in(&app, "next=%2Faccount").await;
    assert_failed(&res, "oauth_denied");
    assert_eq!(issuer.hits().2, 0);
}

async fn provider_error_without_our_state_is_a_state_mismatch(via: Via) {
    // A forged error redirect (no state cookie) is not reported as the user's decision.
    let (_issuer, app) = setup(via).await;
    let url = Url::parse(&app.url(&format!(
        "{}?error=access_denied&state=whatever",
        via.callback_path()
    )))
    .unwrap();
    assert_failed(&callback(&app, &url, None).await, "oauth_state_mismatch");
}

async fn authorization_response_from_another_issuer_is_refused(via: Via) {
    // RFC 9207 mix-up defence: the `iss` parameter, when present, must name our issuer.
    let (issuer, app) = setup(via).await;
    issuer.scenario(|s| s.response_iss = Some("https://evil.example".into()));
    assert_failed(&sign_in(&app, "").await, "oauth_failed");
    assert_eq!(issuer.hits().2, 0);
}

async fn callback_without_code_fails(via: Via) {
    let (_issuer, app) = setup(via).await;
    let started = start(&app, "").await;
    let state = &started.params["state"];
    let url = Url::parse(&app.url(&format!("{}?state={state}", via.callback_path()))).unwrap();
    assert_failed(
        &callback(&app, &url, Some(&started.cookie)).await,
        "oauth_failed",
    );
}

async fn rejected_code_at_the_token_endpoint_fails(via: Via) {
    let (_issuer, app) = setup(via).await;
    let started = start(&app, "").await;
    let back = authorize_at(&app, &started).await;
    let pairs: Vec<(String, String)> = back
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "code" {
                (k, "code-unknown".into())
            } else {
                (k, v)
            }
        })
        .collect();
    let mut wrong = back.clone();
    wrong.query_pairs_mut().clear().extend_pairs(pairs);
    assert_failed(
        &callback(&app, &wrong, Some(&started.cookie)).await,
        "oauth_failed",
    );
}

// ---------------------------------------------------------------------------------------
// next

async fn open_redirect_attempts_end_at_root(via: Via) {
    let (_issuer, app) = setup(via).await;
    let attempts = [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "%2f%2fevil.example",
        "/%2F/evil.example",
        "/%252F%252Fevil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "\\\\evil.example",
        "/..//evil.example",
        "/a\r\nSet-Cookie: x=1",
        "",
    ];
    for attempt in attempts {
        // As the server sees it (form-encoded once on the wire)…
        let encoded: String = url::form_urlencoded::byte_serialize(attempt.as_bytes()).collect();
        assert_signed_in(&sign_in(&app, &format!("next={encoded}")).await, "/");
        // …and written into the query as is (where a URL allows it).
        if !attempt.contains(['\r', '\n']) {
            assert_signed_in(&sign_in(&app, &format!("next={attempt}")).await, "/");
        }
    }
    // Repeated next: ambiguous, so `/`.
    assert_signed_in(&sign_in(&app, "next=%2Fa&next=%2Fb").await, "/");
    // No next at all.
    assert_signed_in(&sign_in(&app, "").await, "/");
}

async fn same_origin_next_is_honoured(via: Via) {
    let (_issuer, app) = setup(via).await;
    for (sent, expected) in [
        ("%2Faccount", "/account"),
        ("%2Fa%2Fb%3Fx%3D1%23frag", "/a/b?x=1#frag"),
        ("%2Fcaf%C3%A9", "/caf%C3%A9"),
    ] {
        assert_signed_in(&sign_in(&app, &format!("next={sent}")).await, expected);
    }
}

// ---------------------------------------------------------------------------------------
// Provider isolation (SPEC 13): Google and a named provider in one latchkey, each at its
// own issuer with its own client. Both issuers publish the same signing key, so nothing
// but latchkey's checks keeps one provider's answers out of the other's flow.

async fn setup_both() -> (Issuer, Issuer, App, App) {
    let google = Issuer::start(Via::Google).await;
    let corp = Issuer::start(Via::Named).await;
    let corp_base = corp.base().to_owned();
    let app = app_for_with(Via::Google, google.base(), move |cfg| {
        Via::Named.configure(cfg, corp_base)
    })
    .await;
    let named = app.through(Via::Named);
    (google, corp, app, named)
}

fn token_hits(issuers: &[&Issuer]) -> usize {
    issuers.iter().map(|i| i.hits().2).sum()
}

#[tokio::test]
async fn the_same_subject_at_two_providers_is_two_identities() {
    let (google, corp, g_app, c_app) = setup_both().await;
    // The same `sub` at both issuers, each with its own address.
    google.scenario(|s| s.sub = "shared-subject".into());
    corp.scenario(|s| s.sub = "shared-subject".into());
    let g_user = me(&g_app, &assert_signed_in(&sign_in(&g_app, "").await, "/")).await;
    let c_user = me(&c_app, &assert_signed_in(&sign_in(&c_app, "").await, "/")).await;
    assert_ne!(g_user["id"], c_user["id"], "two people");
    assert_eq!(g_user["providers"], json!(["google"]));
    assert_eq!(c_user["providers"], json!([NAMED]));
    let store = g_app.state.store();
    for (issuer, user) in [(&google, &g_user), (&corp, &c_user)] {
        let found = store
            .user_by_identity(issuer.base(), "shared-subject")
            .await
            .unwrap()
            .expect("identity keyed on (issuer, sub)");
        assert_eq!(json!(found.id.0.to_string()), user["id"]);
    }
    // Each signs in again as its own user.
    let again = me(&c_app, &assert_signed_in(&sign_in(&c_app, "").await, "/")).await;
    assert_eq!(again["id"], c_user["id"]);
    assert_eq!(user_count(&g_app).await, 2);
    // Each provider fetched its own discovery document and keys, once.
    for issuer in [&google, &corp] {
        let (discovery, jwks, _) = issuer.hits();
        assert_eq!((discovery, jwks), (1, 1), "{}", issuer.base());
    }

    // A third person at corp whose address is Google's user's: linked only once corp
    // vouches for the address, and then both providers sign in to that one account.
    corp.scenario(|s| {
        *s = Scenario::default();
        s.email = g_user["email"].as_str().map(str::to_owned);
        s.email_verified = json!(false);
    });
    assert_failed(&sign_in(&c_app, "").await, "email_not_verified");
    corp.scenario(|s| s.email_verified = json!(true));
    let linked = me(&c_app, &assert_signed_in(&sign_in(&c_app, "").await, "/")).await;
    assert_eq!(linked["id"], g_user["id"]);
    let mut providers: Vec<String> = serde_json::from_value(linked["providers"].clone()).unwrap();
    providers.sort();
    assert_eq!(providers, [NAMED, "google"]);
    assert_eq!(user_count(&g_app).await, 2);
}

#[tokio::test]
async fn a_state_cookie_of_one_provider_is_refused_at_another() {
    let (google, corp, g_app, c_app) = setup_both().await;
    for (from, to) in [(&g_app, &c_app), (&c_app, &g_app)] {
        let started = start(from, "").await;
        let back = authorize_at(from, &started).await;
        // The provider's answer and the attempt's cookie, replayed at the other callback.
        let mut elsewhere = Url::parse(&to.url(&to.via.callback_path())).unwrap();
        elsewhere.set_query(back.query());
        let before = token_hits(&[&google, &corp]);
        let res = callback(to, &elsewhere, Some(&started.cookie)).await;
        assert_failed(&res, "oauth_state_mismatch");
        assert_eq!(
            token_hits(&[&google, &corp]),
            before,
            "{:?} -> {:?}: no code exchanged",
            from.via,
            to.via
        );
        // The attempt was neither used nor spoiled there: its own callback still works.
        assert_signed_in(&callback(from, &back, Some(&started.cookie)).await, "/");
    }
}

#[tokio::test]
async fn a_code_of_one_provider_is_refused_at_another() {
    let (google, _corp, g_app, c_app) = setup_both().await;
    let g_started = start(&g_app, "").await;
    let g_back = authorize_at(&g_app, &g_started).await;
    let c_started = start(&c_app, "").await;
    let c_back = authorize_at(&c_app, &c_started).await;
    let code = |u: &Url| {
        u.query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    };
    // corp's own attempt (state, cookie, iss), with Google's code in it.
    let swapped: Vec<(String, String)> = c_back
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "code" {
                (k, code(&g_back))
            } else {
                (k, v)
            }
        })
        .collect();
    let mut wrong = c_back.clone();
    wrong.query_pairs_mut().clear().extend_pairs(swapped);
    assert_failed(
        &callback(&c_app, &wrong, Some(&c_started.cookie)).await,
        "oauth_failed",
    );
    assert_eq!(
        google.hits().2,
        0,
        "Google's token endpoint was never asked"
    );
    assert_eq!(user_count(&g_app).await, 0);
    // The code still works where it belongs.
    assert_signed_in(
        &callback(&g_app, &g_back, Some(&g_started.cookie)).await,
        "/",
    );
}

#[tokio::test]
async fn an_id_token_of_another_provider_is_refused() {
    let (google, corp, g_app, c_app) = setup_both().await;
    // Each issuer hands out a token that is the other's in every claim latchkey checks
    // against the provider: its issuer, its audience and authorized party. Signed with the
    // key both publish.
    for (app, issuer, other, other_via) in [
        (&c_app, &corp, &google, Via::Google),
        (&g_app, &google, &corp, Via::Named),
    ] {
        let (iss, aud) = (other.base().to_owned(), other_via.client_id());
        issuer.scenario(|s| {
            s.overrides.push(("iss", json!(iss)));
            s.overrides.push(("aud", json!(aud)));
            s.overrides.push(("azp", json!(aud)));
        });
        assert_failed(&sign_in(app, "").await, "oauth_failed");
        // Only its issuer: refused as well.
        issuer.scenario(|s| {
            s.overrides.clear();
            s.overrides.push(("iss", json!(iss)));
        });
        assert_failed(&sign_in(app, "").await, "oauth_failed");
    }
    assert_eq!(user_count(&g_app).await, 0);
}

// ---------------------------------------------------------------------------------------
// End to end against a real OpenID Provider (npm `oidc-provider`)

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// `npm ci` in tests/oidc when its node_modules is missing (once per test binary).
fn ensure_oidc_provider_installed() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = oidc_dir();
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("npm is required for the real-OpenID-Provider tests (install Node.js and npm): {e}"));
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *done = true;
}

/// A running `oidc-provider`; killed when dropped.
struct RealProvider {
    issuer: String,
    _child: tokio::process::Child,
}

/// An `oidc-provider` with latchkey's client for `via` registered.
async fn start_real_provider(via: Via, redirect_uri: &str) -> RealProvider {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    ensure_oidc_provider_installed();
    let mut child = tokio::process::Command::new("node")
        .arg("server.mjs")
        .current_dir(oidc_dir())
        .env("CLIENT_ID", via.client_id())
        .env("CLIENT_SECRET", via.client_secret())
        // Each provider its own addresses: the same login at two providers is two people.
        .env(
            "EMAIL_DOMAIN",
            match via {
                Via::Google => "example.com",
                Via::Named => "corp.example",
            },
        )
        .env("REDIRECT_URI", redirect_uri)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("node is required for the real-OpenID-Provider tests (install Node.js): {e}")
        });
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Drain stderr (oidc-provider's warnings) so the child never blocks on a full pipe.
    let errors = Arc::new(Mutex::new(String::new()));
    let sink = errors.clone();
    tokio::spawn(async move {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf).await;
        sink.lock().unwrap().push_str(&buf);
    });
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        panic!(
            "oidc-provider did not start: {read:?}\nstderr:\n{}",
            errors.lock().unwrap()
        );
    }
    // Keep reading its stdout too: a closed pipe would kill it at its next write.
    let sink = errors.clone();
    tokio::spawn(async move {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest).await;
        sink.lock().unwrap().push_str(&rest);
    });
    let v: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("unexpected first line {line:?}: {e}"));
    RealProvider {
        issuer: v["issuer"].as_str().unwrap().to_owned(),
        _child: child,
    }
}

/// A browser: one cookie jar for the provider and latchkey (both on 127.0.0.1), no
/// automatic redirects so that every hop is seen.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The first form of a page: its action and its inputs' names and values.
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form_start = html.find("<form")?;
    let form_end = html[form_start..].find("</form>").map(|i| form_start + i)?;
    let form = &html[form_start..form_end];
    let action = attr(&form[..form.find('>')?], "action")?.replace("&amp;", "&");
    let mut inputs = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = rest[i..].find('>').map(|j| i + j)?;
        let tag = &rest[i..tag_end];
        if let Some(name) = attr(tag, "name") {
            inputs.push((
                name.to_owned(),
                attr(tag, "value").unwrap_or_default().to_owned(),
            ));
        }
        rest = &rest[tag_end..];
    }
    Some((action, inputs))
}

enum Choice {
    /// Log in as this account and consent.
    Approve(String),
    /// Press "Cancel" at the provider.
    Cancel,
}

/// Drives the provider's pages from `start` until it redirects to latchkey's callback;
/// returns the callback's response (after following it in the browser).
async fn through_provider(
    b: &reqwest::Client,
    app: &TestApp,
    start: Url,
    choice: &Choice,
) -> reqwest::Response {
    let mut next = start;
    let mut post: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let res = match post.take() {
            Some(form) => b.post(next.clone()).form(&form).send().await.unwrap(),
            None => b.get(next.clone()).send().await.unwrap(),
        };
        if res.status().is_redirection() {
            let to = next.join(&location(&res)).unwrap();
            if to.path().ends_with("/callback")
                && to.origin() == Url::parse(&app.base).unwrap().origin()
            {
                return b.get(to).send().await.unwrap();
            }
            next = to;
            continue;
        }
        let status = res.status();
        let html = res.text().await.unwrap();
        assert_eq!(status, 200, "provider page at {next}: {html}");
        if let Choice::Cancel = choice {
            let i = html.find("[ Cancel ]").expect("a Cancel link");
            let href_start = html[..i].rfind("href=\"").unwrap() + 6;
            let href = &html[href_start..href_start + html[href_start..].find('"').unwrap()];
            next = next.join(&href.replace("&amp;", "&")).unwrap();
            continue;
        }
        let (action, mut inputs) =
            parse_form(&html).unwrap_or_else(|| panic!("a form at {next}: {html}"));
        if let Choice::Approve(login) = choice {
            for (name, value) in inputs.iter_mut() {
                match name.as_str() {
                    "login" => *value = login.clone(),
                    "password" => *value = "any password".into(),
                    _ => {}
                }
            }
        }
        next = next.join(&action).unwrap();
        post = Some(inputs);
    }
    panic!("the provider never redirected back to latchkey");
}

async fn real_setup() -> (TestApp, RealProvider) {
    // The app's address must be known before the provider registers its redirect URI, and
    // the provider's before the app is configured: bind the app's listener first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let provider = start_real_provider(
        Via::Google,
        &format!("http://{addr}{}", Via::Google.callback_path()),
    )
    .await;
    let issuer = provider.issuer.clone();
    let app = common::spawn_on(listener, move |cfg, addr| {
        cfg.public_url = format!("http://{addr}");
        cfg.public_origin = cfg.public_url.clone();
        cfg.allowed_origins = vec![cfg.public_url.clone()];
        cfg.google = Some(GoogleConfig {
            client_id: CLIENT_ID.into(),
            client_secret: SecretString::from(CLIENT_SECRET),
            issuer,
        });
    })
    .await;
    (app, provider)
}

#[tokio::test]
async fn end_to_end_with_a_real_openid_provider() {
    let (app, provider) = real_setup().await;
    let b = browser();
    let login = format!("ada-{}", uuid::Uuid::new_v4().simple());

    let res = b
        .get(app.url("/api/v1/auth/google/login?next=%2Faccount"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let authorize = Url::parse(&location(&res)).unwrap();
    assert!(
        authorize.as_str().starts_with(&provider.issuer),
        "to the real provider: {authorize}"
    );

    let done = through_provider(&b, &app, authorize, &Choice::Approve(login.clone())).await;
    let jar = assert_signed_in(&done, "/account");

    // The browser's cookie jar now holds latchkey's cookies: /me works with them alone.
    let me_res = b.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(me_res.status(), 200);
    let user: Value = me_res.json().await.unwrap();
    assert_eq!(user["email"], format!("{login}@example.com"));
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["name"], format!("Test {login}"));
    assert_eq!(user["providers"], json!(["google"]));
    assert_eq!(me(&app, &jar).await["id"], user["id"]);
    let refreshed = b
        .post(app.url("/api/v1/auth/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200, "the refresh cookie works too");

    // The identity is keyed on the provider's issuer and subject.
    let id: latchkey::domain::UserId = user["id"].as_str().unwrap().parse().unwrap();
    let by_identity = app
        .state
        .store()
        .user_by_identity(&provider.issuer, &login)
        .await
        .unwrap()
        .expect("identity stored");
    assert_eq!(by_identity.id, id);

    // Signing in again (the provider remembers the session and the consent) finds the same user.
    let b2 = b
        .get(app.url("/api/v1/auth/google/login"))
        .send()
        .await
        .unwrap();
    let done2 = through_provider(
        &b,
        &app,
        Url::parse(&location(&b2)).unwrap(),
        &Choice::Approve(login.clone()),
    )
    .await;
    let jar2 = assert_signed_in(&done2, "/");
    assert_eq!(me(&app, &jar2).await["id"], user["id"]);
    assert_eq!(user_count(&app).await, 1);
}

/// SPEC 13 against two real providers, one as Google's preset and one named: both sign in
/// end to end; the same login (`sub`) at each is a different person; one browser can have
/// an attempt open at each at once (each state cookie under its own path).
#[tokio::test]
async fn two_real_providers_sign_in_and_keep_their_identities_apart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let redirect = |via: Via| format!("http://{addr}{}", via.callback_path());
    let (g_redirect, c_redirect) = (redirect(Via::Google), redirect(Via::Named));
    let (google, corp) = tokio::join!(
        start_real_provider(Via::Google, &g_redirect),
        start_real_provider(Via::Named, &c_redirect),
    );
    let (g_issuer, c_issuer) = (google.issuer.clone(), corp.issuer.clone());
    let app = common::spawn_on(listener, move |cfg, addr| {
        cfg.public_url = format!("http://{addr}");
        cfg.public_origin = cfg.public_url.clone();
        cfg.allowed_origins = vec![cfg.public_url.clone()];
        Via::Google.configure(cfg, g_issuer);
        Via::Named.configure(cfg, c_issuer);
    })
    .await;
    let login = format!("ada-{}", uuid::Uuid::new_v4().simple());

    // One browser starts at both providers before finishing either.
    let b = browser();
    let mut authorize = Vec::new();
    for via in [Via::Google, Via::Named] {
        let res = b
            .get(app.url(&format!("{}?next=%2Faccount", via.login_path())))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        authorize.push(Url::parse(&location(&res)).unwrap());
    }
    assert!(authorize[0].as_str().starts_with(&google.issuer));
    assert!(authorize[1].as_str().starts_with(&corp.issuer));
    let mut users = Vec::new();
    for (via, start) in [
        (Via::Named, authorize[1].clone()),
        (Via::Google, authorize[0].clone()),
    ] {
        let done = through_provider(&b, &app, start, &Choice::Approve(login.clone())).await;
        assert_eq!(done.url().path(), via.callback_path());
        let jar = assert_signed_in(&done, "/account");
        let user = me(&app, &jar).await;
        assert_eq!(user["providers"], json!([via.method()]), "{via:?}");
        users.push(user);
    }
    assert_eq!(users[0]["email"], format!("{login}@corp.example"));
    assert_eq!(users[1]["email"], format!("{login}@example.com"));
    assert_ne!(
        users[0]["id"], users[1]["id"],
        "same sub, two providers: two people"
    );
    for (issuer, user) in [(&corp.issuer, &users[0]), (&google.issuer, &users[1])] {
        let found = app
            .state
            .store()
            .user_by_identity(issuer, &login)
            .await
            .unwrap()
            .expect("identity stored");
        assert_eq!(json!(found.id.0.to_string()), user["id"]);
    }
    assert_eq!(user_count(&app).await, 2);
}

#[tokio::test]
async fn real_provider_links_a_verified_email_and_refuses_an_unverified_one() {
    let (app, _provider) = real_setup().await;
    // Password accounts for <login>@example.com; the provider says verified unless the
    // login starts with `unverified-`.
    let verified = format!("bob-{}", uuid::Uuid::new_v4().simple());
    let unverified = format!("unverified-{}", uuid::Uuid::new_v4().simple());
    app.signup(&format!("{verified}@example.com")).await;
    app.signup(&format!("{unverified}@example.com")).await;

    let b = browser();
    let res = b
        .get(app.url("/api/v1/auth/google/login"))
        .send()
        .await
        .unwrap();
    let done = through_provider(
        &b,
        &app,
        Url::parse(&location(&res)).unwrap(),
        &Choice::Approve(verified.clone()),
    )
    .await;
    let jar = assert_signed_in(&done, "/");
    // Linked to the password account of that address, whose never-verified password is gone.
    assert_eq!(me(&app, &jar).await["providers"], json!(["google"]));

    let b = browser();
    let res = b
        .get(app.url("/api/v1/auth/google/login"))
        .send()
        .await
        .unwrap();
    let done = through_provider(
        &b,
        &app,
        Url::parse(&location(&res)).unwrap(),
        &Choice::Approve(unverified),
    )
    .await;
    assert_failed(&done, "email_not_verified");
}

#[tokio::test]
async fn real_provider_cancel_is_oauth_denied() {
    let (app, _provider) = real_setup().await;
    let b = browser();
    let res = b
        .get(app.url("/api/v1/auth/google/login?next=%2Faccount"))
        .send()
        .await
        .unwrap();
    let done = through_provider(
        &b,
        &app,
        Url::parse(&location(&res)).unwrap(),
        &Choice::Cancel,
    )
    .await;
    assert_failed(&done, "oauth_denied");
    assert_eq!(user_count(&app).await, 0);
}

/// SPEC 11: a second factor enrolled here protects Google sign-in too. The callback of an
/// account with TOTP sets only the second-factor cookie and sends the browser to the login
/// page's second step; a recovery code (or TOTP) then signs in with `amr` fed + mfa.
async fn an_account_with_a_second_factor_takes_the_second_step_after_google(via: Via) {
    let (_issuer, app) = setup(via).await;
    let jar = assert_signed_in(&sign_in(&app, "").await, "/");
    let post = |path: &'static str, cookie: String, body: Value| {
        let app = &app;
        async move {
            let res = app
                .http
                .post(app.url(path))
                .header(header::COOKIE, cookie)
                .header(header::ORIGIN, app.base.clone())
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let cookies = set_cookies(res.headers());
            let body: Value = res.json().await.unwrap_or(Value::Null);
            (status, body, cookies)
        }
    };
    // Enrol TOTP right after signing in (a recent authentication).
    let path = "/api/v1/auth/mfa/totp/setup";
    let (s, setup, _) = post(path, jar.header_for(path), json!({})).await;
    assert_eq!(s, 200, "{setup}");
    let secret = totp_rs::Secret::try_from_base32(setup["secret"].as_str().unwrap()).unwrap();
    let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
    let step = latchkey::clock::now_ms() / 1000 / 30;
    let path = "/api/v1/auth/mfa/totp/confirm";
    let code = totp.generate(step as u64 * 30).to_string();
    let (s, done, _) = post(path, jar.header_for(path), json!({ "code": code })).await;
    assert_eq!(s, 200, "{done}");
    let recovery = done["recovery_codes"][0].as_str().unwrap().to_owned();

    // Google again: no session, only the second step.
    let res = sign_in(&app, "next=%2Faccount").await;
    assert_eq!(res.status(), 302);
    let to = location(&res);
    assert!(
        to.starts_with("/login?mfa=") && to.contains("totp") && to.ends_with("next=%2Faccount"),
        "{to}"
    );
    assert_no_auth_cookies(&res);
    assert_state_cleared(&res);
    let pending = set_cookies(res.headers())
        .into_iter()
        .find(|(name, _, _)| name == "mfa_pending")
        .expect("second-factor cookie set")
        .1;

    let (s, body, cookies) = post(
        "/api/v1/auth/mfa/verify",
        format!("mfa_pending={pending}"),
        json!({"method": "recovery_code", "code": recovery}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let access = cookies
        .iter()
        .find(|(name, _, _)| name == "access_token")
        .expect("signed in")
        .1
        .clone();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let amr: Vec<&str> = claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(amr.contains(&"fed") && amr.contains(&"mfa"), "{amr:?}");
    assert!(!amr.contains(&"pwd"), "{amr:?}");
}
