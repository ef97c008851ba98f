//! Issue 14: SQLite's WAL is checkpointed off the request path and still stays bounded.
//!
//! The writer's automatic checkpoint is off (it made one commit in a few hundred wait for a
//! 4 MB copy and an fsync); a task copies the WAL back from a reader connection every
//! second and, past a threshold, has the writer restart it. Without that restart, a
//! checkpoint from another connection never catches up with steady writes and the WAL only
//! grows (787 MB in four minutes of the soak). Here the store restarts at 1,024 frames
//! (4 MiB) instead of 256 MiB, so a few seconds of rotations write the threshold many times
//! over: the WAL must start over again and again and stay within the threshold plus about a
//! second of writes, and no rotation may be lost.

use std::time::{Duration, Instant};

use latchkey::domain::{Email, SessionId, UserId};
use latchkey::store::sqlite::SqliteStore;
use latchkey::store::{NewUser, SessionRecord, Store};

const RESTART_FRAMES: i64 = 1_024;
const PAGE: u64 = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_writes_keep_the_wal_bounded_and_lose_nothing() {
    if std::env::var("LATCHKEY_TEST_POSTGRES").is_ok_and(|v| !v.is_empty()) {
        return; // the PostgreSQL pass: this SQLite test already ran in the SQLite one
    }
    let dir = std::env::temp_dir().join(format!("latchkey-wal-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("db.sqlite");
    let url = format!("sqlite://{}", file.display());
    let wal = dir.join("db.sqlite-wal");
    let store = SqliteStore::connect_restarting_wal_at(&url, RESTART_FRAMES)
        .await
        .unwrap();
    store.migrate().await.unwrap();

    let now = latchkey::clock::now_ms();
    let user = UserId::new();
    store
        .create_user(NewUser {
            id: user,
            email: Email::parse("wal@example.com").unwrap(),
            name: None,
            password_hash: None,
            email_verified: true,
            created_at: now,
        })
        .await
        .unwrap();
    // Sessions moved on to generation 2, from where every rotation is the one-statement
    // compare-and-swap of a refresh.
    let sessions: Vec<SessionId> = (0..64).map(|_| SessionId::new()).collect();
    for (i, id) in sessions.iter().enumerate() {
        let record = SessionRecord {
            id: *id,
            user_id: user,
            current_hash: hash(i, 0),
            previous_hash: None,
            rotated_at: None,
            created_at: now,
            last_used_at: now,
            idle_expires_at: now + 86_400_000,
            absolute_expires_at: now + 86_400_000,
            revoked_at: None,
            user_agent: Some("x".repeat(200)),
            ip: None,
            auth_time: now,
            amr: latchkey::mfa::Amr::PWD,
            generation: 0,
        };
        assert!(store.insert_session(&record, &[]).await.unwrap());
        for generation in 0..2 {
            let (from, to) = (hash(i, generation), hash(i, generation + 1));
            let idle = now + 86_400_000;
            let moved = store.advance_session(*id, generation as i64, &from, &to, now, idle);
            assert!(moved.await.unwrap());
        }
    }

    // Two writers and a reader, for eight seconds.
    let store = std::sync::Arc::new(store);
    let started = Instant::now();
    let writer = |half: usize| {
        let store = store.clone();
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let mut turns = 0usize;
            while started.elapsed() < Duration::from_secs(8) {
                for (i, id) in sessions.iter().enumerate().skip(half).step_by(2) {
                    let now = latchkey::clock::now_ms();
                    let advanced = store
                        .advance_current_session(
                            *id,
                            2 + turns as i64,
                            &hash(i, 2 + turns),
                            &hash(i, 3 + turns),
                            now,
                            now + 86_400_000,
                        )
                        .await
                        .unwrap();
                    assert!(advanced.is_some(), "rotation {turns} of session {i} lost");
                }
                turns += 1;
            }
            turns
        })
    };
    let (a, b) = (writer(0), writer(1));
    let reader = {
        let store = store.clone();
        let first = sessions[0];
        tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(8) {
                assert!(store.session_by_id(first).await.unwrap().is_some());
            }
        })
    };
    // The WAL's size and its header's checkpoint sequence number (bytes 12..16, big
    // endian), which goes up each time the WAL starts over from its beginning.
    let sample = || {
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let mut header = [0u8; 16];
        let sequence = std::fs::File::open(&wal)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
            .map(|()| u32::from_be_bytes(header[12..16].try_into().unwrap()))
            .ok();
        (size, sequence)
    };
    let (mut largest, mut restarts, mut last) = (0u64, 0u32, None);
    while started.elapsed() < Duration::from_secs(8) {
        let (size, sequence) = sample();
        largest = largest.max(size);
        if let (Some(before), Some(now)) = (last, sequence) {
            restarts += now.wrapping_sub(before);
        }
        last = sequence.or(last);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (turns_a, turns_b) = (a.await.unwrap(), b.await.unwrap());
    reader.await.unwrap();
    let rotations = (turns_a + turns_b) as u64 * 32;

    // Every rotation rewrites at least the session's table page and its token-hash index
    // page: at least two WAL frames each. Without restarts the WAL would hold them all.
    let written = rotations * 2 * PAGE;
    // The restart point plus about a second of writes, on a machine faster than this one.
    const LIMIT: u64 = 128 << 20;
    assert!(
        restarts >= 3,
        "the WAL restarted {restarts} times in 8 s of steady writes ({} KiB written)",
        written >> 10
    );
    assert!(
        largest <= LIMIT,
        "the WAL grew to {} KiB over {rotations} rotations ({} KiB written)",
        largest >> 10,
        written >> 10
    );
    // Nothing lost: each session is at the generation its last rotation wrote.
    for (i, id) in sessions.iter().enumerate() {
        let turns = if i % 2 == 0 { turns_a } else { turns_b };
        let s = store.session_by_id(*id).await.unwrap().unwrap();
        assert_eq!(s.generation, 2 + turns as i64);
        assert_eq!(s.current_hash, hash(i, 2 + turns));
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn hash(session: usize, turn: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&(session as u64).to_le_bytes());
    h[8..16].copy_from_slice(&(turn as u64).to_le_bytes());
    h
}
