//! The revoked-`sid` set: how a logged-out session's access tokens stop working at once,
//! with no database read per request.
//!
//! Each instance keeps the ids of sessions revoked recently enough that one of their access
//! tokens could still be unexpired. Revocations made here are inserted immediately; those
//! made elsewhere (another instance, the CLI) arrive by polling the store every
//! `poll_interval` (500 ms by default, well inside SPEC 5's 2 s).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::clock::now_ms;
use crate::domain::SessionId;
use crate::store::{Store, StoreError};

/// Recently revoked sessions, each kept until no access token of it can still be valid.
#[derive(Clone)]
pub struct Revocations {
    map: Arc<RwLock<HashMap<SessionId, i64>>>,
    /// How long after revocation an entry must be kept (ms): access TTL + leeway + margin.
    horizon_ms: i64,
}

impl Revocations {
    pub fn new(horizon_ms: i64) -> Self {
        Self {
            map: Arc::default(),
            horizon_ms,
        }
    }

    pub fn horizon_ms(&self) -> i64 {
        self.horizon_ms
    }

    pub fn insert(&self, sid: SessionId, revoked_at: i64) {
        if let Ok(mut m) = self.map.write() {
            m.insert(sid, revoked_at.saturating_add(self.horizon_ms));
        }
    }

    pub fn is_revoked(&self, sid: SessionId) -> bool {
        self.map
            .read()
            .map(|m| m.contains_key(&sid))
            .unwrap_or(true)
    }

    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn prune(&self, now: i64) {
        if let Ok(mut m) = self.map.write() {
            m.retain(|_, forget_at| *forget_at > now);
        }
    }

    /// Pulls revocations made at or after `since` from the store; returns the time to poll
    /// from next (with a 60 s overlap, so clock skew between instances — keep them
    /// NTP-synchronised — loses nothing).
    pub async fn sync(&self, store: &dyn Store, since: i64) -> Result<i64, StoreError> {
        let started = now_ms();
        for (sid, at) in store.revoked_since(since).await? {
            self.insert(sid, at);
        }
        self.prune(started);
        // Overlap: instance clocks (which stamp `revoked_at`) may differ by up to a minute.
        Ok(started - 60_000)
    }
}
