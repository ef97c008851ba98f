//! Outbox durability (SPEC 10): mail survives an SMTP outage and a temporary refusal, is
//! delivered once, is sealed while queued and erased once sent, and several instances on one
//! PostgreSQL database deliver each message exactly once.

use std::collections::HashMap;
use std::time::Duration;

use latchkey::config::Quota;
use latchkey::store::OutboxEntry;
use serde_json::json;
use sqlx::Connection as _;

use super::common::smtp::{Sink, use_sink};
use super::common::{self, TestApp, unique_email};
use super::{app_with_mail, subject};

/// Polls `f` every 50 ms until it returns `Some`, for at most `within`.
async fn poll<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The app's only outbox row.
async fn only_row(app: &TestApp) -> OutboxEntry {
    let mut rows = app.state.store().recent_mail(10).await.unwrap();
    assert_eq!(rows.len(), 1, "one message in the outbox: {rows:?}");
    rows.remove(0)
}

/// Waits until the app's only outbox row records a failed attempt (a retry is scheduled).
async fn wait_failed_attempt(app: &TestApp) -> OutboxEntry {
    poll(
        "a failed delivery attempt recorded",
        Duration::from_secs(15),
        move || async move {
            let row = only_row(app).await;
            (row.attempts >= 1 && row.sent_at.is_none() && row.next_attempt_at > row.created_at)
                .then_some(row)
        },
    )
    .await
}

/// Waits until the app's only outbox row is marked sent.
async fn wait_sent(app: &TestApp) -> OutboxEntry {
    poll(
        "the outbox row marked sent",
        Duration::from_secs(20),
        move || async move {
            let row = only_row(app).await;
            row.sent_at.is_some().then_some(row)
        },
    )
    .await
}

#[tokio::test]
async fn mail_queued_while_smtp_is_down_is_delivered_once_when_it_comes_back() {
    let mut down = Sink::start();
    let port = down.port;
    down.stop();
    let app = app_with_mail(&down).await;
    let email = unique_email("outage");
    app.signup(&email).await;

    let row = wait_failed_attempt(&app).await;
    assert!(row.body.is_some() && row.failed_at.is_none(), "{row:?}");
    let stats = app.state.store().mail_stats().await.unwrap();
    assert_eq!((stats.queued, stats.sent, stats.failed), (1, 0, 0));
    assert_eq!(stats.oldest_unsent_at, Some(row.created_at));

    // The server comes back on the same port: the retry (≤ 6 s after the failure) delivers.
    let sink = Sink::start_with(port, 0);
    sink.wait_n(&email, subject::VERIFY, 1, Duration::from_secs(20))
        .await;
    let row = wait_sent(&app).await;
    assert!(row.attempts >= 2, "delivered by a retry: {row:?}");
    // The row is sent, so it is never claimed again: what arrived is all that ever will.
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
    let stats = app.state.store().mail_stats().await.unwrap();
    assert_eq!((stats.queued, stats.sent, stats.failed), (0, 1, 0));
    assert_eq!(stats.oldest_unsent_at, None);
}

#[tokio::test]
async fn a_temporary_smtp_refusal_is_retried_and_delivered_once() {
    let sink = Sink::start_with(0, 1); // 451 for the first message
    let app = app_with_mail(&sink).await;
    let email = unique_email("451");
    app.signup(&email).await;

    sink.wait_n(&email, subject::VERIFY, 1, Duration::from_secs(20))
        .await;
    let row = wait_sent(&app).await;
    assert_eq!(row.attempts, 2, "refused once, then delivered: {row:?}");
    assert!(row.failed_at.is_none(), "{row:?}");
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn a_queued_body_is_sealed_and_a_delivered_one_is_erased() {
    let mut down = Sink::start();
    let port = down.port;
    down.stop();
    let app = app_with_mail(&down).await;
    let email = unique_email("sealed");
    app.signup(&email).await;

    // While it cannot be delivered, the message stays queued with its (sealed) body.
    let queued = only_row(&app).await;
    assert!(queued.sent_at.is_none(), "{queued:?}");
    let sealed = queued.body.expect("a queued message keeps its body").bytes;

    let sink = Sink::start_with(port, 0);
    let mail = sink.wait_for(&email, subject::VERIFY).await;
    let token = mail.token();
    assert!(token.len() >= 43, "a 256-bit token: {token}");
    let contains = |needle: &str| sealed.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        !contains(&token),
        "the queued body holds the token in clear"
    );
    assert!(
        !contains(&email),
        "the queued body holds the address in clear"
    );
    assert!(!contains("verify-email"), "the queued body holds the link");
    assert!(
        !contains(&mail.subject),
        "the queued body holds the subject"
    );

    let sent = wait_sent(&app).await;
    assert!(sent.body.is_none(), "a delivered body is erased: {sent:?}");
    assert_eq!(sent.id, queued.id);
    assert_eq!(sent.kind, "verify_email", "the row's metadata stays");
    // The token still works: erasing the body does not void it.
    let res = app
        .post_json("/api/v1/auth/email/verify", &json!({"token": token}))
        .await;
    assert_eq!(res.status(), 200);
}

