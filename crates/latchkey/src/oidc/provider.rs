//! The OpenID Provider as latchkey sees it: discovery (cached), the authorization request,
//! and the code exchange with full ID-token validation (OIDC Core 3.1.3.7).

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreIdToken, CoreIdTokenClaims, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EmptyAdditionalClaims, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    ExtraTokenFields, IssuerUrl, JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyUse,
    JwsSigningAlgorithm, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, Scope, SignatureVerificationError, StandardErrorResponse,
    StandardTokenResponse, TokenResponse, reqwest,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::OAuthFailure;
use super::state_cookie::{PendingLogin, StateSealer};
use crate::config::{GoogleConfig, OidcClientConfig, OidcProviderConfig};
use crate::cookies::{OAUTH_STATE_COOKIE_PATH, OAUTH_STATE_MAX_AGE};

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
/// Path of Google's callback under `PUBLIC_URL`; a named provider's is
/// `/api/v1/auth/oidc/{name}/callback`.
pub const CALLBACK_PATH: &str = "/api/v1/auth/google/callback";
/// The name of the Google preset (its routes stay `/api/v1/auth/google/*`).
pub const GOOGLE: &str = "google";

/// `openidconnect`'s core client, except that the token response keeps the ID token as a
/// string: the library's ID-token type cannot even be parsed when `iss` is Google's bare
/// `accounts.google.com` (its issuer type must be a URL), so parsing waits for
/// [`Provider::validate`], which handles that spelling.
type Client = openidconnect::Client<
    EmptyAdditionalClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    RawTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Clone, Deserialize, Serialize)]
struct RawIdTokenField {
    id_token: Option<String>,
}

impl std::fmt::Debug for RawIdTokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawIdTokenField")
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}
impl ExtraTokenFields for RawIdTokenField {}

/// A token response whose ID token is left unparsed (see [`Client`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
struct RawTokenResponse(StandardTokenResponse<RawIdTokenField, CoreTokenType>);

impl RawTokenResponse {
    fn raw_id_token(&self) -> Option<&str> {
        self.0.extra_fields().id_token.as_deref()
    }
}

impl OAuth2TokenResponse for RawTokenResponse {
    type TokenType = CoreTokenType;
    fn access_token(&self) -> &AccessToken {
        self.0.access_token()
    }
    fn token_type(&self) -> &CoreTokenType {
        self.0.token_type()
    }
    fn expires_in(&self) -> Option<Duration> {
        self.0.expires_in()
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.0.refresh_token()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.0.scopes()
    }
}

impl
    TokenResponse<
        EmptyAdditionalClaims,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    > for RawTokenResponse
{
    /// Always `None`: use [`RawTokenResponse::raw_id_token`].
    fn id_token(&self) -> Option<&CoreIdToken> {
        None
    }
}

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

/// A configured OpenID provider: Google's preset or a named one (SPEC 13). Built at start
/// without any network call; each has its own discovery and JWKS cache, state-cookie path
/// and sealing context, redirect URI and client.
pub struct Provider {
    /// `google`, or the name in `OIDC_PROVIDERS`.
    name: String,
    display_name: String,
    /// The routes' common prefix, which is also the state cookie's `Path`.
    base_path: String,
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

impl Provider {
    /// The Google preset (`GOOGLE_*`, routes `/api/v1/auth/google/*`). `state_key` seals
    /// the OAuth state cookie ([`StateSealer::KEY_LEN`] bytes).
    pub fn google(cfg: &GoogleConfig, public_url: &str, state_key: &[u8]) -> Result<Self, String> {
        let sealer =
            StateSealer::new(state_key).ok_or("the stored oauth_state_key has the wrong length")?;
        Self::build(
            GOOGLE,
            "Google",
            OAUTH_STATE_COOKIE_PATH.to_owned(),
            sealer,
            cfg,
            public_url,
        )
    }

