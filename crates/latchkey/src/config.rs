//! Settings from the process environment and an optional `.env` file (SPEC 2).
//!
//! The environment wins over `.env`. Every value is validated here, once, so the rest of
//! the code holds only checked settings. [`Config::production`] is the one production flag:
//! every environment-sensitive toggle (cookie names and `Secure`, HSTS, log format, the
//! `https://` requirement) reads it and nothing else.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

/// A configuration value that stopped start-up. Displays as one line naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: Cow<'static, str>,
    /// What is wrong with it (never its value when the variable is a secret).
    pub message: String,
}

impl ConfigError {
    fn new(var: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            message: message.into(),
        }
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// An OpenID Connect client's settings at one provider: Google's (`GOOGLE_*`, present only
/// when both id and secret are set) or a named provider's (`OIDC_<NAME>_*`).
#[derive(Clone)]
pub struct OidcClientConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub issuer: String,
}

/// The Google preset's client settings (the name from before named providers existed).
pub type GoogleConfig = OidcClientConfig;

impl fmt::Debug for OidcClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClientConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// One named OpenID provider (`OIDC_PROVIDERS`, SPEC 13): signs in at
/// `/api/v1/auth/oidc/{name}/login`.
#[derive(Clone, Debug)]
pub struct OidcProviderConfig {
    /// The provider's name in routes and env variables: `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// What the login page's button says (`OIDC_<NAME>_DISPLAY_NAME`, default the name).
    pub display_name: String,
    pub client: OidcClientConfig,
}

impl OidcProviderConfig {
    /// Whether `name` is a valid provider name: 1–32 of `a-z`, `0-9`, `-`, not starting
    /// with `-`. Routes, cookie paths and variable names are built from it unescaped.
    pub fn valid_name(name: &str) -> bool {
        (1..=32).contains(&name.len())
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    /// The prefix of this provider's variables: `OIDC_` + the name upper-cased, `-` as `_`.
    pub fn env_prefix(name: &str) -> String {
        format!("OIDC_{}_", name.to_ascii_uppercase().replace('-', "_"))
    }
}

/// `OIDC_PROVIDERS` and each provider's `OIDC_<NAME>_ISSUER`, `_CLIENT_ID`,
/// `_CLIENT_SECRET` (required) and `_DISPLAY_NAME` (optional). Names are unique, `google`
/// is reserved for the `GOOGLE_*` preset, and no two providers (Google included) share an
/// issuer, so that an identity (issuer, `sub`) belongs to exactly one provider.
fn parse_oidc(
    get: &dyn Fn(&str) -> Option<String>,
    production: bool,
    google: Option<&GoogleConfig>,
) -> Result<Vec<OidcProviderConfig>, ConfigError> {
    let Some(list) = get("OIDC_PROVIDERS") else {
        return Ok(Vec::new());
    };
    let mut out: Vec<OidcProviderConfig> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !OidcProviderConfig::valid_name(name) {
            return Err(ConfigError::new(
                "OIDC_PROVIDERS",
                format!(
                    "{name:?} is not a provider name: 1-32 of a-z, 0-9 and -, not starting with -"
                ),
            ));
        }
        if name == "google" {
            return Err(ConfigError::new(
                "OIDC_PROVIDERS",
                "\"google\" is reserved: configure Google with GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET",
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(ConfigError::new(
                "OIDC_PROVIDERS",
                format!("{name:?} is listed twice"),
            ));
        }
        let prefix = OidcProviderConfig::env_prefix(name);
        let var = |suffix: &str| format!("{prefix}{suffix}");
        let required = |suffix: &str| {
            get(&var(suffix)).ok_or_else(|| {
                ConfigError::new(var(suffix), format!("must be set for provider {name:?}"))
            })
        };
        let issuer = required("ISSUER")?;
        let client_id = required("CLIENT_ID")?;
        let client_secret = SecretString::from(required("CLIENT_SECRET")?);
        let parsed = Url::parse(&issuer)
            .map_err(|e| ConfigError::new(var("ISSUER"), format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || issuer.chars().any(char::is_control)
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(ConfigError::new(
                var("ISSUER"),
                "must be an http(s) URL without query or fragment",
            ));
        }
        if production && parsed.scheme() != "https" {
            return Err(ConfigError::new(
                var("ISSUER"),
                "must be https:// when ENV=production",
            ));
        }
        let same_issuer = |other: &str| other.trim_end_matches('/') == issuer.trim_end_matches('/');
        if let Some(p) = out.iter().find(|p| same_issuer(&p.client.issuer)) {
            return Err(ConfigError::new(
                var("ISSUER"),
                format!("provider {:?} has the same issuer", p.name),
            ));
        }
        if google.is_some_and(|g| same_issuer(&g.issuer)) {
            return Err(ConfigError::new(
                var("ISSUER"),
                "Google (GOOGLE_ISSUER) has the same issuer",
            ));
        }
        let display_name = match get(&var("DISPLAY_NAME")) {
            None => name.to_owned(),
            Some(d) => {
                let d = d.trim().to_owned();
                if d.is_empty() || d.chars().count() > 64 || d.chars().any(char::is_control) {
                    return Err(ConfigError::new(
                        var("DISPLAY_NAME"),
                        "must be 1-64 characters, no control characters",
                    ));
                }
                d
            }
        };
        out.push(OidcProviderConfig {
            name: name.to_owned(),
            display_name,
            client: OidcClientConfig {
                client_id,
                client_secret,
                issuer,
            },
        });
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            "OIDC_PROVIDERS",
            "names no provider (unset it to have none)",
        ));
    }
    Ok(out)
}

/// Where mail goes (`SMTP_URL`, SPEC 2 and 10).
#[derive(Clone)]
pub enum MailTransport {
    /// Development without `SMTP_URL`: mail stays in the outbox, is listed at `/dev/mail`,
    /// and each message's link is logged.
    DevOutbox,
    /// Delivered over SMTP. The URL may carry a password: never shown.
    Smtp(SecretString),
    /// `SMTP_URL=disabled`: the mail flows answer 404 `mail_not_configured`.
    Disabled,
}

impl fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MailTransport::DevOutbox => "DevOutbox",
            MailTransport::Smtp(_) => "Smtp([redacted])",
            MailTransport::Disabled => "Disabled",
        })
    }
}

