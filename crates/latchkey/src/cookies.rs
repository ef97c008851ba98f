//! The cookie policy of SPEC 3 — the only place that writes or clears a latchkey cookie.
//!
//! Names and flags follow the one production flag: `__Host-`/`__Secure-` prefixes and
//! `Secure` in production, plain names over http in development. No cookie carries
//! `Domain`. Every response that sets or clears a cookie gets `Cache-Control: no-store`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum_extra::extract::cookie::{Cookie, SameSite};

/// Path of the refresh cookie: covers refresh and logout, nothing else.
pub const REFRESH_COOKIE_PATH: &str = "/api/v1/auth";
/// Path of Google's OAuth state cookie. A named provider's is `/api/v1/auth/oidc/{name}`
/// (SPEC 13): each attempt's cookie goes only to its own provider's routes.
pub const OAUTH_STATE_COOKIE_PATH: &str = "/api/v1/auth/google";
/// Lifetime of the OAuth state cookie.
pub const OAUTH_STATE_MAX_AGE: Duration = Duration::from_secs(600);

/// Path of the device cookie (SPEC 3): login is under it; the pages are not.
pub const DEVICE_COOKIE_PATH: &str = "/api/v1/auth";
/// Lifetime of the device cookie: a year.
pub const DEVICE_MAX_AGE: Duration = Duration::from_secs(31_536_000);

/// Path of the second-factor cookie (SPEC 3, 11): only the second-factor endpoints see it.
pub const MFA_PENDING_COOKIE_PATH: &str = "/api/v1/auth/mfa";
/// Lifetime of the second-factor cookie, and of the pending sign-in it names: 5 minutes.
pub const MFA_PENDING_MAX_AGE: Duration = Duration::from_secs(300);

/// Cookie names and flags for one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePolicy {
    production: bool,
}

impl CookiePolicy {
    pub fn new(production: bool) -> Self {
        Self { production }
    }

    pub fn access_name(&self) -> &'static str {
        if self.production {
            "__Host-access_token"
        } else {
            "access_token"
        }
    }

    pub fn refresh_name(&self) -> &'static str {
        if self.production {
            "__Secure-refresh_token"
        } else {
            "refresh_token"
        }
    }

    pub fn oauth_state_name(&self) -> &'static str {
        if self.production {
            "__Secure-oauth_state"
        } else {
            "oauth_state"
        }
    }

    pub fn device_name(&self) -> &'static str {
        if self.production {
            "__Secure-device"
        } else {
            "device"
        }
    }

    pub fn mfa_pending_name(&self) -> &'static str {
        if self.production {
            "__Secure-mfa_pending"
        } else {
            "mfa_pending"
        }
    }

    fn mfa_pending(&self, value: String, max_age: Duration) -> Cookie<'static> {
        self.base(
            self.mfa_pending_name(),
            value,
            MFA_PENDING_COOKIE_PATH,
            SameSite::Strict,
            max_age,
        )
    }

    fn device(&self, value: String, max_age: Duration) -> Cookie<'static> {
        self.base(
            self.device_name(),
            value,
            DEVICE_COOKIE_PATH,
            SameSite::Lax,
            max_age,
        )
    }

    fn access(&self, value: String, max_age: Duration) -> Cookie<'static> {
        self.base(self.access_name(), value, "/", SameSite::Lax, max_age)
    }

    fn refresh(&self, value: String, max_age: Duration) -> Cookie<'static> {
        self.base(
            self.refresh_name(),
            value,
            REFRESH_COOKIE_PATH,
            SameSite::Strict,
            max_age,
        )
    }

    fn oauth_state(&self, path: &str, value: String, max_age: Duration) -> Cookie<'static> {
        self.base(
            self.oauth_state_name(),
            value,
            path.to_owned(),
            SameSite::Lax,
            max_age,
        )
    }

    fn base(
        &self,
        name: &'static str,
        value: String,
        path: impl Into<std::borrow::Cow<'static, str>>,
        same_site: SameSite,
        max_age: Duration,
    ) -> Cookie<'static> {
        // Rounded up: a cookie must not vanish from the browser before its token expires.
        let secs = i64::try_from(max_age.as_secs() + u64::from(max_age.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
        Cookie::build((name, value))
            .http_only(true)
            .secure(self.production)
            .same_site(same_site)
            .path(path)
            .max_age(time::Duration::seconds(secs))
            .build()
    }
}

/// The two auth cookies to write after signup, login, Google callback or refresh.
pub struct AuthCookies<'a> {
    pub access_token: &'a str,
    pub access_max_age: Duration,
    pub refresh_token: &'a str,
    pub refresh_max_age: Duration,
}

