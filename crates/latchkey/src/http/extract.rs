//! Extractors: [`AuthUser`] (the way a route says "a signed-in user"), [`ApiJson`] (JSON
//! bodies whose every failure is problem+json), and [`ClientCtx`] (IP and user agent).

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use crate::domain::{SessionId, UserId};
use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::access::{self, AccessClaims, TokenError};

/// A request authenticated by a valid, unrevoked access token (cookie or Bearer).
///
/// ```ignore
/// async fn profile(user: latchkey::AuthUser) -> String { user.user_id.to_string() }
/// ```
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub claims: AccessClaims,
}

/// The `Authorization` header's Bearer credential — the one place it is parsed: `None`
/// when the request has no Bearer credential, an error when the header is not visible ASCII
/// or the token is empty.
fn bearer(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    let v = headers.get(header::AUTHORIZATION)?;
    let Ok(v) = v.to_str() else {
        return Some(Err(ApiError::TokenInvalid));
    };
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = token.trim();
    Some(if t.is_empty() {
        Err(ApiError::TokenInvalid)
    } else {
        Ok(t)
    })
}

/// The access token a request carries: `Authorization: Bearer`, else the access cookie.
/// Two access cookies with different values are refused (cookie tossing).
pub fn access_token_of(headers: &HeaderMap, cookie_name: &str) -> Result<Option<String>, ApiError> {
    if let Some(b) = bearer(headers) {
        return b.map(|t| Some(t.to_owned()));
    }
    let values = crate::cookies::read_cookie(headers, cookie_name);
    match values.as_slice() {
        [] => Ok(None),
        [first, rest @ ..] => {
            if rest.iter().any(|v| v != first) {
                Err(ApiError::TokenInvalid)
            } else if first.is_empty() {
                Ok(None)
            } else {
                Ok(Some((*first).to_owned()))
            }
        }
    }
}

/// Whether the request carries a non-empty `Authorization: Bearer` token (see the origin
/// check, `http/origin.rs`, for where that exempts it).
pub fn has_bearer(headers: &HeaderMap) -> bool {
    matches!(bearer(headers), Some(Ok(_)))
}

/// Verifies an access token and checks its session is not revoked. The one place that
/// turns a token into an identity.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AccessClaims, ApiError> {
    let now = crate::clock::now_ms() / 1000;
    let claims = match state.verified_tokens().get(token, now) {
        Some(hit) => hit,
        None => {
            let public_url = &state.config().public_url;
            let mut result = access::verify(&state.keys().current(), public_url, token);
            if result == Err(TokenError::UnknownKid) && state.keys().reload_for_unknown_kid().await
            {
                result = access::verify(&state.keys().current(), public_url, token);
            }
            result.map(|c| {
                let c = std::sync::Arc::new(c);
                state.verified_tokens().insert(token, c.clone(), now);
                c
            })
        }
    }
    .map_err(|e| match e {
        TokenError::Expired => ApiError::TokenExpired,
        TokenError::Invalid | TokenError::UnknownKid => ApiError::TokenInvalid,
    })?;
    // Revocation is checked on every request, cached token or not.
    if state.revocations().is_revoked(claims.sid) {
        return Err(ApiError::SessionRevoked);
    }
    Ok((*claims).clone())
}

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let st = AppState::from_ref(state);
        let token = access_token_of(&parts.headers, st.cookies().access_name())?
            .ok_or(ApiError::TokenMissing)?;
        let claims = authenticate(&st, &token).await?;
        Ok(AuthUser {
            user_id: claims.sub,
            session_id: claims.sid,
            claims,
        })
    }
}

/// A JSON body: 415 unless `Content-Type` is JSON, 413 over the body limit, 400 for
/// malformed JSON or wrong field types — all problem+json, never a 5xx.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidRequest("the body could not be read".into())
            }
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            // The message names the problem and position, never echoes values.
            let what = match e.classify() {
                serde_json::error::Category::Data => "a field is missing or has the wrong type",
                _ => "the body is not valid JSON",
            };
            ApiError::InvalidRequest(format!("{what} (line {}, column {})", e.line(), e.column()))
        })
    }
}

/// Who is asking: the client IP (through trusted proxies only) and user agent.
#[derive(Debug, Clone)]
pub struct ClientCtx {
    pub ip: String,
    /// The key per-IP rate limits count on: the IPv4 address, or the IPv6 /64 (one host
    /// commonly holds a whole /64, so single addresses would not limit it).
    pub rate_key: String,
    pub user_agent: Option<String>,
}

/// What a new session records of the client that started it.
impl From<ClientCtx> for crate::session::ClientInfo {
    fn from(c: ClientCtx) -> Self {
        Self {
            user_agent: c.user_agent,
            ip: Some(c.ip),
        }
    }
}