/// Mail settings (SPEC 2, 10).
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// `MAIL_FROM`, checked to be one RFC 5322 mailbox.
    pub from: String,
    /// `REQUIRE_EMAIL_VERIFICATION`.
    pub require_verification: bool,
}

/// Argon2id cost parameters. Production uses [`PasswordParams::default`] (SPEC 8); tests may
/// lower them through [`Config`] directly — there is deliberately no environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            m_cost_kib: 19_456,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// One token-bucket quota: `burst` requests at once, refilled at one per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub burst: u32,
    pub period: Duration,
}

/// Rate limits of SPEC 8. Not configurable from the environment (the SPEC's table has no
/// such variable); a host application mounting the library may change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Login and signup attempts per client IP.
    pub auth_per_ip: Quota,
    /// Failed logins per (canonical) email from unrecognised devices; also signups per
    /// email (every signup counts).
    pub auth_per_email: Quota,
    /// Failed logins from one recognised device (a valid device cookie for the account).
    pub auth_per_device: Quota,
    /// Refreshes per session.
    pub refresh_per_session: Quota,
    /// Requests that send mail (verification, reset, address change) per client IP.
    pub mail_per_ip: Quota,
    /// Requests that send mail per recipient address.
    pub mail_per_address: Quota,
    /// Wrong second-factor codes per user, across every pending sign-in and
    /// reauthentication (each pending sign-in also allows at most 5).
    pub mfa_per_user: Quota,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            auth_per_ip: Quota {
                burst: 30,
                period: Duration::from_secs(2),
            },
            auth_per_email: Quota {
                burst: 10,
                period: Duration::from_secs(30),
            },
            auth_per_device: Quota {
                burst: 10,
                period: Duration::from_secs(30),
            },
            refresh_per_session: Quota {
                burst: 120,
                period: Duration::from_millis(500),
            },
            mail_per_ip: Quota {
                burst: 20,
                period: Duration::from_secs(30),
            },
            mail_per_address: Quota {
                burst: 3,
                period: Duration::from_secs(300),
            },
            // 10 wrong codes, then one per 5 minutes: with 3 codes valid at a time (±1 step)
            // of a million, guessing takes centuries.
            mfa_per_user: Quota {
                burst: 10,
                period: Duration::from_secs(300),
            },
        }
    }
}

