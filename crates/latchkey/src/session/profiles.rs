//! A one-second cache of `GET /api/v1/me` answers per user.
//!
//! `/me` is read on every page load while a profile changes rarely; one second of staleness
//! across instances is harmless, and this instance drops an entry at once when it changes
//! the user (Google linking). Authentication never reads it: the access token and the
//! revoked-session set decide who may call `/me`; this only holds what `/me` then shows.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;

use crate::domain::UserId;

/// How long an answer is reused.
pub const TTL: Duration = Duration::from_secs(1);
const CAPACITY: usize = 16_384;

#[derive(Default)]
pub struct ProfileCache {
    map: RwLock<HashMap<UserId, (Instant, Bytes)>>,
}

impl ProfileCache {
    /// The serialized profile, if cached less than [`TTL`] ago.
    pub fn get(&self, user: UserId) -> Option<Bytes> {
        let m = self.map.read().ok()?;
        let (at, body) = m.get(&user)?;
        (at.elapsed() < TTL).then(|| body.clone())
    }

    pub fn insert(&self, user: UserId, body: Bytes) {
        let Ok(mut m) = self.map.write() else { return };
        if m.len() >= CAPACITY {
            m.retain(|_, (at, _)| at.elapsed() < TTL);
            if m.len() >= CAPACITY {
                m.clear();
            }
        }
        m.insert(user, (Instant::now(), body));
    }

    /// Forgets a user's profile (after this instance changed it).
    pub fn invalidate(&self, user: UserId) {
        if let Ok(mut m) = self.map.write() {
            m.remove(&user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_dropped() {
        let c = ProfileCache::default();
        let u = UserId::new();
        c.insert(u, Bytes::from_static(b"{}"));
        assert!(c.get(u).is_some());
        assert!(c.get(UserId::new()).is_none());
        c.invalidate(u);
        assert!(c.get(u).is_none());
        c.map
            .write()
            .unwrap()
            .insert(u, (Instant::now() - TTL, Bytes::from_static(b"{}")));
        assert!(c.get(u).is_none(), "never older than the TTL");
    }
}
