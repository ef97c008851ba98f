//! Sign in with an OpenID provider: `/api/v1/auth/google/*` (Google's preset, SPEC 6) and
//! `/api/v1/auth/oidc/{name}/*` (any named provider, SPEC 13). The protocol lives in
//! [`crate::oidc`]; these handlers turn its outcome into redirects and cookies, the same
//! way for every provider.
//!
//! Every answer but "not configured" is a 302: to the provider, to `next` with the auth
//! cookies, or to `/login?error=CODE` with none (a named provider adds `&provider=NAME`, so
//! the page can say which). The state cookie, under the provider's own path, is cleared by
//! every callback, whatever its outcome.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::clock::now_ms;
use crate::cookies::{
    clear_oauth_state_cookie, read_cookie, set_auth_cookies, set_mfa_pending_cookie,
    set_oauth_state_cookie,
};
use crate::error::{ApiError, Problem};
use crate::http::extract::ClientCtx;
use crate::oidc::next::safe_next;
use crate::oidc::{OAuthFailure, Provider, account};
use crate::session::{self, IssuedTokens};
use crate::state::AppState;

/// The single value of query parameter `name`; `None` when absent or repeated (RFC 6749
/// 3.1: parameters must not appear more than once).
fn param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn found(mut headers: HeaderMap, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            headers.insert(header::LOCATION, v);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            (StatusCode::FOUND, headers).into_response()
        }
        Err(_) => ApiError::internal("redirect target is not a valid header value").into_response(),
    }
}

/// `302 /login?error=CODE`, clearing the state cookie and setting no auth cookie.
fn failed(state: &AppState, provider: &Provider, f: OAuthFailure) -> Response {
    metrics::counter!("latchkey_oauth_failures_total", "code" => f.code()).increment(1);
    let mut headers = HeaderMap::new();
    clear_oauth_state_cookie(state.cookies(), &mut headers, provider.base_path());
    if provider.is_google_preset() {
        found(headers, &format!("/login?error={}", f.code()))
    } else {
        // The name is `[a-z0-9-]` (config.rs): safe in a URL as it is.
        let to = format!("/login?error={}&provider={}", f.code(), provider.name());
        found(headers, &to)
    }
}

/// The `latchkey_logins_total` method of a provider's sign-ins.
fn method(provider: &Provider) -> &'static str {
    if provider.is_google_preset() {
        "google"
    } else {
        "oidc"
    }
}

/// The named provider of the path, or 404 `provider_not_configured` (also for a path
/// segment axum cannot decode: no plain-text rejection escapes).
fn named(
    state: &AppState,
    name: Result<Path<String>, PathRejection>,
) -> Result<&Provider, ApiError> {
    let Ok(Path(name)) = name else {
        return Err(ApiError::ProviderNotConfigured);
    };
    state
        .oidc_provider(&name)
        .ok_or(ApiError::ProviderNotConfigured)
}