/// Validated settings. Build with [`Config::from_env`] or [`Config::for_tests`].
#[derive(Clone)]
pub struct Config {
    /// The one production flag (`ENV=production`).
    pub production: bool,
    /// The raw `ENV` value, for the start-up line.
    pub env_value: Option<String>,
    /// Whether `ENV` came from `.env` rather than the process environment.
    pub env_from_dotenv: bool,
    pub listen_addr: SocketAddr,
    /// `PUBLIC_URL` without a trailing slash, e.g. `http://localhost:8080`.
    pub public_url: String,
    /// The origin of `PUBLIC_URL` (scheme://host[:port]).
    pub public_origin: String,
    pub database_url: SecretString,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_max_age: Duration,
    pub reuse_grace: Duration,
    pub google: Option<GoogleConfig>,
    /// `OIDC_PROVIDERS` (SPEC 13): the named OpenID providers, in the listed order.
    pub oidc: Vec<OidcProviderConfig>,
    /// Trusted origins for the origin check: PUBLIC_URL's plus `ALLOWED_ORIGINS`.
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub log_format: LogFormat,
    pub password: PasswordParams,
    /// Password hashes that may wait for a hashing thread before login, signup and password
    /// changes answer 503 `overloaded`; `None`: 16 per thread. No environment variable.
    pub password_queue: Option<usize>,
    pub rate_limits: RateLimits,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a whole request body, counted from the end of its
    /// headers (SPEC 8; set in code, no environment variable).
    pub body_read_timeout: Duration,
    /// How long a keep-alive connection may sit with no new request (SPEC 8; set in code).
    pub idle_timeout: Duration,
    /// `KEY_ROTATION_INTERVAL` (SPEC 13): how long each signing key signs before the next
    /// takes over; `None` (`off`): only `latchkey keys rotate` rotates.
    pub key_rotation_interval: Option<Duration>,
    /// `EVENTS_RETENTION` (SPEC 12): security events older than this are pruned (90 days).
    pub events_retention: Duration,
    /// The JWKS's `Cache-Control: max-age` (60 s; set in code, no environment variable).
    pub jwks_max_age: Duration,
    /// `MAX_CONNECTIONS`: client connections held at most, before fitting to the descriptor
    /// limit (see [`crate::server::fit_to_fd_limit`]).
    pub max_connections: usize,
    /// How often each instance polls the store for revocations and new signing keys.
    pub poll_interval: Duration,
    /// `SECRETS_KEY` (or the key in `SECRETS_KEY_FILE`), which seals the secrets stored in
    /// the database. `None` only in development on SQLite (see [`crate::secrets`]).
    pub secrets_key: Option<crate::secrets::SecretsKey>,
    pub mail: MailConfig,
    /// How recent a sign-in must be for changing the password or address (SPEC 11: 10
    /// minutes; set in code, no environment variable).
    pub recent_auth: Duration,
    /// The clock of the session rules; the system clock unless a test sets a manual one.
    pub clock: crate::clock::Clock,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("production", &self.production)
            .field("listen_addr", &self.listen_addr)
            .field("public_url", &self.public_url)
            .field("database", &self.database_kind())
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("session_max_age", &self.session_max_age)
            .field("reuse_grace", &self.reuse_grace)
            .field("google", &self.google)
            .field("oidc", &self.oidc)
            .field("allowed_origins", &self.allowed_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("mail", &self.mail)
            .finish_non_exhaustive()
    }
}

/// Where a variable's value came from.
struct Source {
    dotenv: HashMap<String, String>,
}

impl Source {
    fn get(&self, var: &str) -> Option<(String, bool)> {
        match std::env::var(var) {
            Ok(v) => Some((v, false)),
            Err(_) => self.dotenv.get(var).map(|v| (v.clone(), true)),
        }
    }
    fn value(&self, var: &str) -> Option<String> {
        self.get(var).map(|(v, _)| v).filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Reads the process environment, then `.env` in the working directory for what the
    /// environment does not set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_and_dotenv(Path::new(".env"))
    }

    /// Like [`Config::from_env`] with an explicit `.env` path (missing file = no entries).
    pub fn from_env_and_dotenv(path: &Path) -> Result<Self, ConfigError> {
        let mut dotenv = HashMap::new();
        if path.exists() {
            let iter = dotenvy::from_path_iter(path)
                .map_err(|e| ConfigError::new("ENV", format!(".env file unreadable: {e}")))?;
            for item in iter {
                let (k, v) =
                    item.map_err(|e| ConfigError::new("ENV", format!(".env file malformed: {e}")))?;
                dotenv.insert(k, v);
            }
        }
        Self::from_source(&Source { dotenv })
    }

