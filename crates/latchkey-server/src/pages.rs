//! The demo pages and the browser client, embedded at build time (no npm at run time).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use latchkey::{ApiError, AppState};

const INDEX: &str = include_str!("../pages/index.html");
const LOGIN: &str = include_str!("../pages/login.html");
const ACCOUNT: &str = include_str!("../pages/account.html");
// The email pages (SPEC 10). Their links carry the token in the fragment, which never reaches
// the server: these are plain static pages.
const FORGOT_PASSWORD: &str = include_str!("../pages/forgot-password.html");
const RESET_PASSWORD: &str = include_str!("../pages/reset-password.html");
const VERIFY_EMAIL: &str = include_str!("../pages/verify-email.html");
const CONFIRM_EMAIL: &str = include_str!("../pages/confirm-email.html");
const CLIENT_JS: &str = include_str!("../../../client/latchkey.js");
const CLIENT_DTS: &str = include_str!("../../../client/latchkey.d.ts");
// The optional toast module (an `onAuthFail` without alert()); the demo account page uses it.
const TOAST_JS: &str = include_str!("../../../client/latchkey-toast.js");
const TOAST_DTS: &str = include_str!("../../../client/latchkey-toast.d.ts");
// The passkey ceremonies in the browser (SPEC 11), apart from secureFetch.
const PASSKEYS_JS: &str = include_str!("../../../client/latchkey-passkeys.js");
const PASSKEYS_DTS: &str = include_str!("../../../client/latchkey-passkeys.d.ts");

fn static_file(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "style.css" => (
            include_str!("../pages/style.css"),
            "text/css; charset=utf-8",
        ),
        "home.js" => (
            include_str!("../pages/home.js"),
            "text/javascript; charset=utf-8",
        ),
        "login.js" => (
            include_str!("../pages/login.js"),
            "text/javascript; charset=utf-8",
        ),
        // The `next` rule login.js imports (finding 1 of issue 9).
        "next.js" => (
            include_str!("../pages/next.js"),
            "text/javascript; charset=utf-8",
        ),
        // Passkeys (SPEC 11): the login button and conditional UI, the list on /account.
        "login-passkeys.js" => (
            include_str!("../pages/login-passkeys.js"),
            "text/javascript; charset=utf-8",
        ),
        "account-passkeys.js" => (
            include_str!("../pages/account-passkeys.js"),
            "text/javascript; charset=utf-8",
        ),
        // Security events (SPEC 12): the account page's recent activity.
        "account-events.js" => (
            include_str!("../pages/account-events.js"),
            "text/javascript; charset=utf-8",
        ),
        "account.js" => (
            include_str!("../pages/account.js"),
            "text/javascript; charset=utf-8",
        ),
        // Second factors (SPEC 11): the login page's second step, the account page's section.
        "mfa.js" => (
            include_str!("../pages/mfa.js"),
            "text/javascript; charset=utf-8",
        ),
        // What the email pages and account.js share.
        "flows.js" => (
            include_str!("../pages/flows.js"),
            "text/javascript; charset=utf-8",
        ),
        "forgot-password.js" => (
            include_str!("../pages/forgot-password.js"),
            "text/javascript; charset=utf-8",
        ),
        "reset-password.js" => (
            include_str!("../pages/reset-password.js"),
            "text/javascript; charset=utf-8",
        ),
        "verify-email.js" => (
            include_str!("../pages/verify-email.js"),
            "text/javascript; charset=utf-8",
        ),
        "confirm-email.js" => (
            include_str!("../pages/confirm-email.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return None,
    })
}

/// Pages are never cached: after sign-out, Back must not show private data.
fn page(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// Scripts and styles revalidate on every load (they are small, and change with releases).
fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The named OpenID providers for the login page's `data-providers` attribute: JSON
/// `[{"name", "label"}]`, escaped for a double-quoted HTML attribute. login.js makes one
/// button per entry (text only, never markup).
fn providers_attribute(providers: &[latchkey::config::OidcProviderConfig]) -> String {
    let list: Vec<serde_json::Value> = providers
        .iter()
        .map(|p| serde_json::json!({ "name": p.name, "label": p.display_name }))
        .collect();
    html_attribute_escape(&serde_json::Value::Array(list).to_string())
}

fn html_attribute_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page(INDEX.to_owned()) }))
        .route(
            "/login",
            get(|State(state): State<AppState>| async move {
                let google = if state.config().google.is_some() {
                    "true"
                } else {
                    "false"
                };
                // Passkeys need a relying party (a domain-name PUBLIC_URL): without one the
                // page neither shows the button nor asks the server for a ceremony.
                let passkeys = if state.relying_party().is_some() {
                    "true"
                } else {
                    "false"
                };
                let providers = providers_attribute(&state.config().oidc);
                page(
                    LOGIN
                        .replace("__GOOGLE_ENABLED__", google)
                        .replace("__PASSKEYS_ENABLED__", passkeys)
                        .replace("__OIDC_PROVIDERS__", &providers),
                )
            }),
        )
        .route("/account", get(|| async { page(ACCOUNT.to_owned()) }))
        .route(
            "/forgot-password",
            get(|| async { page(FORGOT_PASSWORD.to_owned()) }),
        )
        .route(
            "/reset-password",
            get(|| async { page(RESET_PASSWORD.to_owned()) }),
        )
        .route(
            "/verify-email",
            get(|| async { page(VERIFY_EMAIL.to_owned()) }),
        )
        .route(
            "/confirm-email",
            get(|| async { page(CONFIRM_EMAIL.to_owned()) }),
        )
        .route(
            "/static/{file}",
            get(|Path(file): Path<String>| async move {
                match static_file(&file) {
                    Some((body, ct)) => asset(body, ct),
                    None => ApiError::NotFound.into_response(),
                }
            }),
        )
        .route(
            "/client/latchkey.js",
            get(|| async { asset(CLIENT_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/client/latchkey.d.ts",
            get(|| async { asset(CLIENT_DTS, "application/typescript; charset=utf-8") }),
        )
        .route(
            "/client/latchkey-toast.js",
            get(|| async { asset(TOAST_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/client/latchkey-toast.d.ts",
            get(|| async { asset(TOAST_DTS, "application/typescript; charset=utf-8") }),
        )
        .route(
            "/client/latchkey-passkeys.js",
            get(|| async { asset(PASSKEYS_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/client/latchkey-passkeys.d.ts",
            get(|| async { asset(PASSKEYS_DTS, "application/typescript; charset=utf-8") }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey::config::{OidcClientConfig, OidcProviderConfig};

    #[test]
    fn the_provider_list_is_json_escaped_for_an_html_attribute() {
        assert_eq!(providers_attribute(&[]), "[]");
        let p = |name: &str, label: &str| OidcProviderConfig {
            name: name.into(),
            display_name: label.into(),
            client: OidcClientConfig {
                client_id: "c".into(),
                client_secret: "s".to_owned().into(),
                issuer: "https://idp.example".into(),
            },
        };
        let attr = providers_attribute(&[p("corp", r#"Corp "SSO" <b>&'"#), p("my-idp", "My IdP")]);
        assert!(!attr.contains(['"', '<', '>', '\'']), "{attr}");
        let unescaped = attr
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        let back: serde_json::Value = serde_json::from_str(&unescaped).unwrap();
        assert_eq!(
            back,
            serde_json::json!([
                {"name": "corp", "label": r#"Corp "SSO" <b>&'"#},
                {"name": "my-idp", "label": "My IdP"}
            ])
        );
    }
}