/// Starts Google sign-in.
#[utoipa::path(get, path = "/api/v1/auth/google/login", tag = "auth", operation_id = "google_login",
    params(("next" = Option<String>, Query, description = "Where to go after signing in: a same-origin path (anything else becomes `/`)")),
    responses(
        (status = 302, description = "To the provider's authorization endpoint with `response_type=code`, `scope=openid email profile`, `state`, `nonce`, `code_challenge` (S256) and `redirect_uri=PUBLIC_URL/api/v1/auth/google/callback`; sets the OAuth state cookie. When the provider cannot be reached: to `/login?error=oauth_failed`.",
            headers(("Location" = String, description = "Redirect target"))),
        (status = 404, description = "`provider_not_configured`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn google_login(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let google = state.google().ok_or(ApiError::ProviderNotConfigured)?;
    Ok(begin(&state, google, query.as_deref()).await)
}

/// Starts sign-in with a named OpenID provider (SPEC 13).
#[utoipa::path(get, path = "/api/v1/auth/oidc/{name}/login", tag = "auth", operation_id = "oidc_login",
    params(
        ("name" = String, Path, description = "The provider's name in `OIDC_PROVIDERS`", pattern = "^[a-z0-9][a-z0-9-]{0,31}$", example = "corp"),
        ("next" = Option<String>, Query, description = "Where to go after signing in: a same-origin path (anything else becomes `/`)"),
    ),
    responses(
        (status = 302, description = "To the provider's authorization endpoint with `response_type=code`, `scope=openid email profile`, `state`, `nonce`, `code_challenge` (S256) and `redirect_uri=PUBLIC_URL/api/v1/auth/oidc/{name}/callback`; sets the OAuth state cookie with `Path=/api/v1/auth/oidc/{name}`. When the provider cannot be reached: to `/login?error=oauth_failed&provider={name}`.",
            headers(("Location" = String, description = "Redirect target"))),
        (status = 404, description = "`provider_not_configured`: no provider of that name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn oidc_login(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let provider = named(&state, name)?;
    Ok(begin(&state, provider, query.as_deref()).await)
}

async fn begin(state: &AppState, provider: &Provider, query: Option<&str>) -> Response {
    let next = safe_next(param(query, "next").as_deref());
    match provider.begin(next, now_ms()).await {
        Ok((url, sealed)) => {
            let mut headers = HeaderMap::new();
            set_oauth_state_cookie(state.cookies(), &mut headers, provider.base_path(), sealed);
            found(headers, &url)
        }
        Err(f) => failed(state, provider, f),
    }
}

/// Finishes Google sign-in.
#[utoipa::path(get, path = "/api/v1/auth/google/callback", tag = "auth", operation_id = "google_callback",
    params(
        ("code" = Option<String>, Query, description = "Authorization code"),
        ("state" = Option<String>, Query, description = "Must match the OAuth state cookie"),
        ("error" = Option<String>, Query, description = "Set by the provider when the user declined or the request failed"),
    ),
    responses(
        (status = 302, description = "Success: to `next` with the access and refresh cookies; for an account with a second factor (SPEC 11), to `/login?mfa=METHODS&next=…` with only the second-factor cookie. Failure: to `/login?error=CODE` (`oauth_state_mismatch`, `oauth_denied`, `oauth_failed`, `email_not_verified`) with no auth cookies. Either way the state cookie is cleared.",
            headers(("Location" = String, description = "Redirect target"))),
        (status = 404, description = "`provider_not_configured`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn google_callback(
    State(state): State<AppState>,
    client: ClientCtx,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let google = state.google().ok_or(ApiError::ProviderNotConfigured)?;
    Ok(complete(&state, google, query.as_deref(), &headers, client).await)
}

/// Finishes sign-in with a named OpenID provider (SPEC 13).
#[utoipa::path(get, path = "/api/v1/auth/oidc/{name}/callback", tag = "auth", operation_id = "oidc_callback",
    params(
        ("name" = String, Path, description = "The provider's name in `OIDC_PROVIDERS`", pattern = "^[a-z0-9][a-z0-9-]{0,31}$", example = "corp"),
        ("code" = Option<String>, Query, description = "Authorization code"),
        ("state" = Option<String>, Query, description = "Must match this provider's OAuth state cookie"),
        ("error" = Option<String>, Query, description = "Set by the provider when the user declined or the request failed"),
    ),
    responses(
        (status = 302, description = "As Google's callback: success to `next` with the access and refresh cookies (or the second step, SPEC 11); failure to `/login?error=CODE&provider={name}` with no auth cookies. A state cookie made for another provider is `oauth_state_mismatch`. Either way this provider's state cookie is cleared.",
            headers(("Location" = String, description = "Redirect target"))),
        (status = 404, description = "`provider_not_configured`: no provider of that name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn oidc_callback(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    client: ClientCtx,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let provider = named(&state, name)?;
    Ok(complete(&state, provider, query.as_deref(), &headers, client).await)
}

async fn complete(
    state: &AppState,
    provider: &Provider,
    query: Option<&str>,
    headers: &HeaderMap,
    client: ClientCtx,
) -> Response {
    let path = provider.base_path();
    match finish(state, provider, query, headers, client).await {
        Ok(Finished::SignedIn(tokens, next)) => {
            metrics::counter!("latchkey_logins_total", "method" => method(provider)).increment(1);
            let mut out = HeaderMap::new();
            clear_oauth_state_cookie(state.cookies(), &mut out, path);
            set_auth_cookies(state.cookies(), &mut out, &tokens.cookies());
            found(out, &next)
        }
        Ok(Finished::SecondFactor(started, next)) => {
            metrics::counter!("latchkey_mfa_challenges_total").increment(1);
            let mut out = HeaderMap::new();
            clear_oauth_state_cookie(state.cookies(), &mut out, path);
            set_mfa_pending_cookie(state.cookies(), &mut out, started.cookie_value);
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("mfa", &started.methods.join(","))
                .append_pair("next", &next)
                .finish();
            found(out, &format!("/login?{query}"))
        }
        Err(f) => failed(state, provider, f),
    }
}

/// How a successful callback ends: signed in, or (the account has a second factor, SPEC 11)
/// at the second step, which the login page shows for `/login?mfa=METHODS`.
enum Finished {
    SignedIn(IssuedTokens, String),
    SecondFactor(crate::mfa::pending::Started, String),
}

async fn finish(
    state: &AppState,
    provider: &Provider,
    query: Option<&str>,
    headers: &HeaderMap,
    client: ClientCtx,
) -> Result<Finished, OAuthFailure> {
    let now = now_ms();
    // 1. The state must match a valid state cookie of ours, and is consumed at once, so
    //    whatever happens next, this callback cannot be replayed.
    let state_param = param(query, "state").unwrap_or_default();
    let cookies = read_cookie(headers, state.cookies().oauth_state_name());
    let pending = provider
        .pending(cookies, &state_param, now)
        .ok_or(OAuthFailure::StateMismatch)?;
    if !state
        .store()
        .consume_oauth_state(&pending.replay_id(), pending.expires_at, now)
        .await?
    {
        tracing::warn!(provider = %provider.name(), "openid sign-in: callback replayed with an already used state");
        return Err(OAuthFailure::StateMismatch);
    }
    // 2. The provider's own verdict.
    if let Some(error) = param(query, "error") {
        tracing::info!(provider = %provider.name(), error = %error.chars().filter(char::is_ascii_graphic).take(64).collect::<String>(), "openid sign-in: the provider returned an error");
        return Err(OAuthFailure::Denied);
    }
    // 3. RFC 9207: when the provider names itself in the response, it must be ours.
    if let Some(iss) = param(query, "iss")
        && !provider.accepts_issuer(&iss)
    {
        tracing::warn!(provider = %provider.name(), "openid sign-in: authorization response from an unexpected issuer");
        return Err(OAuthFailure::Failed);
    }
    let code = param(query, "code")
        .filter(|c| !c.is_empty())
        .ok_or(OAuthFailure::Failed)?;
    // 4. Code exchange and ID-token validation, then the account.
    let identity = provider.finish(&code, &pending).await?;
    let user = account::resolve_user(state, &identity).await?;
    // Linking may have changed what /me shows.
    state.profiles().invalidate(user.id);
    if user.disabled_at.is_some() {
        tracing::info!(provider = %provider.name(), user_id = %user.id, "openid sign-in: account is disabled");
        return Err(OAuthFailure::Failed);
    }
    // An account with a second factor takes the second step after any provider: the factor
    // the user enrolled here protects every way in, not only the password.
    let factors = state.store().user_factors(user.id).await?;
    if factors.any() {
        let started = crate::mfa::pending::start(state, user.id, crate::mfa::Amr::FED, &factors)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.name(), error = %e, "openid sign-in: second step could not start");
                OAuthFailure::Failed
            })?;
        return Ok(Finished::SecondFactor(started, pending.next));
    }
    let tokens = session::start(state, user.id, crate::mfa::Amr::FED, client.into())
        .await
        .map_err(|e| {
            tracing::warn!(provider = %provider.name(), error = %e, "openid sign-in: session could not start");
            OAuthFailure::Failed
        })?;
    Ok(Finished::SignedIn(tokens, pending.next))
}

#[cfg(test)]
mod tests {
    use super::param;

    #[test]
    fn parameters_are_single_valued() {
        assert_eq!(param(Some("code=a&state=b"), "state").as_deref(), Some("b"));
        assert_eq!(param(Some("state=a&state=b"), "state"), None);
        assert_eq!(
            param(Some("next=%2Faccount"), "next").as_deref(),
            Some("/account")
        );
        assert_eq!(param(None, "code"), None);
    }
}