    /// Builds a configuration from explicit key/value pairs only (ignores the process
    /// environment). Used by tests and by host applications that configure in code.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        let dotenv = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self::from_source_only(&dotenv)
    }

    /// Same parser, but no process environment.
    fn from_source_only(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::parse(
            &|var| map.get(var).cloned().filter(|v| !v.is_empty()),
            map.contains_key("ENV"),
        )
    }

    fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let env_from_dotenv = src.get("ENV").map(|(_, from)| from).unwrap_or(false);
        Self::parse(&|var| src.value(var), env_from_dotenv)
    }

    fn parse(
        get: &dyn Fn(&str) -> Option<String>,
        env_from_dotenv: bool,
    ) -> Result<Self, ConfigError> {
        let env_value = get("ENV");
        let production = env_value.as_deref() == Some("production");

        let listen_addr = match get("LISTEN_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(v) => v.parse().map_err(|_| {
                ConfigError::new(
                    "LISTEN_ADDR",
                    format!("expected host:port such as 127.0.0.1:8080, got {v:?}"),
                )
            })?,
        };

        let public_raw = get("PUBLIC_URL").unwrap_or_else(|| "http://localhost:8080".to_owned());
        let url = Url::parse(&public_raw).map_err(|e| {
            ConfigError::new("PUBLIC_URL", format!("not a URL ({e}): {public_raw:?}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::new(
                "PUBLIC_URL",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::new(
                "PUBLIC_URL",
                "must not carry a query or fragment",
            ));
        }
        if production && url.scheme() != "https" {
            return Err(ConfigError::new(
                "PUBLIC_URL",
                format!("must start with https:// when ENV=production, got {public_raw:?}"),
            ));
        }
        let public_origin = url.origin().ascii_serialization();
        let public_url = public_raw.trim_end_matches('/').to_owned();

        let database_url = get("DATABASE_URL").unwrap_or_else(|| "sqlite://latchkey.db".to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "expected sqlite://PATH, sqlite::memory: or postgres://…",
            ));
        }

        let dur = |var: &'static str, default: &str| -> Result<Duration, ConfigError> {
            let raw = get(var).unwrap_or_else(|| default.to_owned());
            parse_duration(&raw).map_err(|m| ConfigError::new(var, format!("{m}: {raw:?}")))
        };
        let access_ttl = dur("ACCESS_TOKEN_TTL", "15m")?;
        let refresh_ttl = dur("REFRESH_TOKEN_TTL", "14d")?;
        let session_max_age = dur("SESSION_MAX_AGE", "30d")?;
        let reuse_grace = dur("REFRESH_REUSE_GRACE", "30s")?;
        for (var, d) in [
            ("ACCESS_TOKEN_TTL", access_ttl),
            ("REFRESH_TOKEN_TTL", refresh_ttl),
            ("SESSION_MAX_AGE", session_max_age),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(var, "must be greater than zero"));
            }
        }

        let key_rotation_interval = match get("KEY_ROTATION_INTERVAL").as_deref() {
            Some("off") => None,
            raw => {
                let d = dur("KEY_ROTATION_INTERVAL", raw.unwrap_or("30d"))?;
                if d < MIN_KEY_ROTATION_INTERVAL {
                    return Err(ConfigError::new(
                        "KEY_ROTATION_INTERVAL",
                        "must be at least 1h (or off)",
                    ));
                }
                Some(d)
            }
        };

        // SPEC 12: how long security events are kept.
        let events_retention = dur("EVENTS_RETENTION", "90d")?;
        if events_retention.is_zero() {
            return Err(ConfigError::new(
                "EVENTS_RETENTION",
                "must be greater than zero",
            ));
        }

        let google = match (get("GOOGLE_CLIENT_ID"), get("GOOGLE_CLIENT_SECRET")) {
            (Some(client_id), Some(secret)) => {
                let issuer = get("GOOGLE_ISSUER")
                    .unwrap_or_else(|| "https://accounts.google.com".to_owned());
                let parsed = Url::parse(&issuer)
                    .map_err(|e| ConfigError::new("GOOGLE_ISSUER", format!("not a URL ({e})")))?;
                if production && parsed.scheme() != "https" {
                    return Err(ConfigError::new(
                        "GOOGLE_ISSUER",
                        "must be https:// when ENV=production",
                    ));
                }
                Some(GoogleConfig {
                    client_id,
                    client_secret: SecretString::from(secret),
                    issuer,
                })
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "GOOGLE_CLIENT_SECRET",
                    "must be set when GOOGLE_CLIENT_ID is",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "GOOGLE_CLIENT_ID",
                    "must be set when GOOGLE_CLIENT_SECRET is",
                ));
            }
            (None, None) => None,
        };
        let oidc = parse_oidc(get, production, google.as_ref())?;

        let mut allowed_origins = vec![public_origin.clone()];
        if let Some(list) = get("ALLOWED_ORIGINS") {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let u = Url::parse(item).map_err(|_| {
                    ConfigError::new("ALLOWED_ORIGINS", format!("not an origin: {item:?}"))
                })?;
                let origin = u.origin();
                if !origin.is_tuple() || u.path() != "/" {
                    return Err(ConfigError::new(
                        "ALLOWED_ORIGINS",
                        format!("expected scheme://host[:port] with no path: {item:?}"),
                    ));
                }
                allowed_origins.push(origin.ascii_serialization());
            }
        }

        let mut trusted_proxies = Vec::new();
        if let Some(list) = get("TRUSTED_PROXIES") {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let net = item
                    .parse::<IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(
                            "TRUSTED_PROXIES",
                            format!("not an IP address or CIDR: {item:?}"),
                        )
                    })?;
                trusted_proxies.push(net);
            }
        }

        let secrets_key = parse_secrets_key(get, production, &database_url)?;

        let log_format = match get("LOG_FORMAT").as_deref() {
            None => {
                if production {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                }
            }
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("expected text or json, got {other:?}"),
                ));
            }
        };

        let max_connections = match get("MAX_CONNECTIONS") {
            None => 4096,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::new(
                    "MAX_CONNECTIONS",
                    format!("expected a positive integer, got {v:?}"),
                )
            })?,
        };

        let mail = parse_mail(get, production, &url)?;

        Ok(Self {
            production,
            env_value,
            env_from_dotenv,
            listen_addr,
            public_url,
            public_origin,
            database_url: SecretString::from(database_url),
            access_ttl,
            refresh_ttl,
            session_max_age,
            reuse_grace,
            google,
            oidc,
            allowed_origins,
            trusted_proxies,
            log_format,
            password: PasswordParams::default(),
            password_queue: None,
            rate_limits: RateLimits::default(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            key_rotation_interval,
            events_retention,
            jwks_max_age: Duration::from_secs(60),
            max_connections,
            poll_interval: Duration::from_millis(500),
            secrets_key,
            mail,
            recent_auth: Duration::from_secs(600),
            clock: crate::clock::Clock::default(),
        })
    }

    /// How long before it signs a scheduled signing key is published in the JWKS: one
    /// JWKS cache lifetime, plus another as margin, plus the time every instance takes to
    /// reload the key set (10 polls). A resource server that caches the JWKS for its
    /// `max-age` therefore knows a key before any token signed with it exists.
    pub fn key_publish_lead(&self) -> Duration {
        self.jwks_max_age * 2 + self.poll_interval * 10
    }

    /// A development configuration on a fresh in-memory database with cheap password
    /// hashing, for tests.
    pub fn for_tests() -> Self {
        let mut c =
            Self::from_pairs([("DATABASE_URL", "sqlite::memory:")]).expect("test config is valid");
        c.password = PasswordParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        c
    }

    /// `sqlite` or `postgres`, for logs.
    pub fn database_kind(&self) -> &'static str {
        use secrecy::ExposeSecret;
        if self.database_url.expose_secret().starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        }
    }

    /// The one start-up line of SPEC 2 (never a secret).
    pub fn startup_summary(&self) -> String {
        let why = match (&self.env_value, self.env_from_dotenv) {
            (None, _) => "ENV unset".to_owned(),
            (Some(v), false) => format!("ENV={v:?} from the environment"),
            (Some(v), true) => format!("ENV={v:?} from .env"),
        };
        format!(
            "latchkey starting: mode={} ({why}), listen={}, public_url={}, database={}, google={}, oidc={}, mail={}",
            if self.production {
                "production"
            } else {
                "development"
            },
            self.listen_addr,
            self.public_url,
            self.database_kind(),
            if self.google.is_some() { "on" } else { "off" },
            if self.oidc.is_empty() {
                "off".to_owned()
            } else {
                self.oidc
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            match self.mail.transport {
                MailTransport::DevOutbox => "outbox only (no SMTP_URL; see /dev/mail)",
                MailTransport::Smtp(_) => "smtp",
                MailTransport::Disabled => "disabled",
            },
        )
    }
}

