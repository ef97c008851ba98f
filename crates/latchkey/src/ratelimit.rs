//! Rate limits (SPEC 8): login/signup per client IP, signup per email, failed logins per
//! email or per recognised device, refresh per session.
//!
//! [`RateLimiter`] is the interface; [`MemoryLimiter`] (GCRA via `governor`, plus a small
//! refundable GCRA for the failure-counted buckets) serves one instance; the PostgreSQL
//! store offers a shared one ([`crate::store::postgres::PgRateLimiter`]), chosen through
//! [`crate::store::Store::rate_limiter`].
//!
//! Lockout resistance (OWASP "device cookies"): the per-email login bucket counts failed
//! attempts only — an attempt takes a unit before the password is checked (so concurrent
//! guesses cannot overshoot) and a success gives it back. A login presenting a valid device
//! cookie for the account is counted in that device's own bucket instead, so failures from
//! elsewhere never lock out a browser that has signed in before.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota as GQuota};

use crate::config::{Quota, RateLimits};
use crate::error::ApiError;

/// Decides whether one more request of a kind may go ahead now.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one unit of `key`'s budget; `Err(wait)` when over the limit (nothing taken).
    async fn check(&self, bucket: Bucket, key: &str) -> Result<(), Duration>;
    /// Gives back the unit a [`RateLimiter::check`] took, for buckets that count failures
    /// only ([`Bucket::counts_failures_only`]) when the attempt succeeded. Ignored by others.
    async fn refund(&self, bucket: Bucket, key: &str);
    /// Periodic housekeeping (dropping idle keys), called by the background task.
    async fn maintain(&self) {}
}

/// The limited kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Login and signup attempts per client IP (every attempt counts).
    AuthPerIp,
    /// Failed logins per canonical email, from devices not recognised for the account.
    AuthPerEmail,
    /// Failed logins from one recognised device (valid device cookie for the account).
    AuthPerDevice,
    /// Signups per canonical email (every attempt counts).
    SignupPerEmail,
    RefreshPerSession,
    /// Requests that send mail, per client IP (every request counts).
    MailPerIp,
    /// Requests that send mail, per recipient address (every request counts, whether or
    /// not an account has the address).
    MailPerAddress,
    /// Wrong second-factor codes per user (SPEC 11), across pending sign-ins and
    /// reauthentication; counts failures only.
    MfaPerUser,
}

impl Bucket {
    /// Buckets where a successful attempt gives its unit back.
    pub fn counts_failures_only(self) -> bool {
        matches!(
            self,
            Bucket::AuthPerEmail | Bucket::AuthPerDevice | Bucket::MfaPerUser
        )
    }
}

/// In-process limiter.
pub struct MemoryLimiter {
    per_ip: DefaultKeyedRateLimiter<String>,
    signup_per_email: DefaultKeyedRateLimiter<String>,
    per_session: DefaultKeyedRateLimiter<String>,
    mail_per_ip: DefaultKeyedRateLimiter<String>,
    mail_per_address: DefaultKeyedRateLimiter<String>,
    failures_per_email: RefundableGcra,
    failures_per_device: RefundableGcra,
    mfa_failures_per_user: RefundableGcra,
}

/// A quota as GCRA sees it, the way `governor` computes it: the emission interval `T` (one
/// request per `T` once the burst is spent) and the tolerance `tau = T * (burst - 1)`. The
/// in-memory failure budgets and PostgreSQL's shared limiter both use this, so N instances
/// allow what one would.
pub(crate) fn gcra_schedule(q: Quota) -> (Duration, Duration) {
    let t = q.period.max(Duration::from_millis(1));
    (t, t.saturating_mul(q.burst.max(1) - 1))
}

/// GCRA (the algorithm `governor` implements) that can give a unit back, which `governor`
/// cannot: per key, the theoretical arrival time `tat`; a request at `now` passes when
/// `tat - tau <= now` and moves `tat` to `max(tat, now) + T`; a refund moves it back by `T`.
/// `burst` requests pass at once, then one per `T` — the same schedule as `governor`.
struct RefundableGcra {
    t: Duration,
    tau: Duration,
    start: std::time::Instant,
    tat: std::sync::Mutex<std::collections::HashMap<String, Duration>>,
}

