//! Passkeys (SPEC 11): the WebAuthn relying party and its two ceremonies, registration and
//! discoverable (usernameless) sign-in, on top of `webauthn-rs`.
//!
//! A ceremony's server-side state (webauthn-rs's `PasskeyRegistration` /
//! `DiscoverableAuthentication`, which holds the challenge) is stored in the database keyed
//! by the SHA-256 of a random ceremony id that only the browser holds, so any instance can
//! finish what another started. `finish` *takes* the state (deletes it) before verifying:
//! each challenge is answered at most once, whatever the outcome, and it expires after
//! [`CEREMONY_TTL`]. The credential itself (public key, counter) is public material and is
//! stored in clear (see the migration).
//!
//! The relying-party id is `PUBLIC_URL`'s host and the only accepted origin is its origin;
//! a `PUBLIC_URL` whose host is not a domain name (an IP address) has no passkeys.

use std::time::Duration;

use url::Url;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use crate::clock::ms;
use crate::config::Config;
use crate::domain::UserId;
use crate::error::ApiError;
use crate::mfa::Amr;
use crate::state::AppState;
use crate::store::{CeremonyKind, CeremonyRecord, PasskeyRecord, StoreError, UserRecord};

/// The random id naming a ceremony in progress: 256 bits, 43 base64url characters; the
/// store keeps only its SHA-256.
pub use crate::tokens::refresh::RefreshToken as CeremonyId;

/// How long a ceremony may take (the WebAuthn recommended timeout, also sent to the
/// browser as `timeout`).
pub const CEREMONY_TTL: Duration = webauthn_rs::DEFAULT_AUTHENTICATOR_TIMEOUT;

/// The name a passkey gets when none is given.
pub const DEFAULT_NAME: &str = "Passkey";

/// The WebAuthn relying party of this deployment.
pub struct RelyingParty {
    webauthn: Webauthn,
}

impl RelyingParty {
    /// The relying party `PUBLIC_URL` describes; `None` when its host is not a domain name.
    pub fn from_config(config: &Config) -> Option<Self> {
        let origin = Url::parse(&config.public_origin).ok()?;
        let rp_id = origin.domain()?.to_owned();
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .ok()?
            .rp_name("latchkey")
            .timeout(CEREMONY_TTL)
            .build()
            .ok()?;
        Some(Self { webauthn })
    }
}

/// A started ceremony: the id the browser sends back to finish it, and the options for
/// `navigator.credentials.create()` / `.get()` (webauthn-rs's JSON: binary fields are
/// base64url strings).
pub struct Started<O> {
    pub ceremony: CeremonyId,
    pub options: O,
}

/// A finished sign-in: the user, and how they proved it (RFC 8176 `amr` values).
pub struct SignedIn {
    pub user: UserRecord,
    pub passkey: PasskeyRecord,
    pub amr: Amr,
}

pub(crate) fn rp(state: &AppState) -> Result<&RelyingParty, ApiError> {
    state.relying_party().ok_or(ApiError::PasskeysNotConfigured)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ApiError> {
    serde_json::to_string(v).map_err(ApiError::internal)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, ApiError> {
    serde_json::from_str(s).map_err(ApiError::internal)
}

async fn save_ceremony(
    state: &AppState,
    kind: CeremonyKind,
    user: Option<UserId>,
    json: String,
) -> Result<CeremonyId, ApiError> {
    let id = CeremonyId::generate();
    let now = state.config().clock.now_ms();
    state
        .store()
        .insert_ceremony(
            &CeremonyRecord {
                id_hash: id.hash(),
                kind,
                user_id: user,
                state: json,
                created_at: now,
                expires_at: now.saturating_add(ms(CEREMONY_TTL)),
            },
            now,
        )
        .await?;
    Ok(id)
}

/// Takes the ceremony `raw` names: 400 `passkey_challenge_expired` when it is malformed,
/// unknown, used, expired or of another kind.
async fn take_ceremony(
    state: &AppState,
    raw: &str,
    kind: CeremonyKind,
) -> Result<CeremonyRecord, ApiError> {
    let id = CeremonyId::parse(raw).ok_or(ApiError::PasskeyChallengeExpired)?;
    let now = state.config().clock.now_ms();
    state
        .store()
        .take_ceremony(&id.hash(), kind, now)
        .await?
        .ok_or(ApiError::PasskeyChallengeExpired)
}

/// A failed verification: logged (the reason is no secret), answered `passkey_invalid`.
fn rejected(e: WebauthnError, ceremony: &str) -> ApiError {
    if matches!(e, WebauthnError::CredentialPossibleCompromise) {
        tracing::warn!(
            ceremony,
            "passkey signature counter did not increase: possibly a cloned authenticator; refused"
        );
    } else {
        tracing::info!(ceremony, error = %e, "passkey response refused");
    }
    ApiError::PasskeyInvalid
}

/// Parses a WebAuthn response of the shape webauthn-rs expects; 400 `passkey_invalid`
/// otherwise.
pub fn parse_credential<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|_| ApiError::PasskeyInvalid)
}