/// `SMTP_URL`, `MAIL_FROM`, `REQUIRE_EMAIL_VERIFICATION` (SPEC 2). Errors never repeat the
/// SMTP URL (it may hold a password).
fn parse_mail(
    get: &dyn Fn(&str) -> Option<String>,
    production: bool,
    public_url: &Url,
) -> Result<MailConfig, ConfigError> {
    let transport = match get("SMTP_URL") {
        None if production => {
            return Err(ConfigError::new(
                "SMTP_URL",
                "required when ENV=production (smtps://user:password@host, \
                 smtp://host?tls=required, or `disabled` to turn the mail flows off)",
            ));
        }
        None => MailTransport::DevOutbox,
        Some(v) if v == "disabled" => MailTransport::Disabled,
        Some(v) => {
            let u = Url::parse(&v).map_err(|_| {
                ConfigError::new("SMTP_URL", "not a URL (expected smtps://… or smtp://…)")
            })?;
            let host = u.host_str().unwrap_or_default().to_owned();
            if host.is_empty() {
                return Err(ConfigError::new("SMTP_URL", "has no host"));
            }
            let tls_required = u.query_pairs().any(|(k, v)| k == "tls" && v == "required");
            match u.scheme() {
                "smtps" => {}
                "smtp" if tls_required => {}
                "smtp" => {
                    let loopback = host == "localhost"
                        || host
                            .trim_matches(|c| c == '[' || c == ']')
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback());
                    if production && !loopback {
                        return Err(ConfigError::new(
                            "SMTP_URL",
                            "plain smtp:// to a host other than loopback is refused when \
                             ENV=production: use smtps:// or smtp://…?tls=required",
                        ));
                    }
                }
                other => {
                    return Err(ConfigError::new(
                        "SMTP_URL",
                        format!("unsupported scheme {other:?} (expected smtps or smtp)"),
                    ));
                }
            }
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&v)
                .map_err(|e| ConfigError::new("SMTP_URL", format!("not usable: {e}")))?;
            MailTransport::Smtp(SecretString::from(v))
        }
    };
    let from = get("MAIL_FROM").unwrap_or_else(|| {
        format!(
            "latchkey <no-reply@{}>",
            public_url.host_str().unwrap_or("localhost")
        )
    });
    from.parse::<lettre::message::Mailbox>()
        .map_err(|e| ConfigError::new("MAIL_FROM", format!("not a mailbox ({e}): {from:?}")))?;
    let require_verification = match get("REQUIRE_EMAIL_VERIFICATION").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ConfigError::new(
                "REQUIRE_EMAIL_VERIFICATION",
                format!("expected true or false, got {other:?}"),
            ));
        }
    };
    if require_verification && matches!(transport, MailTransport::Disabled) {
        return Err(ConfigError::new(
            "REQUIRE_EMAIL_VERIFICATION",
            "cannot be true with SMTP_URL=disabled: no address could ever be verified",
        ));
    }
    Ok(MailConfig {
        transport,
        from,
        require_verification,
    })
}

