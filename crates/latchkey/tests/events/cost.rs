//! What a `login_succeeded` adds to the write that creates a session: the same number of
//! session inserts with and without their event, through the store, on a SQLite file (or
//! PostgreSQL with `LATCHKEY_TEST_POSTGRES`). Ignored by default (a measurement, not a
//! check); run with `cargo test -p latchkey --test events cost -- --ignored --nocapture`.

use std::time::Instant;

use latchkey::domain::{SessionId, UserId};
use latchkey::events::{Event, EventKind};
use latchkey::mfa::Amr;
use latchkey::store::{NewUser, SessionRecord};

use crate::common::{TEST_SECRETS_KEY, fresh_database_url};

#[tokio::test]
#[ignore]
async fn login_session_insert_with_and_without_its_event() {
    let url = match fresh_database_url().await {
        u if u.starts_with("sqlite") => {
            let dir = std::env::temp_dir().join(format!("latchkey-cost-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}", dir.join("cost.db").display())
        }
        u => u,
    };
    let _ = TEST_SECRETS_KEY;
    let store = latchkey::store::connect(&secrecy::SecretString::from(url.clone()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let user = UserId::new();
    store
        .create_user(NewUser {
            id: user,
            email: latchkey::domain::Email::parse("cost@example.com").unwrap(),
            name: None,
            password_hash: None,
            email_verified: true,
            created_at: 0,
        })
        .await
        .unwrap();
    let counter = std::sync::atomic::AtomicU64::new(0);
    let session = |_: usize| SessionRecord {
        id: SessionId::new(),
        user_id: user,
        current_hash: {
            let mut h = [0u8; 32];
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            h[..8].copy_from_slice(&n.to_be_bytes());
            h
        },
        previous_hash: None,
        rotated_at: None,
        created_at: 1,
        last_used_at: 1,
        idle_expires_at: i64::MAX / 2,
        absolute_expires_at: i64::MAX / 2,
        revoked_at: None,
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
        ip: Some("203.0.113.7".into()),
        auth_time: 1,
        amr: Amr::PWD,
        generation: 0,
    };
    const N: usize = 2000;
    for round in 0..2 {
        let t = Instant::now();
        for i in 0..N {
            assert!(store.insert_session(&session(i), &[]).await.unwrap());
        }
        let without = t.elapsed();
        let t = Instant::now();
        for i in 0..N {
            let s = session(i);
            let e = Event::new(EventKind::LoginSucceeded, 1)
                .user(user)
                .session(s.id)
                .with("amr", "pwd");
            assert!(store.insert_session(&s, &[e]).await.unwrap());
        }
        let with = t.elapsed();
        println!(
            "round {round} on {}: session insert alone {:.1} µs, with its event {:.1} µs ({N} each)",
            if url.starts_with("sqlite") {
                "SQLite file"
            } else {
                "PostgreSQL"
            },
            without.as_micros() as f64 / N as f64,
            with.as_micros() as f64 / N as f64,
        );
    }
}
