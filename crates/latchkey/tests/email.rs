//! The email flows of SPEC 10 over real HTTP and a real SMTP server (`scripts/smtp_sink.py`),
//! on SQLite, and on PostgreSQL when `LATCHKEY_TEST_POSTGRES` is set.

mod common;

#[path = "email/flows.rs"]
mod flows;
#[path = "email/guards.rs"]
mod guards;
#[path = "email/outbox.rs"]
mod outbox;

use common::smtp::{Sink, use_sink};
use common::{TestApp, spawn_with};
use latchkey::config::Quota;
use std::time::Duration;

/// An app delivering to `sink`, with the mail rate limits out of the way (tests that check
/// the limits set their own).
pub async fn app_with_mail(sink: &Sink) -> TestApp {
    app_with_mail_and(sink, |_| {}).await
}

pub async fn app_with_mail_and(sink: &Sink, tweak: impl FnOnce(&mut latchkey::Config)) -> TestApp {
    spawn_with(|c| {
        use_sink(c, sink);
        raise_limits(c);
        tweak(c);
    })
    .await
}

/// Takes the mail limits and the per-IP auth limit out of the way.
pub fn raise_limits(c: &mut latchkey::Config) {
    let lots = Quota {
        burst: 10_000,
        period: Duration::from_millis(1),
    };
    c.rate_limits.mail_per_ip = lots;
    c.rate_limits.mail_per_address = lots;
    c.rate_limits.auth_per_ip = lots;
}

/// Subjects of the messages latchkey sends.
pub mod subject {
    pub const VERIFY: &str = "Verify your email address";
    pub const RESET: &str = "Reset your password";
    pub const CONFIRM_CHANGE: &str = "Confirm your new email address";
    pub const PASSWORD_CHANGED: &str = "Your password was changed";
    pub const PASSWORD_RESET: &str = "Your password was reset";
    pub const EMAIL_CHANGED: &str = "Your email address was changed";
}
