//! Wall-clock time in Unix milliseconds, the unit the store and sessions use.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The clock the session rules (refresh, grace window, expiry) read: the system clock, or —
/// for deterministic tests of the refresh protocol — a manual one shared by several
/// instances. Access-token verification always uses the system clock.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(manual)"
        } else {
            "Clock(system)"
        })
    }
}

impl Clock {
    /// A manual clock starting at `start_ms`; it moves only by [`Clock::advance`].
    pub fn manual(start_ms: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(t) => t.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by_ms: i64) {
        if let Some(t) = &self.0 {
            t.fetch_add(by_ms, Ordering::SeqCst);
        }
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration in milliseconds, saturating.
pub fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 rendering of a millisecond timestamp, for API responses.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
