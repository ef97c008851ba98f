//! Mail (SPEC 10): what latchkey sends, how it is composed, and how it reaches the outbox.
//!
//! A message is composed from the templates in `templates/mail/` with links built from
//! `PUBLIC_URL` only (never a request's `Host`), sealed with `SECRETS_KEY` (it carries a live
//! link) and written to the outbox by [`crate::store::Store::apply`] in the same transaction
//! as the change that causes it. [`outbox`] delivers it over SMTP. Tokens in links are
//! 256 random bits in the URL's fragment, stored only as SHA-256 (see [`MailToken`]).

pub mod outbox;
pub(crate) mod templates;

use std::sync::Arc;

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::clock::{ms, now_ms};
use crate::config::{Config, MailTransport};
use crate::domain::{Email, UserId};
use crate::secrets::SecretsKey;
use crate::store::{EmailToken, OutboxEntry, SecretTable, TokenPurpose};

/// A token sent by mail has the refresh token's shape: 256 random bits, base64url, and
/// only its SHA-256 is stored.
pub use crate::tokens::refresh::RefreshToken as MailToken;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    VerifyEmail,
    ResetPassword,
    ConfirmEmailChange,
    PasswordChanged,
    PasswordReset,
    EmailChanged,
    /// The last second factor was removed (SPEC 11).
    MfaDisabled,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::ResetPassword => "reset_password",
            MailKind::ConfirmEmailChange => "confirm_email_change",
            MailKind::PasswordChanged => "password_changed",
            MailKind::PasswordReset => "password_reset",
            MailKind::EmailChanged => "email_changed",
            MailKind::MfaDisabled => "mfa_disabled",
        }
    }

    /// The page a token of `purpose` is redeemed on.
    fn token_page(purpose: TokenPurpose) -> &'static str {
        match purpose {
            TokenPurpose::VerifyEmail => "/verify-email",
            TokenPurpose::ResetPassword => "/reset-password",
            TokenPurpose::ChangeEmail => "/confirm-email",
        }
    }

    fn for_token(purpose: TokenPurpose) -> Self {
        match purpose {
            TokenPurpose::VerifyEmail => MailKind::VerifyEmail,
            TokenPurpose::ResetPassword => MailKind::ResetPassword,
            TokenPurpose::ChangeEmail => MailKind::ConfirmEmailChange,
        }
    }
}

/// A composed message, as the outbox keeps it (sealed). Never `Debug`: it holds a live link.
#[derive(Serialize, Deserialize)]
pub struct Message {
    /// The recipient's address (canonical; never a display name, so nothing a user typed
    /// reaches a header but the checked address).
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The links in the message, for the development outbox page.
    pub links: Vec<String>,
}

/// A message ready for [`crate::store::Change::Enqueue`], and the token it carries.
pub struct Outgoing {
    pub entry: OutboxEntry,
    /// The stored form of the token the message links to, if any.
    pub token: Option<EmailToken>,
    /// For the development log line.
    links: Vec<String>,
    to: String,
}

/// Composes, seals and (after the transaction) announces mail. One per [`crate::AppState`].
pub struct Mailer {
    transport: MailTransport,
    from: Mailbox,
    public_url: String,
    key: SecretsKey,
    /// Wakes this instance's delivery worker when it queued something.
    wake: Arc<Notify>,
    /// Forgot-password requests, handled after the response (SPEC 10: same answer and time
    /// for known and unknown addresses).
    reset_requests: mpsc::Sender<(Email, String)>,
}

/// Forgot-password requests waiting at most; more are dropped (and logged) rather than held.
pub const RESET_QUEUE: usize = 1024;

impl Mailer {
    /// The mailer and the receiving end of its forgot-password queue.
    pub fn new(config: &Config, key: SecretsKey) -> (Self, mpsc::Receiver<(Email, String)>) {
        let (tx, rx) = mpsc::channel(RESET_QUEUE);
        let from = config
            .mail
            .from
            .parse()
            .unwrap_or_else(|_| "latchkey <no-reply@localhost>".parse().expect("valid"));
        (
            Self {
                transport: config.mail.transport.clone(),
                from,
                public_url: config.public_url.clone(),
                key,
                wake: Arc::new(Notify::new()),
                reset_requests: tx,
            },
            rx,
        )
    }

