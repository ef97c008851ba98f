//! Secrets at rest (SPEC 8; issue 9, findings 5 and 8): what a copy of the database gives an
//! attacker who does not have `SECRETS_KEY`, sealing an older database in place, and no
//! first-key seed. Runs on a SQLite file, or on PostgreSQL with `LATCHKEY_TEST_POSTGRES`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use sha2::Sha256;

use crate::common::*;

/// A database that outlives one app: a SQLite file in a fresh directory, or a fresh
/// PostgreSQL database.
async fn persistent_database_url() -> String {
    let url = fresh_database_url().await;
    if url.starts_with("postgres") {
        return url;
    }
    let dir = std::env::temp_dir().join(format!(
        "latchkey-at-rest-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("latchkey.db").display())
}

/// One stored secret as read from the database directly: (table, name, bytes, key_id).
type RawRow = (String, String, Vec<u8>, Option<String>);

/// Direct SQL on the test's database, as someone holding a copy of it would have.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Raw {
    /// For SQLite, opens a *copy* of the database files (the database and its WAL).
    async fn open(url: &str) -> Raw {
        if url.starts_with("postgres") {
            return Raw::Pg(sqlx::PgPool::connect(url).await.unwrap());
        }
        let db = std::path::PathBuf::from(url.trim_start_matches("sqlite://"));
        let copy = db.with_file_name(format!("copy-{}.db", uuid::Uuid::new_v4().simple()));
        std::fs::copy(&db, &copy).unwrap();
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let mut copy_wal = copy.clone().into_os_string();
        copy_wal.push("-wal");
        if std::path::Path::new(&wal).exists() {
            std::fs::copy(&wal, &copy_wal).unwrap();
        }
        Raw::Sqlite(
            sqlx::SqlitePool::connect(&format!("sqlite://{}", copy.display()))
                .await
                .unwrap(),
        )
    }

    /// The live database itself (to write to it).
    async fn live(url: &str) -> Raw {
        if url.starts_with("postgres") {
            Raw::Pg(sqlx::PgPool::connect(url).await.unwrap())
        } else {
            Raw::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap())
        }
    }

    async fn rows(&self, sql: &'static str) -> Vec<RawRow> {
        match self {
            Raw::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Raw::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        }
    }

    /// Every stored secret with the column naming its sealing key (NULL before sealing).
    async fn secrets(&self) -> Vec<RawRow> {
        self.rows(
            "SELECT 'signing_keys', kid, private_der, key_id FROM signing_keys \
             UNION ALL SELECT 'server_secrets', name, value, key_id FROM server_secrets \
             ORDER BY 1, 2",
        )
        .await
    }

    /// Private keys and server secrets, as a version before sealing read them.
    async fn private_keys(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let sql = "SELECT kid, private_der, public_key FROM signing_keys";
        match self {
            Raw::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Raw::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        }
    }

    async fn server_secret_names(&self) -> Vec<String> {
        let sql = "SELECT name FROM server_secrets ORDER BY name";
        let rows: Vec<(String,)> = match self {
            Raw::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Raw::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        };
        rows.into_iter().map(|(n,)| n).collect()
    }

    async fn server_secret(&self, name: &str) -> Vec<u8> {
        let rows = self.secrets().await;
        rows.into_iter()
            .find(|r| r.0 == "server_secrets" && r.1 == name)
            .unwrap_or_else(|| panic!("no server secret {name}"))
            .2
    }

    /// Writes a row the way a version before sealing did: the value in clear, no key id.
    async fn write_plain(&self, table: &str, name: &str, plain: &[u8]) {
        let (sqlite, pg) = match table {
            "signing_keys" => (
                "UPDATE signing_keys SET private_der = ?, key_id = NULL WHERE kid = ?",
                "UPDATE signing_keys SET private_der = $1, key_id = NULL WHERE kid = $2",
            ),
            _ => (
                "UPDATE server_secrets SET value = ?, key_id = NULL WHERE name = ?",
                "UPDATE server_secrets SET value = $1, key_id = NULL WHERE name = $2",
            ),
        };
        match self {
            Raw::Sqlite(p) => {
                sqlx::query(sqlx::AssertSqlSafe(sqlite))
                    .bind(plain)
                    .bind(name)
                    .execute(p)
                    .await
                    .unwrap();
            }
            Raw::Pg(p) => {
                sqlx::query(sqlx::AssertSqlSafe(pg))
                    .bind(plain)
                    .bind(name)
                    .execute(p)
                    .await
                    .unwrap();
            }
        }
    }

    /// The seed row older versions kept (finding 8). Those versions had no outbox either
    /// (its bodies are sealed from the start), so the signup's verification mail goes.
    async fn insert_old_seed(&self) {
        let seed = [7u8; 32].to_vec();
        match self {
            Raw::Sqlite(p) => {
                sqlx::query("DELETE FROM outbox").execute(p).await.unwrap();
                sqlx::query("INSERT INTO server_secrets (name, value, created_at) VALUES ('initial_signing_key_seed', ?, 0)")
                    .bind(seed)
                    .execute(p)
                    .await
                    .unwrap();
            }
            Raw::Pg(p) => {
                sqlx::query("DELETE FROM outbox").execute(p).await.unwrap();
                sqlx::query("INSERT INTO server_secrets (name, value, created_at) VALUES ('initial_signing_key_seed', $1, 0)")
                    .bind(seed)
                    .execute(p)
                    .await
                    .unwrap();
            }
        }
    }

    async fn close(self) {
        match self {
            Raw::Sqlite(p) => p.close().await,
            Raw::Pg(p) => p.close().await,
        }
    }
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The successor rule of `tokens/refresh.rs`, as an attacker who read the source would
/// apply it.
fn successor(key: &[u8], token: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(b"latchkey/refresh-successor/v1\0");
    mac.update(token.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Every way to read an Ed25519 private key out of stored bytes: as PKCS#8, or any 32
/// bytes of it as a seed.
fn key_candidates(bytes: &[u8]) -> Vec<ed25519_dalek::SigningKey> {
    let mut out: Vec<_> = ed25519_dalek::SigningKey::from_pkcs8_der(bytes)
        .into_iter()
        .collect();
    for w in bytes.windows(32) {
        out.push(ed25519_dalek::SigningKey::from_bytes(w.try_into().unwrap()));
    }
    out
}

/// Finding 5 (issue 9): everything in a copy of the database, without `SECRETS_KEY`, forges
/// nothing — no signing key can be read from `signing_keys.private_der` (a token signed
/// with what is there is refused), and `refresh_hmac` does not derive a session's refresh
/// tokens from an older one.
#[tokio::test]
async fn finding_5_a_database_copy_without_the_key_forges_no_token() {
    let url = persistent_database_url().await;
    let app = spawn_config(test_config_on(&url)).await;
    let mut jar = app.signup(&unique_email("copy")).await;
    let mut chain = vec![jar.refresh.clone().unwrap()];
    for _ in 0..3 {
        assert_eq!(app.refresh(&mut jar).await.0, 200);
        chain.push(jar.refresh.clone().unwrap());
    }
    let access = jar.access.clone().unwrap();
    let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
    let copy = Raw::open(&url).await;

    // Signing keys: no stored bytes give a key whose public half is a stored one.
    let keys = copy.private_keys().await;
    assert!(!keys.is_empty());
    for (k, private, public) in &keys {
        for candidate in key_candidates(private) {
            assert_ne!(
                candidate.verifying_key().as_bytes()[..],
                public[..],
                "the private key of {k} is readable from the database"
            );
        }
    }
    // And the attempt itself: sign with the stored bytes as PKCS#8 (what they were in
    // clear), or with the first 32 bytes if they do not even parse.
    let (_, private, _) = keys.iter().find(|(k, _, _)| *k == kid).unwrap();
    let forger = key_candidates(private).remove(0);
    let der = {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        forger.to_pkcs8_der().unwrap()
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.clone());
    let mut claims = claims_of(&access);
    claims["jti"] = Value::String(uuid::Uuid::new_v4().to_string());
    let forged =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap();
    let res = app
        .http
        .get(app.url("/api/v1/me"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "a token signed from the copy is refused");

    // Refresh secret: neither the stored value nor any 32 bytes of it derive the chain.
    let stored = copy.server_secret("refresh_hmac").await;
    let mut keys: Vec<&[u8]> = vec![&stored];
    keys.extend(stored.windows(32));
    for key in keys {
        for pair in chain.windows(2) {
            assert_ne!(
                successor(key, &pair[0]),
                pair[1],
                "the refresh secret is readable from the database"
            );
        }
    }
    copy.close().await;
    // The real session is untouched.
    assert_eq!(app.me_status(&jar).await, 200);
}

/// Finding 5 (issue 9): a database from a version before sealing (secrets in clear, the
/// first key's seed kept) is sealed in place at start — by two instances starting at once —
/// and keeps its keys and sessions: a token issued before still verifies, and the refresh
/// secret is the same (the previous token, within grace, is answered with the current one).
/// Finding 8: the old seed row is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_5_an_old_plaintext_database_is_sealed_in_place_and_keeps_keys_and_sessions() {
    use latchkey::secrets::SecretsKey;
    use latchkey::store::{SecretTable, StoredSecret};
    use secrecy::ExposeSecret as _;

    let url = persistent_database_url().await;
    let config = || test_config_on(&url);
    let app = spawn_config(config()).await;
    let mut jar = app.signup(&unique_email("upgrade")).await;
    let t0 = jar.refresh.clone().unwrap();
    assert_eq!(app.refresh(&mut jar).await.0, 200);
    let t1 = jar.refresh.clone().unwrap();
    let kid = app.state.keys().current().signing.0.clone();
    drop(app);

    // Turn the database into what an older version left: every secret in clear, no key
    // ids, and the seed of the first key.
    let key = SecretsKey::parse(TEST_SECRETS_KEY).unwrap();
    let live = Raw::live(&url).await;
    let before = live.secrets().await;
    let mut plain = Vec::new();
    for (table, name, bytes, key_id) in &before {
        let t = if table == "signing_keys" {
            SecretTable::SigningKeys
        } else {
            SecretTable::ServerSecrets
        };
        let stored = StoredSecret {
            key_id: key_id.clone(),
            bytes: bytes.clone(),
        };
        let opened = key.open(t, name, &stored).unwrap();
        live.write_plain(table, name, opened.expose_secret()).await;
        plain.push(opened.expose_secret().to_vec());
    }
    live.insert_old_seed().await;
    assert!(live.secrets().await.iter().all(|r| r.3.is_none()));

    // Two instances start on it at once.
    let (a, b) = tokio::join!(async { latchkey::AppState::start(config()).await }, async {
        latchkey::AppState::start(config()).await
    },);
    let (a, b) = (
        spawn_state(a.expect("starts on the old database")).await,
        spawn_state(b.expect("starts on the old database")).await,
    );
    let after = live.secrets().await;
    assert_eq!(
        after.iter().map(|r| (&r.0, &r.1)).collect::<Vec<_>>(),
        before
            .iter()
            .filter(|r| r.1 != "initial_signing_key_seed")
            .map(|r| (&r.0, &r.1))
            .collect::<Vec<_>>(),
        "the same rows, and no seed (finding 8)"
    );
    for ((table, name, bytes, key_id), clear) in after.iter().zip(&plain) {
        assert_eq!(key_id.as_deref(), Some(key.id()), "{table}/{name} sealed");
        assert!(
            !bytes
                .windows(clear.len().min(16))
                .any(|w| clear.windows(w.len()).any(|c| c == w)),
            "{table}/{name} holds no part of its clear value"
        );
    }
    for app in [&a, &b] {
        assert_eq!(
            app.state.keys().current().signing.0,
            kid,
            "same signing key"
        );
        assert_eq!(
            app.me_status(&jar).await,
            200,
            "a token issued before verifies"
        );
    }
    // t0 is the previous token, within grace: answered with t1 only if the refresh secret
    // survived sealing.
    let mut old = Jar {
        access: None,
        refresh: Some(t0),
    };
    let (status, body) = a.refresh(&mut old).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(old.refresh.as_deref(), Some(t1.as_str()));

    // Idempotent: a further start changes nothing.
    drop((a, b));
    let again = spawn_config(config()).await;
    assert_eq!(live.secrets().await, after);
    assert_eq!(again.me_status(&jar).await, 200);
    live.close().await;
}

/// Finding 8 (issue 9): no seed of any key is stored — not after the first start, not after
/// a rotation.
#[tokio::test]
async fn finding_8_no_key_seed_is_kept() {
    let url = persistent_database_url().await;
    let app = spawn_config(test_config_on(&url)).await;
    let raw = Raw::live(&url).await;
    assert_eq!(
        raw.server_secret_names().await,
        ["device_cookie_key", "refresh_hmac"],
        "server secrets after the first start"
    );
    latchkey::tokens::keys::KeyRing::rotate(
        app.state.store(),
        app.state.secrets_key(),
        app.state.config().access_ttl,
    )
    .await
    .unwrap();
    assert_eq!(
        raw.server_secret_names().await,
        ["device_cookie_key", "refresh_hmac"]
    );
    raw.close().await;
}

/// Finding 5 (issue 9), review: write access to a sealed database without the key must
/// not be enough to plant a secret — a row in clear is sealed in place only in a database
/// that was never sealed; otherwise start-up refuses it.
#[tokio::test]
async fn finding_5_a_clear_row_planted_in_a_sealed_database_is_refused() {
    let url = persistent_database_url().await;
    let config = || test_config_on(&url);
    let app = spawn_config(config()).await;
    app.signup(&unique_email("planted")).await;
    drop(app);
    let live = Raw::live(&url).await;
    live.write_plain("server_secrets", "refresh_hmac", &[7u8; 32])
        .await;
    live.close().await;
    let err = latchkey::AppState::start(config())
        .await
        .err()
        .expect("start-up refuses the planted row")
        .to_string();
    assert!(
        err.contains("server_secrets/refresh_hmac") && err.contains("in clear"),
        "{err}"
    );
}
