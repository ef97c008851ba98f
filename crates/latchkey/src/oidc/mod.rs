//! Sign in with an OpenID provider — Google's preset or any named one (SPEC 6 and 13) —
//! OpenID Connect, authorization code flow with PKCE.
//!
//! Every provider follows the same rules; they differ only in configuration, routes
//! (`/api/v1/auth/google/*` for Google, `/api/v1/auth/oidc/{name}/*` otherwise), the state
//! cookie's `Path` and sealing context, and their own discovery and JWKS caches. Identities
//! are keyed on (issuer, `sub`) and no two providers share an issuer, so an identity of one
//! provider never signs in through another.
//!
//! The protocol work is done by the `openidconnect` crate: discovery, the authorization URL
//! (state, nonce, PKCE S256), the code exchange with client authentication, and ID-token
//! validation (signature against the issuer's JWKS with an allowed algorithm, `iss`, `aud`,
//! `exp`, `nonce`). This module adds what it leaves to the relying party:
//!
//! - [`provider`]: the cached discovery document (lazy, so start-up never waits for the
//!   provider), a rate-limited JWKS refetch when an unknown `kid` appears, the allowed
//!   algorithms (the provider's, minus `none` and HMAC), Google's second issuer spelling,
//!   `azp` and `iat` checks;
//! - [`state_cookie`]: the sealed OAuth state cookie (single use is recorded in the store);
//! - [`next`]: the `next` redirect rule;
//! - [`account`]: users keyed on (issuer, `sub`), linking by verified email.

pub mod account;
pub mod next;
pub mod provider;
pub mod state_cookie;

pub use provider::{Identity, Provider};

/// Why an OpenID sign-in ended on `/login?error=CODE` (SPEC 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthFailure {
    /// No valid, unused state cookie matching the `state` parameter.
    StateMismatch,
    /// The provider returned an `error` (e.g. the user declined).
    Denied,
    /// Anything else: provider unreachable, code exchange or ID-token validation failed,
    /// no usable email, account disabled, database trouble.
    Failed,
    /// The provider's email matches an existing account but the provider does not vouch
    /// for it.
    EmailNotVerified,
}

impl OAuthFailure {
    /// The stable `error` code in the redirect.
    pub fn code(self) -> &'static str {
        match self {
            OAuthFailure::StateMismatch => "oauth_state_mismatch",
            OAuthFailure::Denied => "oauth_denied",
            OAuthFailure::Failed => "oauth_failed",
            OAuthFailure::EmailNotVerified => "email_not_verified",
        }
    }
}

impl From<crate::store::StoreError> for OAuthFailure {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "openid sign-in: store error");
        OAuthFailure::Failed
    }
}
