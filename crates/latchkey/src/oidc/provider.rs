//! The OpenID Provider as latchkey sees it: discovery (cached), the authorization request,
//! and the code exchange with full ID-token validation (OIDC Core 3.1.3.7).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, JwsSigningAlgorithm, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse, reqwest,
};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::OAuthFailure;
use super::state_cookie::{PendingLogin, StateSealer};
use crate::config::GoogleConfig;
use crate::cookies::OAUTH_STATE_MAX_AGE;

/// Google's issuer, and the second spelling its ID tokens may carry (OIDC Core 15.6.2).
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
const GOOGLE_ISSUER_BARE: &str = "accounts.google.com";

/// How long a discovery document is used before it is fetched again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed discovery, requests within this window fail at once instead of retrying.
const DISCOVERY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one JWKS refetch for an unknown `kid` per this interval, so that tokens with
/// forged `kid`s cannot make us hammer the provider.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// An ID token issued further in the future than this is refused (clock skew allowance).
const IAT_FUTURE_LEEWAY_SECS: i64 = 60;
/// An ID token issued longer ago than this is refused: it was minted at the code exchange
/// we just made, and a sign-in attempt lives 10 minutes at most.
const IAT_MAX_AGE_SECS: i64 = 600;
/// Path of the callback under `PUBLIC_URL`.
pub const CALLBACK_PATH: &str = "/api/v1/auth/google/callback";

type Client = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// Who signed in, as the validated ID token says.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The configured issuer (one key for Google, whichever spelling the token used).
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
}

#[derive(Default)]
struct FetchState {
    last_failure: Option<Instant>,
    last_jwks_refetch: Option<Instant>,
}