/// `SECRETS_KEY` or `SECRETS_KEY_FILE` (SPEC 2): required in production and with
/// PostgreSQL; errors never repeat the key.
fn parse_secrets_key(
    get: &dyn Fn(&str) -> Option<String>,
    production: bool,
    database_url: &str,
) -> Result<Option<crate::secrets::SecretsKey>, ConfigError> {
    use crate::secrets::SecretsKey;
    match (get("SECRETS_KEY"), get("SECRETS_KEY_FILE")) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "SECRETS_KEY",
            "set SECRETS_KEY or SECRETS_KEY_FILE, not both",
        )),
        (Some(text), None) => {
            use secrecy::ExposeSecret as _;
            SecretsKey::parse(SecretString::from(text).expose_secret())
                .map(Some)
                .map_err(|m| ConfigError::new("SECRETS_KEY", m))
        }
        (None, Some(path)) => SecretsKey::read_file(Path::new(&path))
            .map(Some)
            .map_err(|e| ConfigError::new("SECRETS_KEY_FILE", e.to_string())),
        (None, None) => match crate::secrets::key_required(production, database_url) {
            Some(why) => Err(ConfigError::new(
                "SECRETS_KEY",
                format!(
                    "required with {why} (32 random bytes, base64, e.g. `openssl rand -base64 32`; \
                     or SECRETS_KEY_FILE naming a file that holds them)"
                ),
            )),
            None => Ok(None),
        },
    }
}

/// Parses `900`, `900s`, `15m`, `2h`, `14d` (also `500ms`) into a duration.
/// The shortest `KEY_ROTATION_INTERVAL` accepted from the environment (tests set shorter
/// ones in code).
pub const MIN_KEY_ROTATION_INTERVAL: Duration = Duration::from_secs(3600);

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err("expected a number of seconds or a number with a unit (s, m, h, d)".into());
    }
    let n: u64 = num.parse().map_err(|_| "number too large".to_owned())?;
    let d = match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        "ms" => Some(Duration::from_millis(n)),
        _ => return Err(format!("unknown unit {unit:?} (use s, m, h or d)")),
    };
    // Cap at ~100 years, in every unit (fuzzing, issue 11: `ms` escaped it), so that every
    // later addition to a timestamp stays in range.
    match d {
        Some(d) if d <= MAX_DURATION => Ok(d),
        _ => Err("duration too large".into()),
    }
}

