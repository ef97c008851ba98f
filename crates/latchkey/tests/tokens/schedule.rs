//! SPEC 13: signing keys rotate on a schedule (`KEY_ROTATION_INTERVAL`); the next key is in
//! the JWKS at least one JWKS cache lifetime before it signs, so a resource server that
//! caches the JWKS for its max-age never sees an unknown `kid`. (Three instances on
//! PostgreSQL: tests/multi_instance.rs.)

use std::time::Duration;

use super::common::resource_server::watch_rotation;
use super::common::*;

#[tokio::test]
async fn scheduled_rotation_never_shows_a_caching_resource_server_an_unknown_kid() {
    let started = std::time::Instant::now();
    let app = spawn_with(|c| {
        c.key_rotation_interval = Some(Duration::from_secs(3));
        c.jwks_max_age = Duration::from_secs(1);
        c.poll_interval = Duration::from_millis(50);
        c.access_ttl = Duration::from_secs(30);
        c.rate_limits.refresh_per_session = latchkey::config::Quota {
            burst: 1_000,
            period: Duration::from_millis(1),
        };
    })
    .await;
    // Lead: 2 × 1 s + 10 polls = 2.5 s before a key signs, every 3 s.
    assert_eq!(
        app.state.config().key_publish_lead(),
        Duration::from_millis(2500)
    );
    let w = watch_rotation(std::slice::from_ref(&app), Duration::from_secs(11)).await;
    assert!(w.refused.is_empty(), "refused tokens: {:#?}", w.refused);
    assert!(
        w.signing_kids.len() >= 3,
        "keys rotated on schedule: {} kids over {} tokens",
        w.signing_kids.len(),
        w.tokens
    );
    // At most one rotation per interval, plus the first key.
    let most = 1 + started.elapsed().as_secs() as usize / 3;
    assert!(w.signing_kids.len() <= most, "{:?}", w.signing_kids);
}

#[tokio::test]
async fn off_means_no_scheduled_rotation_and_short_intervals_are_refused() {
    let c = latchkey::Config::from_pairs([
        ("DATABASE_URL", "sqlite::memory:"),
        ("KEY_ROTATION_INTERVAL", "off"),
    ])
    .unwrap();
    assert_eq!(c.key_rotation_interval, None);
    let c = latchkey::Config::from_pairs([("DATABASE_URL", "sqlite::memory:")]).unwrap();
    assert_eq!(
        c.key_rotation_interval,
        Some(Duration::from_secs(30 * 24 * 3600))
    );
    let e = latchkey::Config::from_pairs([
        ("DATABASE_URL", "sqlite::memory:"),
        ("KEY_ROTATION_INTERVAL", "5m"),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("KEY_ROTATION_INTERVAL"), "{e}");

    let app = spawn_with(|c| {
        c.key_rotation_interval = None;
        c.poll_interval = Duration::from_millis(20);
    })
    .await;
    let jwks = app.get_json("/.well-known/jwks.json").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.get_json("/.well-known/jwks.json").await, jwks);
}

#[tokio::test]
async fn the_jwks_max_age_is_the_configured_one() {
    let app = spawn_with(|c| c.jwks_max_age = Duration::from_secs(7)).await;
    let res = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "public, max-age=7");
}