/// The PostgreSQL server the two-instance test needs (`LATCHKEY_TEST_POSTGRES`, or the
/// default local one).
fn pg_admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn pg_admin() -> sqlx::PgConnection {
    let url = pg_admin_url();
    sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "\n\nPostgreSQL is REQUIRED for the two-instance outbox test and is not reachable at {url}: {e}\n\
             Start it, or point LATCHKEY_TEST_POSTGRES at a server (postgres://USER@HOST:PORT/postgres).\n"
        )
    })
}

#[tokio::test]
async fn two_instances_on_postgres_deliver_each_message_exactly_once() {
    let name = format!("latchkey_ob_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut pg_admin().await)
        .await
        .expect("create test database");
    let url = format!("{}/{name}", pg_admin_url().rsplit_once('/').unwrap().0);

    let sink = Sink::start();
    let lots = Quota {
        burst: 100_000,
        period: Duration::from_millis(1),
    };
    let configs = (0..2).map(|_| {
        let mut c = common::test_config_on(&url);
        use_sink(&mut c, &sink);
        c.rate_limits.mail_per_ip = lots;
        c.rate_limits.mail_per_address = lots;
        c.rate_limits.auth_per_ip = lots;
        c.rate_limits.auth_per_email = lots;
        c
    });
    // Started together (they migrate concurrently, as in multi_instance.rs).
    let states = futures::future::join_all(configs.map(latchkey::AppState::start)).await;
    let mut owned = Vec::new();
    for s in states {
        owned.push(common::spawn_state(s.expect("instance starts")).await);
    }
    let apps = &owned;

    // 20 signups (a verification mail each), half through each instance, all at once; then a
    // reset request for every user through the other instance: 40 messages.
    const USERS: usize = 20;
    let emails: Vec<String> = (0..USERS)
        .map(|i| unique_email(&format!("pair{i}")))
        .collect();
    futures::future::join_all(
        emails
            .iter()
            .enumerate()
            .map(|(i, e)| apps[i % 2].signup(e)),
    )
    .await;
    futures::future::join_all(emails.iter().enumerate().map(|(i, e)| async move {
        let res = apps[(i + 1) % 2]
            .post_json("/api/v1/auth/password/forgot", &json!({"email": e}))
            .await;
        assert_eq!(res.status(), 202, "forgot for {e}");
    }))
    .await;

    let expected = 2 * USERS as u64;
    let stats = poll(
        "every message marked sent",
        Duration::from_secs(30),
        move || async move {
            let s = apps[0].state.store().mail_stats().await.unwrap();
            (s.sent + s.failed >= expected && s.queued == 0).then_some(s)
        },
    )
    .await;
    assert_eq!((stats.queued, stats.sent, stats.failed), (0, expected, 0));

    // Every row is sent, so none is claimed again: the sink holds all there ever will be.
    // (The last message is marked sent just after the sink wrote it, so this is complete.)
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let messages = sink.messages();
    for m in &messages {
        assert_eq!(m.envelope_to.len(), 1, "{:?}", m.envelope_to);
        *seen
            .entry((m.envelope_to[0].clone(), m.subject.clone()))
            .or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "delivered more than once: {duplicates:?}"
    );
    for e in &emails {
        for s in [subject::VERIFY, subject::RESET] {
            assert_eq!(
                seen.get(&(e.clone(), s.to_owned())),
                Some(&1),
                "{s:?} to {e}"
            );
        }
    }
    assert_eq!(messages.len() as u64, expected);

    drop(owned);
    let mut admin = pg_admin().await;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin),
    )
    .await;
}