/// The longest duration a setting may have: about 100 years.
pub const MAX_DURATION: Duration = Duration::from_secs(3_153_600_000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("900").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        for bad in ["", "m", "15x", "-1", "1.5m", "99999999999999999999", "15 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// Fuzzing (issue 11, `duration`): milliseconds escaped the 100-year cap, so
    /// `REFRESH_REUSE_GRACE=18446744073709551615ms` was accepted (584 million years) and
    /// later timestamp arithmetic could overflow. The input is `fuzz/regressions/duration/`.
    #[test]
    fn fuzz_milliseconds_obey_the_cap_too() {
        let regression = include_str!("../../../fuzz/regressions/duration/ms-over-cap");
        assert!(parse_duration(regression).is_err());
        assert!(parse_duration("3153600000001ms").is_err());
        assert_eq!(parse_duration("3153600000000ms"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("3153600000s"), Ok(MAX_DURATION));
        assert!(parse_duration("3153600001").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn production_refuses_http_public_url_naming_the_variable() {
        let err = Config::from_pairs([("ENV", "production"), ("PUBLIC_URL", "http://example.com")])
            .unwrap_err();
        assert_eq!(err.var, "PUBLIC_URL");
        assert!(
            err.to_string()
                .starts_with("invalid configuration: PUBLIC_URL:")
        );
        let ok = Config::from_pairs([
            ("ENV", "production"),
            ("PUBLIC_URL", "https://example.com"),
            ("SECRETS_KEY", KEY),
            ("SMTP_URL", "disabled"),
        ])
        .unwrap();
        assert!(ok.production);
        assert_eq!(ok.log_format, LogFormat::Json);
    }

    #[test]
    fn only_the_exact_value_production_turns_production_on() {
        for v in ["prod", "Production", "development", ""] {
            assert!(
                !Config::from_pairs([("ENV", v)]).unwrap().production,
                "{v:?}"
            );
        }
    }

    #[test]
    fn events_retention_defaults_to_90_days_and_refuses_zero() {
        let c = Config::from_pairs([] as [(&str, &str); 0]).unwrap();
        assert_eq!(c.events_retention, Duration::from_secs(90 * 86400));
        let c = Config::from_pairs([("EVENTS_RETENTION", "7d")]).unwrap();
        assert_eq!(c.events_retention, Duration::from_secs(7 * 86400));
        for bad in ["0", "forever", "-1d"] {
            let err = Config::from_pairs([("EVENTS_RETENTION", bad)]).unwrap_err();
            assert_eq!(err.var, "EVENTS_RETENTION");
        }
    }

    #[test]
    fn bad_duration_names_its_variable() {
        let err = Config::from_pairs([("REFRESH_TOKEN_TTL", "fortnight")]).unwrap_err();
        assert_eq!(err.var, "REFRESH_TOKEN_TTL");
    }

    #[test]
    fn max_connections_defaults_to_4096_and_refuses_non_positive_values() {
        assert_eq!(Config::from_pairs([]).unwrap().max_connections, 4096);
        assert_eq!(
            Config::from_pairs([("MAX_CONNECTIONS", "100")])
                .unwrap()
                .max_connections,
            100
        );
        for bad in ["0", "-1", "many", "1.5"] {
            let err = Config::from_pairs([("MAX_CONNECTIONS", bad)]).unwrap_err();
            assert_eq!(err.var, "MAX_CONNECTIONS", "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Config::from_pairs([
            ("GOOGLE_CLIENT_ID", "id"),
            ("GOOGLE_CLIENT_SECRET", "s3cr3t-value"),
            ("DATABASE_URL", "postgres://u:dbpass@h/db"),
            ("SECRETS_KEY", KEY),
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("s3cr3t-value") && !dbg.contains("dbpass"),
            "{dbg}"
        );
        assert!(!c.startup_summary().contains("dbpass"));
        assert!(!dbg.contains(KEY), "{dbg}");
    }

    const KEY: &str = "zpMxY6ELREkcE3Drna0VwrpJxQsHuMm8p8IYx3MDrs8=";

    /// SPEC 2: production needs SMTP_URL (or `disabled`); plain SMTP only to loopback there;
    /// errors never repeat the URL's password.
    #[test]
    fn smtp_url_rules() {
        let prod = |smtp: Option<&str>| {
            let mut pairs = vec![
                ("ENV", "production"),
                ("PUBLIC_URL", "https://example.com"),
                ("SECRETS_KEY", KEY),
            ];
            if let Some(v) = smtp {
                pairs.push(("SMTP_URL", v));
            }
            Config::from_pairs(pairs)
        };
        assert_eq!(prod(None).unwrap_err().var, "SMTP_URL");
        assert!(matches!(
            prod(Some("disabled")).unwrap().mail.transport,
            MailTransport::Disabled
        ));
        for ok in [
            "smtps://user:pw@mail.example.com",
            "smtp://mail.example.com:587?tls=required",
            "smtp://127.0.0.1:2525",
            "smtp://localhost:25",
        ] {
            assert!(
                matches!(
                    prod(Some(ok)).unwrap().mail.transport,
                    MailTransport::Smtp(_)
                ),
                "{ok}"
            );
        }
        let err = prod(Some("smtp://user:hunter2@mail.example.com:25")).unwrap_err();
        assert_eq!(err.var, "SMTP_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(prod(Some("http://x")).unwrap_err().var, "SMTP_URL");
        // Development: plain SMTP anywhere; no SMTP_URL keeps mail in the outbox.
        let dev = Config::from_pairs([("SMTP_URL", "smtp://mail.example.com:25")]).unwrap();
        assert!(matches!(dev.mail.transport, MailTransport::Smtp(_)));
        let dev = Config::from_pairs([]).unwrap();
        assert!(matches!(dev.mail.transport, MailTransport::DevOutbox));
        assert_eq!(dev.mail.from, "latchkey <no-reply@localhost>");
        assert!(!dev.mail.require_verification);
        let err = Config::from_pairs([("MAIL_FROM", "a\r\nBcc: x@evil.test")]).unwrap_err();
        assert_eq!(err.var, "MAIL_FROM");
        let err = Config::from_pairs([("REQUIRE_EMAIL_VERIFICATION", "yes")]).unwrap_err();
        assert_eq!(err.var, "REQUIRE_EMAIL_VERIFICATION");
        let err = Config::from_pairs([
            ("REQUIRE_EMAIL_VERIFICATION", "true"),
            ("SMTP_URL", "disabled"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "REQUIRE_EMAIL_VERIFICATION");
    }

    /// Finding 5 (issue 9): production and PostgreSQL need SECRETS_KEY; a bad one is named
    /// without being repeated.
    #[test]
    fn finding_5_secrets_key_required_in_production_and_with_postgres() {
        for pairs in [
            vec![("ENV", "production"), ("PUBLIC_URL", "https://example.com")],
            vec![("DATABASE_URL", "postgres://h/db")],
        ] {
            let err = Config::from_pairs(pairs.clone()).unwrap_err();
            assert_eq!(err.var, "SECRETS_KEY", "{pairs:?}");
            let mut with = pairs.clone();
            with.push(("SECRETS_KEY", KEY));
            with.push(("SMTP_URL", "disabled"));
            assert!(Config::from_pairs(with).unwrap().secrets_key.is_some());
        }
        // Development on SQLite: none needed (generated beside the file, or ephemeral).
        assert!(Config::from_pairs([]).unwrap().secrets_key.is_none());
        let short = "c2hvcnQta2V5LXZhbHVl";
        let err = Config::from_pairs([("SECRETS_KEY", short)]).unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY");
        assert!(!err.to_string().contains(short), "{err}");
        let err =
            Config::from_pairs([("SECRETS_KEY", KEY), ("SECRETS_KEY_FILE", "/x")]).unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY");
        let err =
            Config::from_pairs([("SECRETS_KEY_FILE", "/nonexistent/latchkey.key")]).unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY_FILE");
    }

    #[test]
    fn named_openid_providers_are_read_and_checked() {
        let base = [
            ("OIDC_PROVIDERS", "corp, my-idp"),
            ("OIDC_CORP_ISSUER", "https://login.corp.example"),
            ("OIDC_CORP_CLIENT_ID", "c1"),
            ("OIDC_CORP_CLIENT_SECRET", "s1"),
            ("OIDC_CORP_DISPLAY_NAME", " Corp SSO "),
            ("OIDC_MY_IDP_ISSUER", "https://idp.example/realms/x"),
            ("OIDC_MY_IDP_CLIENT_ID", "c2"),
            ("OIDC_MY_IDP_CLIENT_SECRET", "s2"),
        ];
        let c = Config::from_pairs(base).unwrap();
        let names: Vec<(&str, &str, &str)> = c
            .oidc
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.display_name.as_str(),
                    p.client.issuer.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("corp", "Corp SSO", "https://login.corp.example"),
                ("my-idp", "my-idp", "https://idp.example/realms/x")
            ]
        );
        assert!(
            !format!("{c:?}").contains("s1"),
            "secrets stay out of Debug"
        );
        assert!(c.startup_summary().contains("oidc=corp,my-idp"));
        assert!(Config::from_pairs([]).unwrap().oidc.is_empty());

        let err_with = |edit: &[(&'static str, &'static str)]| {
            let mut pairs: HashMap<&str, &str> = base.into_iter().collect();
            for (k, v) in edit {
                pairs.insert(k, v);
            }
            Config::from_pairs(pairs).unwrap_err()
        };
        for bad in ["Corp", "-corp", "co rp", "corp_x", "a/b", &"a".repeat(33)] {
            let list: &'static str = Box::leak(bad.to_owned().into_boxed_str());
            let e = err_with(&[("OIDC_PROVIDERS", list)]);
            assert_eq!(e.var, "OIDC_PROVIDERS", "{bad:?}");
        }
        assert_eq!(
            err_with(&[("OIDC_PROVIDERS", "corp,corp")]).var,
            "OIDC_PROVIDERS"
        );
        let e = err_with(&[("OIDC_PROVIDERS", "google")]);
        assert!(e.var == "OIDC_PROVIDERS" && e.message.contains("GOOGLE_CLIENT_ID"));
        assert_eq!(err_with(&[("OIDC_PROVIDERS", " , ")]).var, "OIDC_PROVIDERS");
        assert_eq!(
            err_with(&[("OIDC_CORP_CLIENT_SECRET", "")]).var,
            "OIDC_CORP_CLIENT_SECRET"
        );
        assert_eq!(
            err_with(&[("OIDC_MY_IDP_CLIENT_ID", "")]).var,
            "OIDC_MY_IDP_CLIENT_ID"
        );
        assert_eq!(
            err_with(&[("OIDC_CORP_ISSUER", "not a url")]).var,
            "OIDC_CORP_ISSUER"
        );
        assert_eq!(
            err_with(&[("OIDC_CORP_ISSUER", "ftp://x.example")]).var,
            "OIDC_CORP_ISSUER"
        );
        assert_eq!(
            err_with(&[("OIDC_CORP_ISSUER", "https://idp.example/realms/x/")]).var,
            "OIDC_MY_IDP_ISSUER",
            "two providers, one issuer"
        );
        let e = err_with(&[
            ("GOOGLE_CLIENT_ID", "g"),
            ("GOOGLE_CLIENT_SECRET", "gs"),
            ("OIDC_CORP_ISSUER", "https://accounts.google.com"),
        ]);
        assert_eq!(e.var, "OIDC_CORP_ISSUER", "Google's issuer is taken");
        assert_eq!(
            err_with(&[("OIDC_CORP_DISPLAY_NAME", "a\u{7}b")]).var,
            "OIDC_CORP_DISPLAY_NAME"
        );
        let e = err_with(&[
            ("ENV", "production"),
            ("PUBLIC_URL", "https://auth.example"),
            ("SMTP_URL", "disabled"),
            ("SECRETS_KEY", KEY),
            ("OIDC_CORP_ISSUER", "http://login.corp.example"),
        ]);
        assert!(
            e.var == "OIDC_CORP_ISSUER" && e.message.contains("https"),
            "{e}"
        );
    }
}