    /// A named provider (`OIDC_<NAME>_*`, routes `/api/v1/auth/oidc/{name}/*`).
    pub fn named(
        cfg: &OidcProviderConfig,
        public_url: &str,
        state_key: &[u8],
    ) -> Result<Self, String> {
        let sealer = StateSealer::for_provider(state_key, &cfg.name)
            .ok_or("the stored oauth_state_key has the wrong length")?;
        Self::build(
            &cfg.name,
            &cfg.display_name,
            format!("/api/v1/auth/oidc/{}", cfg.name),
            sealer,
            &cfg.client,
            public_url,
        )
    }

    fn build(
        name: &str,
        display_name: &str,
        base_path: String,
        sealer: StateSealer,
        cfg: &OidcClientConfig,
        public_url: &str,
    ) -> Result<Self, String> {
        let issuer = IssuerUrl::new(cfg.issuer.clone()).map_err(|e| format!("issuer: {e}"))?;
        let redirect_uri = RedirectUrl::new(format!("{public_url}{base_path}/callback"))
            .map_err(|e| format!("PUBLIC_URL: {e}"))?;
        // No redirects: the library's advice against SSRF through a provider's answers.
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            base_path,
            client_id: ClientId::new(cfg.client_id.clone()),
            client_secret: ClientSecret::new(cfg.client_secret.expose_secret().to_owned()),
            is_google: cfg.issuer == GOOGLE_ISSUER,
            issuer,
            redirect_uri,
            http,
            sealer,
            discovered: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    /// `google`, or the provider's name in `OIDC_PROVIDERS`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What a sign-in button says.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// Whether this is the Google preset (`GOOGLE_*`).
    pub fn is_google_preset(&self) -> bool {
        self.name == GOOGLE
    }

    /// The prefix of the provider's routes, and the `Path` of its state cookie.
    pub fn base_path(&self) -> &str {
        &self.base_path
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
        if f.last_failure
            .is_some_and(|t| t.elapsed() < DISCOVERY_RETRY_AFTER)
        {
            return stale.ok_or(OAuthFailure::Failed);
        }
        match CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await {
            Ok(metadata) => {
                f.last_failure = None;
                let d = Arc::new(Discovered {
                    metadata,
                    fetched_at: Instant::now(),
                });
                self.store(d.clone());
                Ok(d)
            }
            Err(e) => {
                f.last_failure = Some(Instant::now());
                tracing::warn!(provider = %self.name, issuer = %self.issuer.as_str(), error = %error_chain(&e), "openid sign-in: discovery failed");
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
        if f.last_jwks_refetch
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL)
        {
            tracing::warn!(
                provider = %self.name,
                "openid sign-in: ID token names an unknown key; JWKS refetch skipped (rate limit)"
            );
            return None;
        }
        f.last_jwks_refetch = Some(Instant::now());
        match CoreJsonWebKeySet::fetch_async(seen.metadata.jwks_uri(), &self.http).await {
            Ok(jwks) => {
                tracing::info!(provider = %self.name, "openid sign-in: JWKS refetched for an unknown key id");
                let d = Arc::new(Discovered {
                    metadata: seen.metadata.clone().set_jwks(jwks),
                    fetched_at: seen.fetched_at,
                });
                self.store(d.clone());
                Some(d)
            }
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %error_chain(&e), "openid sign-in: JWKS refetch failed");
                None
            }
        }
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> Client {
        // Client authentication at the token endpoint: HTTP Basic (the default when the
        // provider does not say), else the form body when that is all it supports.
        let auth = match metadata.token_endpoint_auth_methods_supported() {
            Some(m)
                if !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && m.contains(&CoreClientAuthMethod::ClientSecretPost) =>
            {
                AuthType::RequestBody
            }
            _ => AuthType::BasicAuth,
        };
        Client::from_provider_metadata(
            metadata.clone(),
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
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
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
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
    pub fn pending<'a>(
        &self,
        cookies: impl IntoIterator<Item = &'a str>,
        state_param: &str,
        now_ms: i64,
    ) -> Option<PendingLogin> {
        cookies
            .into_iter()
            .filter(|v| !v.is_empty())
            .filter_map(|v| self.sealer.open(v, now_ms))
            .find(|p| {
                !state_param.is_empty()
                    && bool::from(p.state.as_bytes().ct_eq(state_param.as_bytes()))
            })
    }

    /// Whether an `iss` authorization-response parameter (RFC 9207) names our issuer.
    pub fn accepts_issuer(&self, iss: &str) -> bool {
        iss == self.issuer.as_str()
            || (self.is_google && (iss == GOOGLE_ISSUER || iss == GOOGLE_ISSUER_BARE))
    }

    /// Finishes a sign-in: exchanges `code` (with the PKCE verifier and client
    /// authentication) and validates the ID token before anything of it is used.
    pub async fn finish(
        &self,
        code: &str,
        pending: &PendingLogin,
    ) -> Result<Identity, OAuthFailure> {
        let d = self.metadata().await?;
        let client = self.client(&d.metadata);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| {
                tracing::warn!(provider = %self.name, error = %e, "openid sign-in: the provider has no token endpoint");
                OAuthFailure::Failed
            })?;
        let response = request
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %self.name, error = %error_chain(&e), "openid sign-in: code exchange failed");
                OAuthFailure::Failed
            })?;
        let Some(id_token) = response.raw_id_token() else {
            tracing::warn!(provider = %self.name, "openid sign-in: the token response has no ID token");
            return Err(OAuthFailure::Failed);
        };
        let nonce = Nonce::new(pending.nonce.clone());
        let claims = match self.validate(&d.metadata, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => match self.refetch_jwks(&d).await {
                Some(d2) => self.validate(&d2.metadata, id_token, &nonce),
                None => Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )),
            },
            other => other,
        }
        .map_err(|e| {
            tracing::warn!(provider = %self.name, error = %e, "openid sign-in: ID token rejected");
            OAuthFailure::Failed
        })?;
        self.check_remaining(&claims, now_secs()).map_err(|why| {
            tracing::warn!(provider = %self.name, error = %why, "openid sign-in: ID token rejected");
            OAuthFailure::Failed
        })?;
        Ok(Identity {
            issuer: self.issuer.as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
        })
    }

    /// ID-token validation by `openidconnect`: signature with the issuer's keys and an
    /// allowed algorithm, exact `iss`, `aud` contains the client id and no untrusted extra
    /// audience, `exp`, `nonce`. The rest is [`Self::check_remaining`].
    fn validate(
        &self,
        metadata: &CoreProviderMetadata,
        raw: &str,
        nonce: &Nonce,
    ) -> Result<CoreIdTokenClaims, ClaimsVerificationError> {
        let algs = allowed_algs(metadata);
        let client = self.client(metadata);
        let verifier = client.id_token_verifier().set_allowed_algs(algs.clone());
        if let Some(normalised) = self.google_bare_issuer(raw) {
            // Google's other spelling. The library cannot parse it, so: the signature is
            // checked here on the token as received (same key rules and algorithms, the
            // library's own RSA verification), then the library checks everything else on
            // a copy whose `iss` reads `https://accounts.google.com`.
            verify_signature(metadata.jwks(), raw, &algs)?;
            let token = CoreIdToken::from_str(&normalised).map_err(|e| {
                ClaimsVerificationError::Other(format!("unparseable ID token: {e}"))
            })?;
            return token
                .claims(&verifier.insecure_disable_signature_check(), nonce)
                .cloned();
        }
        let token = CoreIdToken::from_str(raw)
            .map_err(|e| ClaimsVerificationError::Other(format!("unparseable ID token: {e}")))?;
        token.claims(&verifier, nonce).cloned()
    }

    /// For Google's issuer only: when the token's `iss` is `accounts.google.com`, the same
    /// token with `iss` set to the configured issuer (signature left as it was).
    fn google_bare_issuer(&self, raw: &str) -> Option<String> {
        if !self.is_google {
            return None;
        }
        let mut parts = raw.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if claims.get("iss")?.as_str()? != GOOGLE_ISSUER_BARE {
            return None;
        }
        claims["iss"] = serde_json::Value::String(self.issuer.as_str().to_owned());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).ok()?);
        Some(format!("{header}.{payload}.{signature}"))
    }

    /// The steps of OIDC Core 3.1.3.7 that `openidconnect` leaves to the relying party.
    fn check_remaining(&self, claims: &CoreIdTokenClaims, now: i64) -> Result<(), String> {
        // 4./5. azp: required with several audiences; when present, it must be us.
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != self.client_id.as_str() => {
                return Err(format!("azp {:?} is not our client id", azp.as_str()));
            }
            None if claims.audiences().len() > 1 => {
                return Err("several audiences and no azp".into());
            }
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

/// The algorithms the provider says it signs ID tokens with — but never `none` and never an
/// HMAC (whose key would be our client secret); RS256 when it lists none we accept.
fn allowed_algs(metadata: &CoreProviderMetadata) -> Vec<CoreJwsSigningAlgorithm> {
    let mut algs: Vec<CoreJwsSigningAlgorithm> = metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .filter(|a| **a != CoreJwsSigningAlgorithm::None && !a.uses_shared_secret())
        .cloned()
        .collect();
    if algs.is_empty() {
        algs.push(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256);
    }
    algs
}

/// JWS signature check of a compact token against a key set, with the library's key
/// selection rules (`kid`, key type, `use`, the key's own `alg`) and its crypto.
fn verify_signature(
    jwks: &CoreJsonWebKeySet,
    raw: &str,
    allowed: &[CoreJwsSigningAlgorithm],
) -> Result<(), ClaimsVerificationError> {
    let sig_err = ClaimsVerificationError::SignatureVerification;
    let (signing_input, signature) = raw
        .rsplit_once('.')
        .ok_or_else(|| ClaimsVerificationError::Other("malformed JWT".into()))?;
    let (header, _) = signing_input
        .split_once('.')
        .ok_or_else(|| ClaimsVerificationError::Other("malformed JWT".into()))?;
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        kid: Option<String>,
    }
    let header: Header = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| ClaimsVerificationError::Other("malformed JWT header".into()))?;
    let alg: CoreJwsSigningAlgorithm =
        serde_json::from_value(serde_json::Value::String(header.alg.clone()))
            .ok()
            .filter(|a| allowed.contains(a))
            .ok_or_else(|| {
                sig_err(SignatureVerificationError::DisallowedAlg(
                    header.alg.clone(),
                ))
            })?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| {
        sig_err(SignatureVerificationError::CryptoError(
            "signature is not base64url".into(),
        ))
    })?;
    let candidates: Vec<&CoreJsonWebKey> = jwks
        .keys()
        .iter()
        .filter(|k| {
            header.kid.is_none() || k.key_id().map(|id| id.as_str()) == header.kid.as_deref()
        })
        .filter(|k| k.key_use().is_none_or(|u| u.allows_signature()))
        .filter(|k| alg.key_type().as_ref() == Some(k.key_type()))
        .filter(|k| match k.signing_alg() {
            JsonWebKeyAlgorithm::Unspecified => true,
            JsonWebKeyAlgorithm::Algorithm(a) => *a == alg,
            _ => false,
        })
        .collect();
    match candidates.as_slice() {
        [] => Err(sig_err(SignatureVerificationError::NoMatchingKey)),
        [key] => key
            .verify_signature(&alg, signing_input.as_bytes(), &signature)
            .map_err(sig_err),
        _ => Err(sig_err(SignatureVerificationError::AmbiguousKeyId(
            "several keys match".into(),
        ))),
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

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    use serde_json::{Value, json};

    use super::*;

    const CLIENT: &str = "client-1";
    const SECRET: &str = "secret-1";

    struct Key {
        encoding: EncodingKey,
        jwk: Value,
    }

    static KEY: LazyLock<Key> = LazyLock::new(|| {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())});
        Key {
            encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
            jwk,
        }
    });

    fn provider(issuer: &str) -> (Provider, CoreProviderMetadata) {
        let cfg = GoogleConfig {
            client_id: CLIENT.into(),
            client_secret: SECRET.to_owned().into(),
            issuer: issuer.into(),
        };
        let p =
            Provider::google(&cfg, "http://localhost:8080", &StateSealer::generate_key()).unwrap();
        let metadata: CoreProviderMetadata = serde_json::from_value(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
        }))
        .unwrap();
        let jwks: CoreJsonWebKeySet =
            serde_json::from_value(json!({ "keys": [KEY.jwk.clone()] })).unwrap();
        (p, metadata.set_jwks(jwks))
    }

    fn claims(iss: &str) -> Value {
        let now = now_secs();
        json!({"iss": iss, "sub": "1234", "aud": CLIENT, "azp": CLIENT, "iat": now, "exp": now + 300, "nonce": "n-1",
            "email": "ada@example.com", "email_verified": true})
    }

    fn rs256(c: &Value, kid: &str) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, c, &KEY.encoding).unwrap()
    }

    fn nonce() -> Nonce {
        Nonce::new("n-1".into())
    }

    #[test]
    fn google_tokens_are_accepted_with_either_issuer_spelling() {
        let (p, m) = provider(GOOGLE_ISSUER);
        for iss in [GOOGLE_ISSUER, "accounts.google.com"] {
            let c = p
                .validate(&m, &rs256(&claims(iss), "k1"), &nonce())
                .unwrap_or_else(|e| panic!("{iss}: {e}"));
            assert_eq!(c.issuer().as_str(), GOOGLE_ISSUER);
            assert_eq!(c.subject().as_str(), "1234");
            p.check_remaining(&c, now_secs()).unwrap();
        }
    }

    #[test]
    fn the_bare_spelling_is_accepted_for_google_only() {
        let (p, m) = provider("https://idp.example");
        assert!(
            p.validate(&m, &rs256(&claims("accounts.google.com"), "k1"), &nonce())
                .is_err()
        );
        assert!(
            p.validate(
                &m,
                &rs256(&claims("https://accounts.google.com"), "k1"),
                &nonce()
            )
            .is_err()
        );
        assert!(
            p.validate(&m, &rs256(&claims("https://idp.example"), "k1"), &nonce())
                .is_ok()
        );
    }

    #[test]
    fn the_bare_spelling_path_still_checks_everything() {
        let (p, m) = provider(GOOGLE_ISSUER);
        let bare = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims("accounts.google.com");
            edit(&mut c);
            c
        };
        // Signature: payload changed after signing.
        let good = rs256(&claims("accounts.google.com"), "k1");
        let parts: Vec<&str> = good.split('.').collect();
        let other = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&bare(&|c| c["sub"] = json!("evil"))).unwrap());
        assert!(
            p.validate(&m, &format!("{}.{other}.{}", parts[0], parts[2]), &nonce())
                .is_err(),
            "tampered"
        );
        // Unknown kid: reported as such, so the caller can refetch the JWKS.
        assert!(matches!(
            p.validate(&m, &rs256(&claims("accounts.google.com"), "k2"), &nonce()),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
            ))
        ));
        // alg none and HS256 (with the client secret) are refused although advertised.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("accounts.google.com")).unwrap())
        );
        assert!(p.validate(&m, &none, &nonce()).is_err(), "alg none");
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("accounts.google.com"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(p.validate(&m, &hs, &nonce()).is_err(), "HS256");
        // The library's claim checks run on the normalised copy.
        for (what, c) in [
            ("aud", bare(&|c| c["aud"] = json!("other"))),
            ("exp", bare(&|c| c["exp"] = json!(now_secs() - 1))),
            ("nonce", bare(&|c| c["nonce"] = json!("n-2"))),
        ] {
            assert!(
                p.validate(&m, &rs256(&c, "k1"), &nonce()).is_err(),
                "{what}"
            );
        }
    }

    #[test]
    fn azp_and_iat_are_checked() {
        let (p, _) = provider("https://idp.example");
        let now = now_secs();
        let check = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims("https://idp.example");
            edit(&mut c);
            let c: CoreIdTokenClaims = serde_json::from_value(c).unwrap();
            p.check_remaining(&c, now)
        };
        assert!(check(&|_| {}).is_ok());
        assert!(
            check(&|c| c["azp"] = json!("other")).is_err(),
            "foreign azp"
        );
        assert!(
            check(&|c| c
                .as_object_mut()
                .unwrap()
                .remove("azp")
                .map(|_| ())
                .unwrap())
            .is_ok(),
            "azp optional with one audience"
        );
        assert!(
            check(&|c| {
                c["aud"] = json!([CLIENT, "other"]);
                c.as_object_mut().unwrap().remove("azp");
            })
            .is_err(),
            "several audiences need azp"
        );
        assert!(
            check(&|c| c["iat"] = json!(now + 3600)).is_err(),
            "iat in the future"
        );
        assert!(
            check(&|c| c["iat"] = json!(now + 30)).is_ok(),
            "small clock skew"
        );
        assert!(
            check(&|c| c["iat"] = json!(now - 3600)).is_err(),
            "iat long ago"
        );
    }

    #[test]
    fn issuer_parameter_accepts_googles_spellings_for_google_only() {
        let (g, _) = provider(GOOGLE_ISSUER);
        assert!(
            g.accepts_issuer("https://accounts.google.com")
                && g.accepts_issuer("accounts.google.com")
        );
        assert!(!g.accepts_issuer("https://evil.example"));
        let (o, _) = provider("https://idp.example");
        assert!(
            o.accepts_issuer("https://idp.example") && !o.accepts_issuer("accounts.google.com")
        );
    }

    /// SPEC 13: provider B's ID token presented in provider A's flow is refused, even when
    /// it is signed by a key A trusts: its issuer or its audience is not A's.
    #[test]
    fn a_token_of_another_provider_is_refused() {
        let cfg = OidcProviderConfig {
            name: "corp".into(),
            display_name: "Corp".into(),
            client: OidcClientConfig {
                client_id: CLIENT.into(),
                client_secret: SECRET.to_owned().into(),
                issuer: "https://a.example".into(),
            },
        };
        let p =
            Provider::named(&cfg, "http://localhost:8080", &StateSealer::generate_key()).unwrap();
        assert_eq!(p.name(), "corp");
        assert!(!p.is_google_preset());
        assert_eq!(p.base_path(), "/api/v1/auth/oidc/corp");
        assert_eq!(
            p.redirect_uri(),
            "http://localhost:8080/api/v1/auth/oidc/corp/callback"
        );
        let (_, m) = provider("https://a.example");
        let ok = claims("https://a.example");
        assert!(p.validate(&m, &rs256(&ok, "k1"), &nonce()).is_ok());
        let mut from_b = claims("https://b.example");
        from_b["aud"] = json!("client-b");
        from_b["azp"] = json!("client-b");
        assert!(
            p.validate(&m, &rs256(&from_b, "k1"), &nonce()).is_err(),
            "B's token"
        );
        let mut iss_b = ok.clone();
        iss_b["iss"] = json!("https://b.example");
        assert!(
            p.validate(&m, &rs256(&iss_b, "k1"), &nonce()).is_err(),
            "B's issuer"
        );
        let mut aud_b = ok.clone();
        aud_b["aud"] = json!("client-b");
        assert!(
            p.validate(&m, &rs256(&aud_b, "k1"), &nonce()).is_err(),
            "B's audience"
        );
        // Google's bare issuer spelling means nothing to a named provider.
        assert!(!p.accepts_issuer("accounts.google.com"));
    }
}