/// A configured Google (or other OpenID) provider. Built at start without any network call.
pub struct GoogleProvider {
    client_id: ClientId,
    client_secret: ClientSecret,
    issuer: IssuerUrl,
    /// Whether `issuer` is Google's, whose tokens may say `accounts.google.com`.
    is_google: bool,
    redirect_uri: RedirectUrl,
    http: reqwest::Client,
    sealer: StateSealer,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Serialises network fetches (discovery, JWKS) and remembers their timing.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl GoogleProvider {
    /// `state_key` seals the OAuth state cookie ([`StateSealer::KEY_LEN`] bytes).
    pub fn new(cfg: &GoogleConfig, public_url: &str, state_key: &[u8]) -> Result<Self, String> {
        let issuer = IssuerUrl::new(cfg.issuer.clone()).map_err(|e| format!("GOOGLE_ISSUER: {e}"))?;
        let redirect_uri = RedirectUrl::new(format!("{public_url}{CALLBACK_PATH}")).map_err(|e| format!("PUBLIC_URL: {e}"))?;
        let sealer = StateSealer::new(state_key).ok_or("the stored oauth_state_key has the wrong length")?;
        // No redirects: the library's advice against SSRF through a provider's answers.
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            client_id: ClientId::new(cfg.client_id.clone()),
            client_secret: ClientSecret::new(cfg.client_secret.expose_secret().to_owned()),
            is_google: cfg.issuer.trim_end_matches('/') == GOOGLE_ISSUER,
            issuer,
            redirect_uri,
            http,
            sealer,
            discovered: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// The exact redirect URI sent to the provider (to register with it).
    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    fn cached(&self) -> Option<Arc<Discovered>> {
        self.discovered.read().ok().and_then(|g| g.clone())
    }

    fn store(&self, d: Arc<Discovered>) {
        if let Ok(mut g) = self.discovered.write() {
            *g = Some(d);
        }
    }

    /// The discovery document (with its JWKS), fetched on first use and after
    /// [`DISCOVERY_TTL`]. A stale document is kept when a refresh fails.
    async fn metadata(&self) -> Result<Arc<Discovered>, OAuthFailure> {
        let fresh = |d: &Arc<Discovered>| d.fetched_at.elapsed() < DISCOVERY_TTL;
        if let Some(d) = self.cached().filter(fresh) {
            return Ok(d);
        }
        let mut f = self.fetch.lock().await;
        // Another request may have fetched it while this one waited.
        let stale = self.cached();
        if let Some(d) = stale.clone().filter(fresh) {
            return Ok(d);
        }
        if f.last_failure.is_some_and(|t| t.elapsed() < DISCOVERY_RETRY_AFTER) {
            return stale.ok_or(OAuthFailure::Failed);
        }
        match CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await {
            Ok(metadata) => {
                f.last_failure = None;
                let d = Arc::new(Discovered { metadata, fetched_at: Instant::now() });
                self.store(d.clone());
                Ok(d)
            }
            Err(e) => {
                f.last_failure = Some(Instant::now());
                tracing::warn!(issuer = %self.issuer.as_str(), error = %error_chain(&e), "google sign-in: discovery failed");
                stale.ok_or(OAuthFailure::Failed)
            }
        }
    }

    /// Refetches the JWKS after an unknown `kid`, at most once per [`JWKS_REFETCH_INTERVAL`].
    /// `None` when not allowed yet or when the fetch failed.
    async fn refetch_jwks(&self, seen: &Arc<Discovered>) -> Option<Arc<Discovered>> {
        let mut f = self.fetch.lock().await;
        if let Some(d) = self.cached().filter(|d| !Arc::ptr_eq(d, seen)) {
            // Refreshed by another request meanwhile.
            return Some(d);
        }
        if f.last_jwks_refetch.is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL) {
            tracing::warn!("google sign-in: ID token names an unknown key; JWKS refetch skipped (rate limit)");
            return None;
        }
        f.last_jwks_refetch = Some(Instant::now());
        match CoreJsonWebKeySet::fetch_async(seen.metadata.jwks_uri(), &self.http).await {
            Ok(jwks) => {
                tracing::info!("google sign-in: JWKS refetched for an unknown key id");
                let d = Arc::new(Discovered { metadata: seen.metadata.clone().set_jwks(jwks), fetched_at: seen.fetched_at });
                self.store(d.clone());
                Some(d)
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "google sign-in: JWKS refetch failed");
                None
            }
        }
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> Client {
        // Client authentication at the token endpoint: HTTP Basic (the default when the
        // provider does not say), else the form body when that is all it supports.
        let auth = match metadata.token_endpoint_auth_methods_supported() {
            Some(m) if !m.contains(&CoreClientAuthMethod::ClientSecretBasic) && m.contains(&CoreClientAuthMethod::ClientSecretPost) => {
                AuthType::RequestBody
            }
            _ => AuthType::BasicAuth,
        };
        CoreClient::from_provider_metadata(metadata.clone(), self.client_id.clone(), Some(self.client_secret.clone()))
            .set_redirect_uri(self.redirect_uri.clone())
            .set_auth_type(auth)
    }

    /// Starts a sign-in: the authorization URL to redirect to, and the sealed state cookie
    /// value holding `state`, `nonce`, the PKCE verifier and `next` (already sanitised).
    pub async fn begin(&self, next: String, now_ms: i64) -> Result<(String, String), OAuthFailure> {
        let d = self.metadata().await?;
        let client = self.client(&d.metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        let pending = PendingLogin {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            next,
            expires_at: now_ms + crate::clock::ms(OAUTH_STATE_MAX_AGE),
        };
        Ok((url.to_string(), self.sealer.seal(&pending)))
    }

    /// The pending attempt among the request's state cookies whose `state` equals the
    /// callback's `state` parameter (compared in constant time), if any is valid.
    pub fn pending<'a>(&self, cookies: impl IntoIterator<Item = &'a str>, state_param: &str, now_ms: i64) -> Option<PendingLogin> {
        cookies
            .into_iter()
            .filter(|v| !v.is_empty())
            .filter_map(|v| self.sealer.open(v, now_ms))
            .find(|p| !state_param.is_empty() && bool::from(p.state.as_bytes().ct_eq(state_param.as_bytes())))
    }

    /// Whether an `iss` authorization-response parameter (RFC 9207) names our issuer.
    pub fn accepts_issuer(&self, iss: &str) -> bool {
        iss == self.issuer.as_str() || (self.is_google && (iss == GOOGLE_ISSUER || iss == GOOGLE_ISSUER_BARE))
    }

    /// Finishes a sign-in: exchanges `code` (with the PKCE verifier and client
    /// authentication) and validates the ID token before anything of it is used.
    pub async fn finish(&self, code: &str, pending: &PendingLogin) -> Result<Identity, OAuthFailure> {
        let d = self.metadata().await?;
        let client = self.client(&d.metadata);
        let request = client.exchange_code(AuthorizationCode::new(code.to_owned())).map_err(|e| {
            tracing::warn!(error = %e, "google sign-in: the provider has no token endpoint");
            OAuthFailure::Failed
        })?;
        let response = request
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %error_chain(&e), "google sign-in: code exchange failed");
                OAuthFailure::Failed
            })?;
        let Some(id_token) = response.id_token() else {
            tracing::warn!("google sign-in: the token response has no ID token");
            return Err(OAuthFailure::Failed);
        };
        let nonce = Nonce::new(pending.nonce.clone());
        let claims = match self.verify(&d.metadata, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                match self.refetch_jwks(&d).await {
                    Some(d2) => self.verify(&d2.metadata, id_token, &nonce),
                    None => Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)),
                }
            }
            other => other,
        }
        .map_err(|e| {
            tracing::warn!(error = %e, "google sign-in: ID token rejected");
            OAuthFailure::Failed
        })?;
        self.check_remaining(&claims, now_secs()).map_err(|why| {
            tracing::warn!(error = %why, "google sign-in: ID token rejected");
            OAuthFailure::Failed
        })?;
        Ok(Identity {
            issuer: self.issuer.as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned()),
        })
    }

    /// What `openidconnect` checks: signature with the issuer's keys and an allowed
    /// algorithm, `iss` (exact, except for Google — see [`Self::check_remaining`]), `aud`
    /// contains the client id and no untrusted extra audience, `exp`, `nonce`.
    fn verify(&self, metadata: &CoreProviderMetadata, id_token: &CoreIdToken, nonce: &Nonce) -> Result<CoreIdTokenClaims, ClaimsVerificationError> {
        // The algorithms the provider says it signs ID tokens with — but never `none` and
        // never an HMAC (whose key would be our client secret); RS256 when it lists none.
        let mut algs: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| **a != CoreJwsSigningAlgorithm::None && !a.uses_shared_secret())
            .cloned()
            .collect();
        if algs.is_empty() {
            algs.push(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256);
        }
        let client = self.client(metadata);
        let verifier = client.id_token_verifier().set_allowed_algs(algs).require_issuer_match(!self.is_google);
        id_token.claims(&verifier, nonce).cloned()
    }

    /// The steps of OIDC Core 3.1.3.7 that `openidconnect` leaves to the relying party.
    fn check_remaining(&self, claims: &CoreIdTokenClaims, now: i64) -> Result<(), String> {
        // 2. iss — for Google, either of its two spellings (checked here because the
        //    library's check is exact and was turned off for Google only).
        let iss = claims.issuer().as_str();
        if !(iss == self.issuer.as_str() || (self.is_google && (iss == GOOGLE_ISSUER || iss == GOOGLE_ISSUER_BARE))) {
            return Err(format!("unexpected issuer {iss:?}"));
        }
        // 4./5. azp: required with several audiences; when present, it must be us.
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != self.client_id.as_str() => return Err(format!("azp {:?} is not our client id", azp.as_str())),
            None if claims.audiences().len() > 1 => return Err("several audiences and no azp".into()),
            _ => {}
        }
        // 10. iat: not in the future, not older than a sign-in attempt can be.
        let iat = claims.issue_time().timestamp();
        if iat > now + IAT_FUTURE_LEEWAY_SECS || iat < now - IAT_MAX_AGE_SECS {
            return Err(format!("iat {iat} is not near now ({now})"));
        }
        if claims.subject().as_str().is_empty() || claims.subject().as_str().len() > 255 {
            return Err("sub is empty or too long".into());
        }
        Ok(())
    }
}

fn now_secs() -> i64 {
    crate::clock::now_ms() / 1000
}

/// An error and its sources on one line (the library's errors nest the useful part).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
