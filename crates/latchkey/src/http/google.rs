//! `/api/v1/auth/google/*`: Sign in with Google (SPEC 6). The protocol lives in
//! [`crate::oidc`]; these handlers turn its outcome into redirects and cookies.
//!
//! Every answer but "not configured" is a 302: to the provider, to `next` with the auth
//! cookies, or to `/login?error=CODE` with none. The state cookie is cleared by every
//! callback, whatever its outcome.

use axum::extract::{RawQuery, State};
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
use crate::oidc::{GoogleProvider, OAuthFailure, account};
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
fn failed(state: &AppState, f: OAuthFailure) -> Response {
    metrics::counter!("latchkey_oauth_failures_total", "code" => f.code()).increment(1);
    let mut headers = HeaderMap::new();
    clear_oauth_state_cookie(state.cookies(), &mut headers);
    found(headers, &format!("/login?error={}", f.code()))
}

/// Starts Google sign-in.
#[utoipa::path(get, path = "/api/v1/auth/google/login", tag = "auth", operation_id = "google_login",
    params(("next" = Option<String>, Query, description = "Where to go after signing in: a same-origin path (anything else becomes `/`)")),
    responses(
        (status = 302, description = "To the provider's authorization endpoint with `response_type=code`, `scope=openid email profile`, `state`, `nonce`, `code_challenge` (S256) and `redirect_uri=PUBLIC_URL/api/v1/auth/google/callback`; sets the OAuth state cookie. When the provider cannot be reached: to `/login?error=oauth_failed`.",
            headers(("Location" = String, description = "Redirect target"))),
        (status = 404, description = "`provider_not_configured`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let google = state.google().ok_or(ApiError::ProviderNotConfigured)?;
    let next = safe_next(param(query.as_deref(), "next").as_deref());
    match google.begin(next, now_ms()).await {
        Ok((url, sealed)) => {
            let mut headers = HeaderMap::new();
            set_oauth_state_cookie(state.cookies(), &mut headers, sealed);
            Ok(found(headers, &url))
        }
        Err(f) => Ok(failed(&state, f)),
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
pub async fn callback(
    State(state): State<AppState>,
    client: ClientCtx,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let google = state.google().ok_or(ApiError::ProviderNotConfigured)?;
    match finish(&state, google, query.as_deref(), &headers, client).await {
        Ok(Finished::SignedIn(tokens, next)) => {
            metrics::counter!("latchkey_logins_total", "method" => "google").increment(1);
            let mut out = HeaderMap::new();
            clear_oauth_state_cookie(state.cookies(), &mut out);
            set_auth_cookies(state.cookies(), &mut out, &tokens.cookies());
            Ok(found(out, &next))
        }
        Ok(Finished::SecondFactor(started, next)) => {
            metrics::counter!("latchkey_mfa_challenges_total").increment(1);
            let mut out = HeaderMap::new();
            clear_oauth_state_cookie(state.cookies(), &mut out);
            set_mfa_pending_cookie(state.cookies(), &mut out, started.cookie_value);
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("mfa", &started.methods.join(","))
                .append_pair("next", &next)
                .finish();
            Ok(found(out, &format!("/login?{query}")))
        }
        Err(f) => Ok(failed(&state, f)),
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
    google: &GoogleProvider,
    query: Option<&str>,
    headers: &HeaderMap,
    client: ClientCtx,
) -> Result<Finished, OAuthFailure> {
    let now = now_ms();
    // 1. The state must match a valid state cookie of ours, and is consumed at once, so
    //    whatever happens next, this callback cannot be replayed.
    let state_param = param(query, "state").unwrap_or_default();
    let cookies = read_cookie(headers, state.cookies().oauth_state_name());
    let pending = google
        .pending(cookies, &state_param, now)
        .ok_or(OAuthFailure::StateMismatch)?;
    if !state
        .store()
        .consume_oauth_state(&pending.replay_id(), pending.expires_at, now)
        .await?
    {
        tracing::warn!("google sign-in: callback replayed with an already used state");
        return Err(OAuthFailure::StateMismatch);
    }
    // 2. The provider's own verdict.
    if let Some(error) = param(query, "error") {
        tracing::info!(error = %error.chars().filter(char::is_ascii_graphic).take(64).collect::<String>(), "google sign-in: the provider returned an error");
        return Err(OAuthFailure::Denied);
    }
    // 3. RFC 9207: when the provider names itself in the response, it must be ours.
    if let Some(iss) = param(query, "iss")
        && !google.accepts_issuer(&iss)
    {
        tracing::warn!("google sign-in: authorization response from an unexpected issuer");
        return Err(OAuthFailure::Failed);
    }
    let code = param(query, "code")
        .filter(|c| !c.is_empty())
        .ok_or(OAuthFailure::Failed)?;
    // 4. Code exchange and ID-token validation, then the account.
    let identity = google.finish(&code, &pending).await?;
    let user = account::resolve_user(state, &identity).await?;
    // Linking may have changed what /me shows.
    state.profiles().invalidate(user.id);
    if user.disabled_at.is_some() {
        tracing::info!(user_id = %user.id, "google sign-in: account is disabled");
        return Err(OAuthFailure::Failed);
    }
    // An account with a second factor takes the second step after Google too: the factor
    // the user enrolled here protects every way in, not only the password.
    let factors = state.store().user_factors(user.id).await?;
    if factors.any() {
        let started = crate::mfa::pending::start(state, user.id, crate::mfa::Amr::FED, &factors)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "google sign-in: second step could not start");
                OAuthFailure::Failed
            })?;
        return Ok(Finished::SecondFactor(started, pending.next));
    }
    let tokens = session::start(state, user.id, crate::mfa::Amr::FED, client.into())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "google sign-in: session could not start");
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
