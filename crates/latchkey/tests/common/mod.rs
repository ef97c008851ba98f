//! Shared test harness: the real app on a random loopback port, a plain HTTP client, and a
//! tiny cookie jar that shows exactly what the server set.
#![allow(dead_code)]

pub mod browser;
pub mod resource_server;
pub mod smtp;

use std::net::SocketAddr;
use std::sync::Arc;

use latchkey::{AppState, Config};
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery";
/// The `SECRETS_KEY` of every test instance (required with PostgreSQL; every instance on one
/// database needs the same).
pub const TEST_SECRETS_KEY: &str = "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=";

/// A running latchkey.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    _shutdown: Arc<tokio::sync::oneshot::Sender<()>>,
}

/// A fresh database for one test: in-memory SQLite, or — when `LATCHKEY_TEST_POSTGRES` names
/// a server — a new PostgreSQL database created for this test.
pub async fn fresh_database_url() -> String {
    match std::env::var("LATCHKEY_TEST_POSTGRES") {
        Ok(admin) if !admin.is_empty() => fresh_postgres(&admin).await,
        _ => "sqlite::memory:".to_owned(),
    }
}

async fn fresh_postgres(admin: &str) -> String {
    use sqlx::Connection as _;
    let name = format!("latchkey_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("LATCHKEY_TEST_POSTGRES reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin
        .rsplit_once('/')
        .expect("postgres URL with a database path");
    format!("{base}/{name}")
}

/// A test configuration on a fresh database: development mode, cheap Argon2, fast polling.
pub async fn test_config() -> Config {
    test_config_on(&fresh_database_url().await)
}

/// [`test_config`] on the database `url` names (e.g. to start again on the same one).
pub fn test_config_on(url: &str) -> Config {
    let mut c = Config::from_pairs([("DATABASE_URL", url), ("SECRETS_KEY", TEST_SECRETS_KEY)])
        .expect("valid test config");
    c.password = latchkey::config::PasswordParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    c.poll_interval = std::time::Duration::from_millis(100);
    c
}

/// Turns a test configuration into a production one on the same database (mail disabled,
/// `PUBLIC_URL=https://auth.example`), keeping its cheap hashing and fast polling.
pub fn into_production(c: &mut Config) {
    let mut p = Config::from_pairs([
        ("ENV", "production"),
        ("PUBLIC_URL", "https://auth.example"),
        ("SECRETS_KEY", TEST_SECRETS_KEY),
        ("SMTP_URL", "disabled"),
    ])
    .expect("valid production test config");
    assert!(p.production);
    p.database_url = c.database_url.clone();
    p.password = c.password;
    p.poll_interval = c.poll_interval;
    *c = p;
}

pub async fn spawn() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config().await;
    tweak(&mut config);
    spawn_config(config).await
}

pub async fn spawn_config(config: Config) -> TestApp {
    let state = AppState::start(config).await.expect("app starts");
    spawn_state(state).await
}

pub async fn spawn_state(state: AppState) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_state(listener, state)
}

/// Serves `state` on `listener` until the returned app is dropped.
fn serve_state(listener: tokio::net::TcpListener, state: AppState) -> TestApp {
    let addr = listener.local_addr().unwrap();
    let app = latchkey::http::router(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = state.serve_options();
    tokio::spawn(async move {
        latchkey::serve(listener, app, options, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        addr,
        base: format!("http://{addr}"),
        state,
        http,
        _shutdown: Arc::new(tx),
    }
}

/// The auth cookies a browser would hold, updated from `Set-Cookie` like a browser would.
#[derive(Debug, Clone, Default)]
pub struct Jar {
    pub access: Option<String>,
    pub refresh: Option<String>,
}

impl Jar {
    pub fn update(&mut self, headers: &HeaderMap) {
        for (name, value, max_age0) in set_cookies(headers) {
            let slot = match name.as_str() {
                "access_token" | "__Host-access_token" => &mut self.access,
                "refresh_token" | "__Secure-refresh_token" => &mut self.refresh,
                _ => continue,
            };
            *slot = if max_age0 || value.is_empty() {
                None
            } else {
                Some(value)
            };
        }
    }

    /// The `Cookie` header for a request to `path`, honouring the refresh cookie's path.
    pub fn header_for(&self, path: &str) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.access {
            parts.push(format!("access_token={a}"));
        }
        if let Some(r) = &self.refresh
            && path.starts_with("/api/v1/auth")
        {
            parts.push(format!("refresh_token={r}"));
        }
        parts.join("; ")
    }
}

/// `(name, value, max_age_is_zero)` of every `Set-Cookie`.
pub fn set_cookies(headers: &HeaderMap) -> Vec<(String, String, bool)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            let s = v.to_str().unwrap();
            let first = s.split(';').next().unwrap();
            let (n, val) = first.split_once('=').unwrap();
            (n.to_owned(), val.to_owned(), s.contains("Max-Age=0"))
        })
        .collect()
}

pub fn set_cookie_lines(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A request carrying the jar's cookies.
    pub fn with_jar(
        &self,
        method: reqwest::Method,
        path: &str,
        jar: &Jar,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("cookie", jar.header_for(path))
    }

    pub async fn get(&self, path: &str, jar: &Jar) -> reqwest::Response {
        self.with_jar(reqwest::Method::GET, path, jar)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, jar: &Jar) -> reqwest::Response {
        self.with_jar(reqwest::Method::POST, path, jar)
            .send()
            .await
            .unwrap()
    }

    /// Signs up `email` and returns the cookies it got.
    pub async fn signup(&self, email: &str) -> Jar {
        let res = self
            .post_json(
                "/api/v1/auth/signup",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 201, "signup of {email}");
        let mut jar = Jar::default();
        jar.update(res.headers());
        assert!(jar.access.is_some() && jar.refresh.is_some());
        jar
    }

    pub async fn login(&self, email: &str) -> Jar {
        let res = self
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 200, "login of {email}");
        let mut jar = Jar::default();
        jar.update(res.headers());
        jar
    }

    /// POST /refresh with the jar, applying the answer to it; returns the status.
    pub async fn refresh(&self, jar: &mut Jar) -> (u16, Value) {
        let res = self.post("/api/v1/auth/refresh", jar).await;
        jar.update(res.headers());
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` without cookies, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn me_status(&self, jar: &Jar) -> u16 {
        self.get("/api/v1/me", jar).await.status().as_u16()
    }
}

/// Asserts a problem+json answer with `status` and `code`; returns the body.
pub async fn assert_problem(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status for expected {code}");
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(ct, "application/problem+json");
    if status == 401 {
        let www = res
            .headers()
            .get("www-authenticate")
            .expect("401 carries WWW-Authenticate")
            .to_str()
            .unwrap()
            .to_owned();
        assert!(www.starts_with("Bearer realm=\"latchkey\""), "{www}");
    }
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    body
}

pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Like [`spawn_with`], but the listener is bound first and `tweak` also gets its address,
/// for settings that must name the app's own origin (PUBLIC_URL, which OAuth redirect URIs
/// are built from).
pub async fn spawn_with_addr(tweak: impl FnOnce(&mut Config, SocketAddr)) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_on(listener, tweak).await
}

/// Like [`spawn_with_addr`] on a listener the test bound itself (when something else must
/// know the address before the app is configured).
pub async fn spawn_on(
    listener: tokio::net::TcpListener,
    tweak: impl FnOnce(&mut Config, SocketAddr),
) -> TestApp {
    let addr = listener.local_addr().unwrap();
    let mut config = test_config().await;
    tweak(&mut config, addr);
    let state = AppState::start(config).await.expect("app starts");
    serve_state(listener, state)
}
