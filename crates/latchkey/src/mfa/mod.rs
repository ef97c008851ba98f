//! Second factors and recent authentication (SPEC 11).
//!
//! - [`amr`]: how a session authenticated (RFC 8176), stored on the session and copied into
//!   its access tokens.
//! - [`totp`]: the TOTP rule (RFC 6238) — which step a code matches.
//! - [`recovery`]: recovery codes (shown once, stored as SHA-256).
//! - [`pending`]: the sign-in waiting for its second factor, behind the second-factor cookie.
//! - [`require`]: the `RequireRecentAuth` and `RequireMfa` extractors.
//!
//! Handlers are in `http/mfa.rs`; the passkeys module builds on [`pending`] and
//! `http::mfa::complete_pending_login` to offer a passkey as the second factor.

pub mod amr;
pub mod pending;
pub mod recovery;
pub mod require;
pub mod totp;

pub use amr::Amr;
pub use require::{RequireMfa, RequireRecentAuth};