    /// False with `SMTP_URL=disabled`: the mail flows answer 404 `mail_not_configured`.
    pub fn enabled(&self) -> bool {
        !matches!(self.transport, MailTransport::Disabled)
    }

    /// True in development without `SMTP_URL` (`/dev/mail`).
    pub fn dev_outbox(&self) -> bool {
        matches!(self.transport, MailTransport::DevOutbox)
    }

    pub fn transport(&self) -> &MailTransport {
        &self.transport
    }

    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    pub(crate) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// A message carrying a new token of `purpose` for `user`, sent to `to` (the address the
    /// token is bound to).
    pub fn with_token(&self, purpose: TokenPurpose, user: UserId, to: &Email) -> Outgoing {
        let now = now_ms();
        let token = MailToken::generate();
        let link = format!(
            "{}{}#token={}",
            self.public_url,
            MailKind::token_page(purpose),
            token.expose()
        );
        let stored = EmailToken {
            hash: token.hash(),
            purpose,
            user_id: user,
            email: to.clone(),
            created_at: now,
            expires_at: now.saturating_add(ms(purpose.lifetime())),
            used_at: None,
        };
        let mut out = self.compose(MailKind::for_token(purpose), to, to, link, now);
        out.token = Some(stored);
        out
    }

    /// A notice (no token) of `kind` to `to` about the account now at `account`.
    pub fn notice(&self, kind: MailKind, to: &Email, account: &Email) -> Outgoing {
        let link = format!("{}/forgot-password", self.public_url);
        self.compose(kind, to, account, link, now_ms())
    }

    fn compose(
        &self,
        kind: MailKind,
        to: &Email,
        account: &Email,
        link: String,
        now: i64,
    ) -> Outgoing {
        let (subject, text, html) = templates::render(
            kind,
            &templates::Values {
                site: &self.public_url,
                email: to.as_str(),
                new_email: account.as_str(),
                link: &link,
            },
        );
        let links = vec![link];
        let message = Message {
            to: to.as_str().to_owned(),
            subject,
            text,
            html,
            links: links.clone(),
        };
        let id = uuid::Uuid::now_v7().to_string();
        let plain = serde_json::to_vec(&message).expect("a message serializes");
        let body = self.key.seal(SecretTable::Outbox, &id, &plain);
        Outgoing {
            entry: OutboxEntry {
                id,
                kind: kind.as_str().to_owned(),
                body: Some(body),
                created_at: now,
                next_attempt_at: now,
                attempts: 0,
                sent_at: None,
                failed_at: None,
            },
            token: None,
            links,
            to: message.to,
        }
    }

    /// Opens a queued message's body.
    pub fn open(&self, entry: &OutboxEntry) -> Option<Message> {
        let body = entry.body.as_ref()?;
        let plain = self.key.open(SecretTable::Outbox, &entry.id, body).ok()?;
        use secrecy::ExposeSecret as _;
        serde_json::from_slice(plain.expose_secret()).ok()
    }

    /// Call once the transaction that wrote `sent` committed: wakes the delivery worker, and
    /// in development without SMTP logs each message's link (SPEC 10).
    pub fn queued(&self, sent: &[&Outgoing]) {
        metrics::counter!("latchkey_mail_queued_total").increment(sent.len() as u64);
        if self.dev_outbox() {
            for m in sent {
                tracing::info!(
                    to = %m.to,
                    kind = %m.entry.kind,
                    links = ?m.links,
                    "mail kept in the development outbox (no SMTP_URL); also listed at /dev/mail"
                );
            }
        } else {
            self.wake.notify_one();
        }
    }

    /// Hands a forgot-password request to the background (the response does not wait for
    /// the lookup or the mail). False when the queue is full.
    pub fn request_reset(&self, email: Email, ip: String) -> bool {
        self.reset_requests.try_send((email, ip)).is_ok()
    }
}