impl RefundableGcra {
    fn new(q: Quota) -> Self {
        let (t, tau) = gcra_schedule(q);
        Self {
            t,
            tau,
            start: std::time::Instant::now(),
            tat: Default::default(),
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn check(&self, key: &str) -> Result<(), Duration> {
        let now = self.now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        if tat.saturating_sub(self.tau) > now {
            return Err(tat - self.tau - now);
        }
        map.insert(key.to_owned(), tat + self.t);
        Ok(())
    }

    fn refund(&self, key: &str) {
        let now = self.now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = map.get_mut(key) {
            *tat = tat.saturating_sub(self.t).max(now);
        }
    }

    /// Forgets keys back at full capacity.
    fn prune(&self) {
        let now = self.now();
        self.tat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, tat| *tat > now);
    }
}

fn quota(q: Quota) -> GQuota {
    let burst = NonZeroU32::new(q.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    GQuota::with_period(q.period.max(Duration::from_millis(1)))
        .unwrap_or_else(|| GQuota::per_second(burst))
        .allow_burst(burst)
}

impl MemoryLimiter {
    pub fn new(l: RateLimits) -> Self {
        Self {
            per_ip: DefaultKeyedRateLimiter::keyed(quota(l.auth_per_ip)),
            signup_per_email: DefaultKeyedRateLimiter::keyed(quota(l.auth_per_email)),
            per_session: DefaultKeyedRateLimiter::keyed(quota(l.refresh_per_session)),
            mail_per_ip: DefaultKeyedRateLimiter::keyed(quota(l.mail_per_ip)),
            mail_per_address: DefaultKeyedRateLimiter::keyed(quota(l.mail_per_address)),
            failures_per_email: RefundableGcra::new(l.auth_per_email),
            failures_per_device: RefundableGcra::new(l.auth_per_device),
            mfa_failures_per_user: RefundableGcra::new(l.mfa_per_user),
        }
    }

    /// Drops state of keys that are back to full capacity.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.signup_per_email.retain_recent();
        self.per_session.retain_recent();
        self.mail_per_ip.retain_recent();
        self.mail_per_address.retain_recent();
        self.failures_per_email.prune();
        self.failures_per_device.prune();
        self.mfa_failures_per_user.prune();
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, bucket: Bucket, key: &str) -> Result<(), Duration> {
        let l = match bucket {
            Bucket::AuthPerIp => &self.per_ip,
            Bucket::SignupPerEmail => &self.signup_per_email,
            Bucket::RefreshPerSession => &self.per_session,
            Bucket::MailPerIp => &self.mail_per_ip,
            Bucket::MailPerAddress => &self.mail_per_address,
            Bucket::AuthPerEmail => return self.failures_per_email.check(key),
            Bucket::AuthPerDevice => return self.failures_per_device.check(key),
            Bucket::MfaPerUser => return self.mfa_failures_per_user.check(key),
        };
        l.check_key(&key.to_owned())
            .map_err(|nu| nu.wait_time_from(DefaultClock::default().now()))
    }

    async fn refund(&self, bucket: Bucket, key: &str) {
        match bucket {
            Bucket::AuthPerEmail => self.failures_per_email.refund(key),
            Bucket::AuthPerDevice => self.failures_per_device.refund(key),
            Bucket::MfaPerUser => self.mfa_failures_per_user.refund(key),
            _ => {}
        }
    }

    async fn maintain(&self) {
        self.prune();
    }
}

/// The limiter as the handlers use it: maps "over the limit" to 429 with `Retry-After`.
#[derive(Clone)]
pub struct Limits(pub Arc<dyn RateLimiter>);

fn limited(wait: Duration) -> ApiError {
    metrics::counter!("latchkey_rate_limited_total").increment(1);
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

impl Limits {
    /// Login/signup attempts per client IP.
    pub async fn check_auth_ip(&self, ip: &str) -> Result<(), ApiError> {
        self.0.check(Bucket::AuthPerIp, ip).await.map_err(limited)
    }

    /// Signup attempts per canonical email.
    pub async fn check_signup_email(&self, email: &str) -> Result<(), ApiError> {
        self.0
            .check(Bucket::SignupPerEmail, email)
            .await
            .map_err(limited)
    }

    /// Takes a unit of a login's failure budget before its password is checked. The unit is
    /// kept only if the attempt is [`LoginAttempt::failed`]: a right password, an overloaded
    /// hashing queue, an error or a request dropped half-way all give it back, so nothing but
    /// a wrong password ever counts against an account or a device.
    pub async fn login_attempt(&self, who: Option<LoginBudget>) -> Result<LoginAttempt, ApiError> {
        if let Some(b) = &who {
            let (bucket, key) = b.bucket();
            self.0.check(bucket, key).await.map_err(limited)?;
        }
        Ok(LoginAttempt {
            limits: self.clone(),
            budget: who,
        })
    }

    /// A request that sends mail: counted per client IP and per recipient address.
    pub async fn check_mail(&self, ip: &str, address: &str) -> Result<(), ApiError> {
        self.0.check(Bucket::MailPerIp, ip).await.map_err(limited)?;
        self.0
            .check(Bucket::MailPerAddress, address)
            .await
            .map_err(limited)
    }

    pub async fn check_refresh(&self, session: &str) -> Result<(), ApiError> {
        self.0
            .check(Bucket::RefreshPerSession, session)
            .await
            .map_err(limited)
    }
}

/// A unit taken from a login failure budget; see [`Limits::login_attempt`].
pub struct LoginAttempt {
    limits: Limits,
    /// `None` once settled (or when the attempt had no budget).
    budget: Option<LoginBudget>,
}

impl LoginAttempt {
    /// The password was checked and was wrong: the unit stays taken.
    pub fn failed(mut self) {
        self.budget = None;
    }

    /// Anything but a wrong password: the unit goes back.
    pub async fn give_back(mut self) {
        if let Some(b) = self.budget.take() {
            let (bucket, key) = b.bucket();
            self.limits.0.refund(bucket, key).await;
        }
    }
}

impl Drop for LoginAttempt {
    /// Dropped unsettled (the client hung up before the verdict): give the unit back in the
    /// background.
    fn drop(&mut self) {
        if let Some(b) = self.budget.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let limiter = self.limits.0.clone();
            rt.spawn(async move {
                let (bucket, key) = b.bucket();
                limiter.refund(bucket, key).await;
            });
        }
    }
}

/// Whose failure budget a login attempt is counted against.
#[derive(Debug, Clone)]
pub enum LoginBudget {
    /// The account's shared budget (unknown devices), keyed by canonical email.
    Email(String),
    /// A device that signed in to the account before (by its device id).
    Device(String),
    /// Second-factor codes of one user (by user id), across pending sign-ins and
    /// reauthentication (SPEC 11).
    SecondFactor(String),
}

impl LoginBudget {
    fn bucket(&self) -> (Bucket, &str) {
        match self {
            LoginBudget::Email(e) => (Bucket::AuthPerEmail, e),
            LoginBudget::Device(d) => (Bucket::AuthPerDevice, d),
            LoginBudget::SecondFactor(u) => (Bucket::MfaPerUser, u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failure_buckets_refund_successes_and_keep_governors_schedule() {
        let q = Quota {
            burst: 3,
            period: Duration::from_secs(60),
        };
        let l = MemoryLimiter::new(RateLimits {
            auth_per_email: q,
            auth_per_device: q,
            ..RateLimits::default()
        });
        // Successes give their unit back: any number of them.
        for _ in 0..10 {
            l.check(Bucket::AuthPerEmail, "a").await.unwrap();
            l.refund(Bucket::AuthPerEmail, "a").await;
        }
        // Failures: `burst` pass, then the wait is about one period.
        for _ in 0..3 {
            l.check(Bucket::AuthPerEmail, "a").await.unwrap();
        }
        let wait = l.check(Bucket::AuthPerEmail, "a").await.unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60));
        // Buckets and keys are separate.
        l.check(Bucket::AuthPerDevice, "a").await.unwrap();
        l.check(Bucket::AuthPerEmail, "b").await.unwrap();
        // A refund never creates capacity beyond the burst.
        for _ in 0..5 {
            l.refund(Bucket::AuthPerDevice, "c").await;
        }
        for _ in 0..3 {
            l.check(Bucket::AuthPerDevice, "c").await.unwrap();
        }
        assert!(l.check(Bucket::AuthPerDevice, "c").await.is_err());
        // Signups count every attempt.
        for _ in 0..3 {
            l.check(Bucket::SignupPerEmail, "s").await.unwrap();
            l.refund(Bucket::SignupPerEmail, "s").await;
        }
        assert!(l.check(Bucket::SignupPerEmail, "s").await.is_err());
    }

    /// Only a wrong password keeps its unit: an overloaded hasher, an error, or a request
    /// dropped before its verdict gives it back (review of finding 4).
    #[tokio::test]
    async fn only_failed_login_attempts_keep_their_unit() {
        let q = Quota {
            burst: 2,
            period: Duration::from_secs(60),
        };
        let limits = Limits(Arc::new(MemoryLimiter::new(RateLimits {
            auth_per_device: q,
            ..RateLimits::default()
        })));
        let device = || Some(LoginBudget::Device("d".into()));
        for _ in 0..5 {
            limits
                .login_attempt(device())
                .await
                .unwrap()
                .give_back()
                .await;
            drop(limits.login_attempt(device()).await.unwrap());
            tokio::task::yield_now().await; // the dropped attempt's refund runs
        }
        limits.login_attempt(device()).await.unwrap().failed();
        limits.login_attempt(device()).await.unwrap().failed();
        assert!(matches!(
            limits.login_attempt(device()).await,
            Err(ApiError::RateLimited { .. })
        ));
        // Attempts without a budget (malformed email) are not limited here.
        limits.login_attempt(None).await.unwrap().failed();
    }
}
