//! Delivery of the outbox over SMTP (SPEC 10): at least once, and never twice while the
//! instances agree on time.
//!
//! Each instance runs one worker. It claims due messages for [`LEASE`] (several instances
//! never claim the same row), sends each, and records the outcome: sent (body erased),
//! retry later with exponential backoff, or given up — on a permanent SMTP refusal, or
//! [`GIVE_UP_AFTER`] after the message was queued. A process killed between claim and
//! send leaves the row to be claimed again once its lease ran out; one killed before the
//! claim leaves it due. Either way the message goes out after a restart.

use std::sync::Weak;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use secrecy::ExposeSecret as _;

use super::Mailer;
use crate::clock::{ms, now_ms};
use crate::store::{MailOutcome, OutboxEntry, Store};

/// How long a claimed message is held by the instance sending it.
pub const LEASE: Duration = Duration::from_secs(120);
/// One SMTP conversation at most (well inside [`LEASE`]).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Retrying stops this long after the message was queued.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often the worker looks for due messages when nothing woke it.
pub const POLL: Duration = Duration::from_secs(1);

/// The wait before attempt `attempts + 1`: 5 s doubling per attempt, at most 30 minutes,
/// with up to 20 % jitter so instances do not retry in step.
pub fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 20) - 1;
    let base = Duration::from_secs(5)
        .saturating_mul(1u32 << exp.min(16))
        .min(Duration::from_secs(30 * 60));
    let jitter = base.mul_f64(rand::random::<f64>() * 0.2);
    base + jitter
}

/// The SMTP transport `SMTP_URL` names.
pub fn transport(
    url: &str,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
        .timeout(Some(SMTP_TIMEOUT))
        .build())
}

/// What the worker needs from the application: the store and the mailer.
pub trait Outbox: Send + Sync + 'static {
    fn store(&self) -> &dyn Store;
    fn mailer(&self) -> &Mailer;
}

/// Runs the delivery worker until the application is dropped.
pub fn spawn_worker<A: Outbox>(app: Weak<A>, smtp: AsyncSmtpTransport<Tokio1Executor>) {
    let Some(wake) = app.upgrade().map(|a| a.mailer().wake_handle()) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            // Registered before the claim, so a message queued meanwhile is not missed.
            notified.as_mut().enable();
            {
                let Some(a) = app.upgrade() else { break };
                if deliver_due(&*a, &smtp).await {
                    continue;
                }
            }
            let _ = tokio::time::timeout(POLL, notified).await;
        }
    });
}

/// Claims and sends what is due now; true when it found something (look again at once).
async fn deliver_due<A: Outbox>(a: &A, smtp: &AsyncSmtpTransport<Tokio1Executor>) -> bool {
    let now = now_ms();
    let batch = match a.store().claim_mail(now, now + ms(LEASE), 10).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "outbox: claiming mail failed; retrying");
            return false;
        }
    };
    let found = !batch.is_empty();
    for entry in batch {
        let outcome = send_one(a.mailer(), smtp, &entry).await;
        let at = now_ms();
        let recorded = match &outcome {
            Ok(()) => {
                metrics::counter!("latchkey_mail_sent_total").increment(1);
                tracing::info!(id = %entry.id, kind = %entry.kind, attempts = entry.attempts, "mail delivered");
                MailOutcome::Sent { at }
            }
            Err(Failure::Permanent(e)) => {
                metrics::counter!("latchkey_mail_failed_total").increment(1);
                tracing::warn!(id = %entry.id, kind = %entry.kind, error = %e, "mail refused for good; not retried");
                MailOutcome::Failed { at, error: e }
            }
            Err(Failure::Transient(e)) => {
                metrics::counter!("latchkey_mail_attempt_errors_total").increment(1);
                if at - entry.created_at >= ms(GIVE_UP_AFTER) {
                    metrics::counter!("latchkey_mail_failed_total").increment(1);
                    tracing::warn!(id = %entry.id, kind = %entry.kind, error = %e, attempts = entry.attempts, "mail not delivered within 24 hours; given up");
                    MailOutcome::Failed { at, error: e }
                } else {
                    let next = at + ms(backoff(entry.attempts));
                    tracing::warn!(id = %entry.id, kind = %entry.kind, error = %e, attempts = entry.attempts, "mail delivery failed; will retry");
                    MailOutcome::Retry { at: next, error: e }
                }
            }
        };
        if let Err(e) = a.store().finish_mail(&entry.id, recorded).await {
            // The lease runs out and the message is tried again: at least once.
            tracing::warn!(id = %entry.id, error = %e, "outbox: recording a delivery failed");
        }
    }
    found
}

enum Failure {
    /// Will not work on retry (the server refused the recipient, the body is unreadable).
    Permanent(String),
    Transient(String),
}

async fn send_one(
    mailer: &Mailer,
    smtp: &AsyncSmtpTransport<Tokio1Executor>,
    entry: &OutboxEntry,
) -> Result<(), Failure> {
    let Some(msg) = mailer.open(entry) else {
        return Err(Failure::Permanent(
            "body missing or not readable with SECRETS_KEY".into(),
        ));
    };
    let to: Mailbox = msg
        .to
        .parse()
        .map_err(|e| Failure::Permanent(format!("recipient refused by the mail library: {e}")))?;
    let email = lettre::Message::builder()
        .from(mailer.from().clone())
        .to(to)
        .subject(msg.subject)
        .multipart(MultiPart::alternative_plain_html(msg.text, msg.html))
        .map_err(|e| Failure::Permanent(format!("message not buildable: {e}")))?;
    match smtp.send(email).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
        Err(e) => Err(Failure::Transient(e.to_string())),
    }
}

/// Keeps the outbox gauges current (queue length, age of the oldest unsent message).
pub async fn update_gauges(store: &dyn Store) {
    match store.mail_stats().await {
        Ok(s) => {
            metrics::gauge!("latchkey_mail_queued").set(s.queued as f64);
            let age = s
                .oldest_unsent_at
                .map(|t| ((now_ms() - t).max(0) as f64) / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("latchkey_mail_oldest_unsent_seconds").set(age);
        }
        Err(e) => tracing::debug!(error = %e, "outbox statistics unavailable"),
    }
}

/// The SMTP URL of the configuration, if mail is delivered.
pub fn smtp_url(t: &crate::config::MailTransport) -> Option<&str> {
    match t {
        crate::config::MailTransport::Smtp(u) => Some(u.expose_secret()),
        _ => None,
    }
}