/// Starts adding a passkey to `user`'s account. The user's passkeys are excluded (an
/// authenticator holding one of them refuses to make a second), and the authenticator is
/// asked for a discoverable credential (`residentKey: required`), which sign-in without a
/// typed email needs.
pub async fn start_registration(
    state: &AppState,
    user: &UserRecord,
) -> Result<Started<serde_json::Value>, ApiError> {
    let rp = rp(state)?;
    let existing = state.store().passkeys(user.id).await?;
    let exclude: Vec<_> = existing.into_iter().map(|p| p.credential_id).collect();
    let display = user.name.as_deref().unwrap_or(user.email.as_str());
    let (options, reg) = rp
        .webauthn
        .start_passkey_registration(
            user.id.0,
            user.email.as_str(),
            display,
            (!exclude.is_empty()).then_some(exclude),
        )
        .map_err(ApiError::internal)?;
    // webauthn-rs asks for a non-resident key by default; discoverable sign-in needs one
    // stored on the authenticator. (The server cannot verify residency; the credProps
    // extension reports it where the browser supports it.)
    let mut options = serde_json::to_value(&options).map_err(ApiError::internal)?;
    if let Some(sel) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(|v| v.as_object_mut())
    {
        sel.insert("residentKey".into(), "required".into());
        sel.insert("requireResidentKey".into(), true.into());
    }
    let ceremony =
        save_ceremony(state, CeremonyKind::Register, Some(user.id), to_json(&reg)?).await?;
    Ok(Started { ceremony, options })
}

/// Finishes adding a passkey: the ceremony must be this user's registration.
pub async fn finish_registration(
    state: &AppState,
    user: UserId,
    ceremony: &str,
    credential: &RegisterPublicKeyCredential,
    name: String,
    added: crate::events::Event,
) -> Result<PasskeyRecord, ApiError> {
    let rp = rp(state)?;
    let c = take_ceremony(state, ceremony, CeremonyKind::Register).await?;
    if c.user_id != Some(user) {
        return Err(ApiError::PasskeyChallengeExpired);
    }
    let reg: PasskeyRegistration = from_json(&c.state)?;
    let passkey = rp
        .webauthn
        .finish_passkey_registration(credential, &reg)
        .map_err(|e| rejected(e, "register"))?;
    let now = state.config().clock.now_ms();
    let record = PasskeyRecord {
        id: uuid::Uuid::now_v7(),
        user_id: user,
        credential_id: passkey.cred_id().to_vec(),
        credential: to_json(&passkey)?,
        name,
        created_at: now,
        last_used_at: None,
    };
    // SPEC 12: `passkey_added` (its id and name), in the insert's transaction.
    let added = added
        .with("passkey_id", record.id.to_string())
        .with("name", record.name.clone());
    match state.store().insert_passkey(&record, &[added]).await {
        Ok(()) => Ok(record),
        Err(StoreError::Conflict) => Err(ApiError::PasskeyExists),
        Err(e) => Err(e.into()),
    }
}

/// Starts a sign-in with a discoverable passkey (no user named). The same options serve a
/// button (`navigator.credentials.get` with the default mediation) and conditional UI
/// (`mediation: 'conditional'`): the page chooses, so `mediation` is left out.
pub async fn start_login(state: &AppState) -> Result<Started<serde_json::Value>, ApiError> {
    let rp = rp(state)?;
    let (mut options, auth) = rp
        .webauthn
        .start_discoverable_authentication()
        .map_err(ApiError::internal)?;
    options.mediation = None;
    let options = serde_json::to_value(&options).map_err(ApiError::internal)?;
    let ceremony = save_ceremony(state, CeremonyKind::Login, None, to_json(&auth)?).await?;
    Ok(Started { ceremony, options })
}

