//! From a validated identity to a latchkey user (SPEC 6).
//!
//! Users are keyed on (issuer, `sub`), never on email. An identity seen for the first time
//! links to the existing account of the same (canonical) email only when the provider says
//! `email_verified: true`; an unverified match fails with `email_not_verified`; no match
//! creates a user without a password, only from a verified email. Linking a verified
//! identity to an account whose email was never verified removes that account's password
//! and revokes its sessions (see `Store::link_identity`): latchkey never verified the
//! address, so the password's owner may be a squatter.

use super::{Identity, OAuthFailure};
use crate::clock::now_ms;
use crate::domain::{DisplayName, Email, UserId};
use crate::events::{Event, EventKind};
use crate::state::AppState;
use crate::store::{NewIdentity, NewUser, StoreError, UserRecord};

/// The user this identity signs in as, creating or linking on first sign-in.
pub async fn resolve_user(state: &AppState, id: &Identity) -> Result<UserRecord, OAuthFailure> {
    let store = state.store();
    // A concurrent first sign-in of the same identity or email can win a race; the loser
    // finds its work done on the next round.
    for _ in 0..3 {
        if let Some(user) = store.user_by_identity(&id.issuer, &id.subject).await? {
            return Ok(user);
        }
        let Some(email) = id.email.as_deref().and_then(|e| Email::parse(e).ok()) else {
            tracing::warn!(issuer = %id.issuer, "OpenID sign-in: the ID token carries no usable email");
            return Err(OAuthFailure::Failed);
        };
        let now = now_ms();
        match store.user_by_email(&email).await? {
            Some(existing) => {
                if !id.email_verified {
                    tracing::info!(user_id = %existing.id, "OpenID sign-in: unverified email matches an existing account; not linked");
                    return Err(OAuthFailure::EmailNotVerified);
                }
                let link = NewIdentity {
                    issuer: id.issuer.clone(),
                    subject: id.subject.clone(),
                    user_id: existing.id,
                    email: Some(email.as_str().to_owned()),
                    created_at: now,
                };
                // SPEC 12: the link and its event in one transaction.
                let linked = Event::new(EventKind::IdentityLinked, now)
                    .user(existing.id)
                    .with("issuer", id.issuer.clone());
                match store.link_identity(&link, true, &[linked]).await {
                    Ok(revoked) => {
                        // The squatter's sessions stop working here at once (finding 7).
                        crate::session::mark_revoked(state, &revoked, now, "email_claimed");
                        tracing::info!(user_id = %existing.id, "OpenID sign-in: identity linked to the existing account of its verified email");
                        let password_hash = if existing.email_verified {
                            existing.password_hash.clone()
                        } else {
                            None
                        };
                        return Ok(UserRecord {
                            email_verified: true,
                            password_hash,
                            ..existing
                        });
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                // An account made from an address nobody verified could later capture the
                // owner's verified sign-in (pre-hijacking): refuse it.
                if !id.email_verified {
                    tracing::info!(issuer = %id.issuer, "OpenID sign-in: unverified email; no account created");
                    return Err(OAuthFailure::EmailNotVerified);
                }
                let user = NewUser {
                    id: UserId::new(),
                    email: email.clone(),
                    name: DisplayName::from_provider(id.name.as_deref())
                        .map(DisplayName::into_string),
                    password_hash: None,
                    email_verified: id.email_verified,
                    created_at: now,
                };
                let link = NewIdentity {
                    issuer: id.issuer.clone(),
                    subject: id.subject.clone(),
                    user_id: user.id,
                    email: Some(email.as_str().to_owned()),
                    created_at: now,
                };
                let signup = Event::new(EventKind::Signup, now)
                    .user(user.id)
                    .with("method", "oidc")
                    .with("issuer", id.issuer.clone());
                match store
                    .create_user_with_identity(user, &link, &[signup])
                    .await
                {
                    Ok(created) => {
                        tracing::info!(user_id = %created.id, "OpenID sign-in: new user");
                        return Ok(created);
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    tracing::warn!(issuer = %id.issuer, "OpenID sign-in: could not settle the account after repeated conflicts");
    Err(OAuthFailure::Failed)
}