/// See [`ClientCtx::rate_key`].
pub fn rate_key(ip: Option<IpAddr>) -> String {
    match ip.map(|i| i.to_canonical()) {
        None => "unknown".into(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The client IP (SPEC 8): `X-Forwarded-For` read right to left. Starting from the socket
/// peer, each hop that is a trusted proxy hands over to the entry on its left; the first
/// address that is not a trusted proxy is the client. Entries left of it are the client's
/// own claims and are never parsed. Only a malformed entry where the walk needs an address
/// stops it, at the last trusted hop (a misconfigured proxy, logged).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| {
        let ip = ip.to_canonical();
        trusted.iter().any(|n| n.contains(&ip))
    };
    let mut hop = peer;
    if !is_trusted(&hop) {
        return Some(hop);
    }
    // Several X-Forwarded-For fields form one list, in order (RFC 9110 §5.3). Work on bytes:
    // the client's own claims (left of the client) may hold anything, even non-ASCII, and
    // are never looked at; only the entries the walk needs are decoded.
    for field in headers.get_all("x-forwarded-for").iter().rev() {
        for entry in field.as_bytes().rsplit(|b| *b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = std::str::from_utf8(entry)
                .ok()
                .and_then(parse_forwarded_entry)
            else {
                malformed_forwarded_warning();
                return Some(hop);
            };
            if !is_trusted(&ip) {
                return Some(ip);
            }
            hop = ip;
        }
    }
    // Every hop was a trusted proxy: the leftmost one is the best we know.
    Some(hop)
}

/// A malformed entry from a trusted proxy is a misconfiguration worth a warning, but a
/// client can send one with every request: at most one line a minute.
fn malformed_forwarded_warning() {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
        *last = Some(std::time::Instant::now());
        tracing::warn!(
            "malformed X-Forwarded-For entry from a trusted proxy; using the last trusted hop as the client (check the proxy's configuration)"
        );
    }
}

/// One `X-Forwarded-For` entry: an IP address, optionally with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`), as some proxies write them.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

impl<S> FromRequestParts<S> for ClientCtx
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let st = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let addr = client_ip(peer, &parts.headers, &st.config().trusted_proxies);
        let ip = addr
            .map(|i| i.to_canonical().to_string())
            .unwrap_or_else(|| "unknown".into());
        let rate_key = rate_key(addr);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        Ok(ClientCtx {
            ip,
            rate_key,
            user_agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(h: &mut HeaderMap, v: &'static str) {
        h.insert("x-forwarded-for", HeaderValue::from_static(v));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        xff(&mut h, "203.0.113.9, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            client_ip(Some("10.0.0.1".parse().unwrap()), &h, &trusted),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some("192.0.2.1".parse().unwrap()), &h, &trusted),
            Some("192.0.2.1".parse().unwrap())
        );
        xff(&mut h, "garbage");
        assert_eq!(
            client_ip(Some("10.0.0.1".parse().unwrap()), &h, &trusted),
            Some("10.0.0.1".parse().unwrap()),
            "a malformed entry where an address is needed stops at the last trusted hop"
        );
    }

    /// Finding 9 (issue 9): one malformed entry must not drop the whole chain.
    #[test]
    fn finding_9_entries_left_of_the_client_are_never_parsed() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let proxy = Some("127.0.0.1".parse().unwrap());
        let mut h = HeaderMap::new();
        for v in [
            "garbage, 203.0.113.9",
            "1.2.3.4, not-an-ip, 203.0.113.9",
            "\"quoted\", 203.0.113.9",
            "203.0.113.9",
            ", 203.0.113.9",
            "203.0.113.9:4711",
        ] {
            xff(&mut h, v);
            assert_eq!(
                client_ip(proxy, &h, &trusted),
                Some("203.0.113.9".parse().unwrap()),
                "{v:?}"
            );
        }
        // A trusted hop in between hands over to its left neighbour.
        xff(&mut h, "garbage, 203.0.113.9, 127.0.0.1");
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        // Garbage where the walk needs an address: the last trusted hop.
        xff(&mut h, "203.0.113.9, garbage");
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
        xff(&mut h, "203.0.113.9, garbage, 127.0.0.1");
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
        // Non-ASCII bytes in the client's own claim are never looked at.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").unwrap(),
        );
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.9, \xff").unwrap(),
        );
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
        // Several fields are one list, read from the last field backwards.
        h.remove("x-forwarded-for");
        h.append("x-forwarded-for", HeaderValue::from_static("garbage"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            Some("198.51.100.7".parse().unwrap())
        );
        // IPv6 with a port, and an IPv4-mapped trusted peer.
        xff(&mut h, "[2001:db8::1]:443");
        assert_eq!(
            client_ip(Some("::ffff:127.0.0.1".parse().unwrap()), &h, &trusted),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn rate_keys_group_ipv6_by_64_and_unwrap_mapped_ipv4() {
        assert_eq!(
            rate_key(Some("203.0.113.9".parse().unwrap())),
            "203.0.113.9"
        );
        assert_eq!(
            rate_key(Some("::ffff:203.0.113.9".parse().unwrap())),
            "203.0.113.9"
        );
        let a = rate_key(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = rate_key(Some("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap()));
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_ne!(a, rate_key(Some("2001:db8:1:3::1".parse().unwrap())));
    }

    #[test]
    fn bearer_wins_and_differing_access_cookies_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("access_token=a; access_token=b"),
        );
        assert!(matches!(
            access_token_of(&h, "access_token"),
            Err(ApiError::TokenInvalid)
        ));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("access_token=a; access_token=a"),
        );
        assert_eq!(
            access_token_of(&h, "access_token").unwrap().as_deref(),
            Some("a")
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(
            access_token_of(&h, "access_token").unwrap().as_deref(),
            Some("xyz")
        );
    }
}
