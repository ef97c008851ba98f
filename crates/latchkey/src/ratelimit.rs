//! Rate limits (SPEC 8): login/signup per client IP and per email, refresh per session.
//!
//! [`RateLimiter`] is the interface; [`MemoryLimiter`] (GCRA via `governor`) serves one
//! instance; the PostgreSQL store offers a shared one ([`crate::store::postgres::PgRateLimiter`]),
//! chosen through [`crate::store::Store::rate_limiter`].

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
    /// `Err(wait)` when over the limit.
    async fn check(&self, bucket: Bucket, key: &str) -> Result<(), Duration>;
    /// Periodic housekeeping (dropping idle keys), called by the background task.
    async fn maintain(&self) {}
}

/// The limited kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    AuthPerIp,
    AuthPerEmail,
    RefreshPerSession,
}

/// In-process limiter.
pub struct MemoryLimiter {
    per_ip: DefaultKeyedRateLimiter<String>,
    per_email: DefaultKeyedRateLimiter<String>,
    per_session: DefaultKeyedRateLimiter<String>,
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
            per_email: DefaultKeyedRateLimiter::keyed(quota(l.auth_per_email)),
            per_session: DefaultKeyedRateLimiter::keyed(quota(l.refresh_per_session)),
        }
    }

    /// Drops state of keys that are back to full capacity.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_email.retain_recent();
        self.per_session.retain_recent();
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, bucket: Bucket, key: &str) -> Result<(), Duration> {
        let l = match bucket {
            Bucket::AuthPerIp => &self.per_ip,
            Bucket::AuthPerEmail => &self.per_email,
            Bucket::RefreshPerSession => &self.per_session,
        };
        l.check_key(&key.to_owned())
            .map_err(|nu| nu.wait_time_from(DefaultClock::default().now()))
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

    /// Login/signup attempts per canonical email.
    pub async fn check_auth_email(&self, email: &str) -> Result<(), ApiError> {
        self.0
            .check(Bucket::AuthPerEmail, email)
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
