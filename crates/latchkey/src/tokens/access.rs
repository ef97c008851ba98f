//! The access-token rule: how latchkey signs and verifies its EdDSA JWTs (SPEC 4).
//!
//! Verification pins everything: only `alg: EdDSA`, only `typ: at+jwt`, only a `kid` in the
//! key ring, `iss` and `aud` equal to PUBLIC_URL, `exp` and `nbf` checked with
//! [`LEEWAY_SECS`], required claims present, no `crit`. Header keys (`jku`, `x5u`, `jwk`) are
//! never fetched or used. Revocation (`sid`) is checked by the caller against the in-memory
//! set, not here.

use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::KeySet;
use crate::domain::{SessionId, UserId};

/// Clock-skew allowance for `exp`/`nbf`. The SPEC allows up to 60 s; latchkey both issues
/// and verifies, so a small value keeps short lifetimes meaningful.
pub const LEEWAY_SECS: u64 = 5;
/// Longer tokens are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The explicit type of latchkey access tokens (RFC 9068, RFC 8725 §3.11).
pub const TYP: &str = "at+jwt";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub sid: SessionId,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// When the user last authenticated in this session (Unix seconds; OIDC Core 2), kept
    /// across refresh. Tokens issued before the claim existed read as 0: never recent.
    #[serde(default)]
    pub auth_time: i64,
    /// How the user authenticated at `auth_time` (RFC 8176: `pwd`, `otp`, `hwk`, `swk`,
    /// `fed`, `mfa`), kept across refresh. Left out when unknown (sessions from before the
    /// claim existed); tokens without it read as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

impl AccessClaims {
    /// Whether the user authenticated within `window` of `now_secs` (SPEC 11's recent
    /// authentication).
    pub fn authenticated_within(&self, window: std::time::Duration, now_secs: i64) -> bool {
        self.auth_time > 0 && now_secs.saturating_sub(self.auth_time) <= window.as_secs() as i64
    }

    /// The `amr` claim as a set (unknown values ignored).
    pub fn amr(&self) -> crate::mfa::Amr {
        crate::mfa::Amr::from_names(self.amr.iter().map(String::as_str))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("expired")]
    Expired,
    #[error("invalid")]
    Invalid,
    /// Well-formed, but signed with a `kid` not in the ring (maybe a key rotated elsewhere).
    #[error("unknown key")]
    UnknownKid,
}

/// What an access token is issued for: the user, the session, when the user last
/// authenticated in it (Unix seconds) and how.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    pub sub: UserId,
    pub sid: SessionId,
    pub auth_time: i64,
    pub amr: crate::mfa::Amr,
}

/// Signs a new access token for `who` valid `ttl_secs` from `now_secs`.
pub fn issue(
    keys: &KeySet,
    public_url: &str,
    who: Subject,
    now_secs: i64,
    ttl_secs: i64,
) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
    let Subject {
        sub,
        sid,
        auth_time,
        amr,
    } = who;
    let claims = AccessClaims {
        iss: public_url.to_owned(),
        aud: public_url.to_owned(),
        sub,
        sid,
        iat: now_secs,
        exp: now_secs + ttl_secs,
        jti: Uuid::new_v4().to_string(),
        auth_time,
        amr: amr.to_claim(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TYP.to_owned());
    header.kid = Some(keys.signing.0.clone());
    let token = jsonwebtoken::encode(&header, &claims, &keys.signing.1)?;
    Ok((token, claims))
}

/// Verifies a token against the key set.
pub fn verify(keys: &KeySet, public_url: &str, token: &str) -> Result<AccessClaims, TokenError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Invalid);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
    if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TYP) || header.crit.is_some()
    {
        return Err(TokenError::Invalid);
    }
    let kid = header.kid.ok_or(TokenError::Invalid)?;
    let key = keys.verifying.get(&kid).ok_or(TokenError::UnknownKid)?;

    let mut v = Validation::new(Algorithm::EdDSA);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[public_url]);
    v.set_audience(&[public_url]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    match jsonwebtoken::decode::<AccessClaims>(token, key, &v) {
        Ok(data) => Ok(data.claims),
        Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
        Err(_) => Err(TokenError::Invalid),
    }
}