/// Finishes a passkey sign-in: the credential must be registered, to the user its user
/// handle names, and its signature must verify over this ceremony's challenge for this
/// origin with user verification, with a counter that went up (or stays 0).
pub async fn finish_login(
    state: &AppState,
    ceremony: &str,
    credential: &PublicKeyCredential,
) -> Result<SignedIn, ApiError> {
    let rp = rp(state)?;
    let c = take_ceremony(state, ceremony, CeremonyKind::Login).await?;
    let auth: DiscoverableAuthentication = from_json(&c.state)?;
    let (handle, cred_id) = rp
        .webauthn
        .identify_discoverable_authentication(credential)
        .map_err(|e| rejected(e, "login"))?;
    let mut record = state
        .store()
        .passkey_by_credential_id(cred_id)
        .await?
        .ok_or(ApiError::PasskeyUnknown)?;
    if record.user_id.0 != handle {
        tracing::info!(
            "passkey sign-in refused: the user handle does not name the credential's owner"
        );
        return Err(ApiError::PasskeyInvalid);
    }
    let mut passkey: Passkey = from_json(&record.credential)?;
    let result = rp
        .webauthn
        .finish_discoverable_authentication_v2(credential, auth, &passkey)
        .map_err(|e| rejected(e, "login"))?;
    let now = state.config().clock.now_ms();
    let updated = match passkey.update_credential(&result) {
        Some(true) => Some(to_json(&passkey)?),
        _ => None,
    };
    state
        .store()
        .touch_passkey(record.id, updated.as_deref(), now)
        .await?;
    if let Some(u) = updated {
        record.credential = u;
    }
    record.last_used_at = Some(now);
    let user = state
        .store()
        .user_by_id(record.user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or(ApiError::InvalidCredentials)?;
    Ok(SignedIn {
        user,
        passkey: record,
        amr: amr(&result),
    })
}

/// RFC 8176 `amr` of a passkey sign-in. Always `mfa`: webauthn-rs requires user
/// verification (PIN or biometric on the authenticator) on top of possession of the key.
/// The key kind cannot be attested (attestation is not requested), so it is inferred from
/// the backup-eligible flag: a key that may be synced to other devices (a cloud-synced
/// passkey) lives in software, `swk`; one that may not is bound to its device, `hwk`.
pub fn amr(result: &AuthenticationResult) -> Amr {
    key_kind(result) | Amr::MFA
}

/// `hwk` or `swk` (see [`amr`]).
pub fn key_kind(result: &AuthenticationResult) -> Amr {
    if result.backup_eligible() {
        Amr::SWK
    } else {
        Amr::HWK
    }
}

/// Starts a passkey ceremony for a user already known — the second step of a password
/// sign-in, or reauthentication — offering that user's passkeys (`allowCredentials`).
/// 400 `passkey_unknown` when the user has none.
pub async fn start_for_user(
    state: &AppState,
    user: UserId,
    kind: CeremonyKind,
) -> Result<Started<serde_json::Value>, ApiError> {
    let rp = rp(state)?;
    let passkeys = state
        .store()
        .passkeys(user)
        .await?
        .iter()
        .map(|p| from_json::<Passkey>(&p.credential))
        .collect::<Result<Vec<_>, _>>()?;
    if passkeys.is_empty() {
        return Err(ApiError::PasskeyUnknown);
    }
    let (options, auth) = rp
        .webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(ApiError::internal)?;
    let options = serde_json::to_value(&options).map_err(ApiError::internal)?;
    let ceremony = save_ceremony(state, kind, Some(user), to_json(&auth)?).await?;
    Ok(Started { ceremony, options })
}

/// Finishes a [`start_for_user`] ceremony: the ceremony must be of `kind` and `user`'s, the
/// credential one of the passkeys it offered, the response verify as in [`finish_login`].
/// Returns the key kind (`hwk` or `swk`).
pub async fn finish_for_user(
    state: &AppState,
    user: UserId,
    kind: CeremonyKind,
    ceremony: &str,
    credential: &PublicKeyCredential,
) -> Result<Amr, ApiError> {
    let rp = rp(state)?;
    let c = take_ceremony(state, ceremony, kind).await?;
    if c.user_id != Some(user) {
        return Err(ApiError::PasskeyChallengeExpired);
    }
    let auth: PasskeyAuthentication = from_json(&c.state)?;
    let result = rp
        .webauthn
        .finish_passkey_authentication(credential, &auth)
        .map_err(|e| rejected(e, kind.as_str()))?;
    // The stored passkey it was (still the user's: it may have been removed meanwhile).
    let record = state
        .store()
        .passkey_by_credential_id(result.cred_id())
        .await?
        .filter(|p| p.user_id == user)
        .ok_or(ApiError::PasskeyUnknown)?;
    let mut passkey: Passkey = from_json(&record.credential)?;
    let updated = match passkey.update_credential(&result) {
        Some(true) => Some(to_json(&passkey)?),
        _ => None,
    };
    let now = state.config().clock.now_ms();
    state
        .store()
        .touch_passkey(record.id, updated.as_deref(), now)
        .await?;
    Ok(key_kind(&result))
}