fn append(headers: &mut HeaderMap, cookie: Cookie<'static>) {
    // Cookie values here are JWTs and base64url: always valid header bytes.
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        headers.append(header::SET_COOKIE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Writes the access and refresh cookies.
pub fn set_auth_cookies(policy: CookiePolicy, headers: &mut HeaderMap, c: &AuthCookies<'_>) {
    append(
        headers,
        policy.access(c.access_token.to_owned(), c.access_max_age),
    );
    append(
        headers,
        policy.refresh(c.refresh_token.to_owned(), c.refresh_max_age),
    );
}

/// Clears both auth cookies: same name, path and flags, empty value, `Max-Age=0`.
pub fn clear_auth_cookies(policy: CookiePolicy, headers: &mut HeaderMap) {
    append(headers, policy.access(String::new(), Duration::ZERO));
    append(headers, policy.refresh(String::new(), Duration::ZERO));
}

/// Writes the device cookie (a year) after a successful password sign-in. Logout does not
/// clear it: it is what lets this browser sign in again while others are locked out.
pub fn set_device_cookie(policy: CookiePolicy, headers: &mut HeaderMap, value: String) {
    append(headers, policy.device(value, DEVICE_MAX_AGE));
}

/// Writes the access cookie alone: reauthentication (SPEC 11) renews the access token's
/// `auth_time` for the current session and leaves its refresh token as it is.
pub fn set_access_cookie(
    policy: CookiePolicy,
    headers: &mut HeaderMap,
    token: &str,
    max_age: Duration,
) {
    append(headers, policy.access(token.to_owned(), max_age));
}

/// Writes the second-factor cookie (SPEC 3, 11) after a right password for an account with
/// a second factor: 5 minutes, only for `/api/v1/auth/mfa`. Its value is an opaque random
/// token whose SHA-256 names the pending sign-in.
pub fn set_mfa_pending_cookie(policy: CookiePolicy, headers: &mut HeaderMap, value: String) {
    append(headers, policy.mfa_pending(value, MFA_PENDING_MAX_AGE));
}

/// Clears the second-factor cookie (the sign-in completed, expired or was used up).
pub fn clear_mfa_pending_cookie(policy: CookiePolicy, headers: &mut HeaderMap) {
    append(headers, policy.mfa_pending(String::new(), Duration::ZERO));
}

/// Writes the OAuth state cookie (10 minutes) under the provider's `path`
/// ([`OAUTH_STATE_COOKIE_PATH`] for Google).
pub fn set_oauth_state_cookie(
    policy: CookiePolicy,
    headers: &mut HeaderMap,
    path: &str,
    value: String,
) {
    append(
        headers,
        policy.oauth_state(path, value, OAUTH_STATE_MAX_AGE),
    );
}

/// Clears the OAuth state cookie under the provider's `path`.
pub fn clear_oauth_state_cookie(policy: CookiePolicy, headers: &mut HeaderMap, path: &str) {
    append(
        headers,
        policy.oauth_state(path, String::new(), Duration::ZERO),
    );
}

/// All values of the cookie `name` in the request's `Cookie` headers, in order.
pub fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_cookies(h: &HeaderMap) -> Vec<String> {
        h.get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn attrs(line: &str) -> (String, Vec<String>) {
        let mut parts = line.split("; ");
        let first = parts.next().unwrap().to_owned();
        let mut rest: Vec<String> = parts.map(str::to_owned).collect();
        rest.sort();
        (first, rest)
    }

    fn sample() -> AuthCookies<'static> {
        AuthCookies {
            access_token: "AT",
            access_max_age: Duration::from_secs(900),
            refresh_token: "RT",
            refresh_max_age: Duration::from_secs(1_209_600),
        }
    }

    #[test]
    fn development_cookies_have_plain_names_and_no_secure() {
        let mut h = HeaderMap::new();
        set_auth_cookies(CookiePolicy::new(false), &mut h, &sample());
        let c = set_cookies(&h);
        assert_eq!(
            attrs(&c[0]),
            (
                "access_token=AT".into(),
                vec![
                    "HttpOnly".into(),
                    "Max-Age=900".into(),
                    "Path=/".into(),
                    "SameSite=Lax".into()
                ]
            )
        );
        assert_eq!(
            attrs(&c[1]),
            (
                "refresh_token=RT".into(),
                vec![
                    "HttpOnly".into(),
                    "Max-Age=1209600".into(),
                    "Path=/api/v1/auth".into(),
                    "SameSite=Strict".into()
                ]
            )
        );
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn production_cookies_are_prefixed_and_secure() {
        let mut h = HeaderMap::new();
        set_auth_cookies(CookiePolicy::new(true), &mut h, &sample());
        let c = set_cookies(&h);
        assert_eq!(
            attrs(&c[0]),
            (
                "__Host-access_token=AT".into(),
                vec![
                    "HttpOnly".into(),
                    "Max-Age=900".into(),
                    "Path=/".into(),
                    "SameSite=Lax".into(),
                    "Secure".into()
                ]
            )
        );
        assert_eq!(
            attrs(&c[1]),
            (
                "__Secure-refresh_token=RT".into(),
                vec![
                    "HttpOnly".into(),
                    "Max-Age=1209600".into(),
                    "Path=/api/v1/auth".into(),
                    "SameSite=Strict".into(),
                    "Secure".into()
                ]
            )
        );
        for line in &c {
            assert!(!line.to_ascii_lowercase().contains("domain"), "{line}");
        }
    }

    #[test]
    fn clearing_repeats_name_path_and_flags_with_max_age_zero() {
        for prod in [false, true] {
            let p = CookiePolicy::new(prod);
            let mut set = HeaderMap::new();
            set_auth_cookies(p, &mut set, &sample());
            let mut clear = HeaderMap::new();
            clear_auth_cookies(p, &mut clear);
            for (s, c) in set_cookies(&set).iter().zip(set_cookies(&clear)) {
                let (sname, mut sattrs) = attrs(s);
                let (cname, mut cattrs) = attrs(&c);
                assert_eq!(cname, format!("{}=", sname.split('=').next().unwrap()));
                sattrs.retain(|a| !a.starts_with("Max-Age"));
                assert!(cattrs.contains(&"Max-Age=0".to_owned()));
                cattrs.retain(|a| !a.starts_with("Max-Age"));
                assert_eq!(sattrs, cattrs);
            }
            assert_eq!(clear[header::CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn oauth_state_cookie_follows_the_table() {
        let mut h = HeaderMap::new();
        set_oauth_state_cookie(
            CookiePolicy::new(false),
            &mut h,
            OAUTH_STATE_COOKIE_PATH,
            "S".into(),
        );
        assert_eq!(
            attrs(&set_cookies(&h)[0]),
            (
                "oauth_state=S".into(),
                vec![
                    "HttpOnly".into(),
                    "Max-Age=600".into(),
                    "Path=/api/v1/auth/google".into(),
                    "SameSite=Lax".into()
                ]
            )
        );
        let mut h = HeaderMap::new();
        set_oauth_state_cookie(
            CookiePolicy::new(true),
            &mut h,
            OAUTH_STATE_COOKIE_PATH,
            "S".into(),
        );
        assert_eq!(
            attrs(&set_cookies(&h)[0]),
            (
                "__Secure-oauth_state=S".into(),
                vec![
                    "HttpOnly".into(),
                    "Max-Age=600".into(),
                    "Path=/api/v1/auth/google".into(),
                    "SameSite=Lax".into(),
                    "Secure".into()
                ]
            )
        );
        let mut h = HeaderMap::new();
        clear_oauth_state_cookie(CookiePolicy::new(true), &mut h, OAUTH_STATE_COOKIE_PATH);
        assert!(set_cookies(&h)[0].starts_with("__Secure-oauth_state=;"));
        // A named provider's cookie: the same, under its own path.
        let mut h = HeaderMap::new();
        set_oauth_state_cookie(
            CookiePolicy::new(false),
            &mut h,
            "/api/v1/auth/oidc/corp",
            "S".into(),
        );
        assert!(set_cookies(&h)[0].contains("; Path=/api/v1/auth/oidc/corp"));
    }

    #[test]
    fn mfa_pending_cookie_follows_the_table() {
        for (prod, name, secure) in [
            (false, "mfa_pending", false),
            (true, "__Secure-mfa_pending", true),
        ] {
            let mut h = HeaderMap::new();
            set_mfa_pending_cookie(CookiePolicy::new(prod), &mut h, "P".into());
            let mut want = vec![
                "HttpOnly".to_owned(),
                "Max-Age=300".into(),
                "Path=/api/v1/auth/mfa".into(),
                "SameSite=Strict".into(),
            ];
            if secure {
                want.push("Secure".into());
            }
            assert_eq!(attrs(&set_cookies(&h)[0]), (format!("{name}=P"), want));
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            let mut h = HeaderMap::new();
            clear_mfa_pending_cookie(CookiePolicy::new(prod), &mut h);
            let (first, rest) = attrs(&set_cookies(&h)[0]);
            assert_eq!(first, format!("{name}="));
            assert!(rest.contains(&"Max-Age=0".to_owned()));
            assert!(rest.contains(&"Path=/api/v1/auth/mfa".to_owned()));
        }
    }

    #[test]
    fn reads_every_value_of_a_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; access_token=x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("access_token=y"));
        assert_eq!(read_cookie(&h, "access_token"), vec!["x", "y"]);
        assert!(read_cookie(&h, "refresh_token").is_empty());
    }
}
