//! Application state: everything a request needs, built once at start.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret as _;

use crate::clock::{ms, now_ms};
use crate::config::Config;
use crate::cookies::CookiePolicy;
use crate::device::DeviceKey;
use crate::mail::Mailer;
use crate::oidc::Provider;
use crate::oidc::state_cookie::StateSealer;
use crate::password::PasswordHasher;
use crate::ratelimit::{Limits, MemoryLimiter, RateLimiter};
use crate::secrets::{self, SecretsKey};
use crate::session::profiles::ProfileCache;
use crate::session::revocation::Revocations;
use crate::store::{self, Store, StoreError};
use crate::tokens::access::LEEWAY_SECS;
use crate::tokens::cache::VerifiedTokens;
use crate::tokens::keys::{KeyRing, RETIRED_KEY_MARGIN};
use crate::tokens::refresh::RefreshSecret;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("password hashing: {0}")]
    Password(#[from] crate::password::HashError),
    #[error("openid provider {0}: {1}")]
    Oidc(String, String),
    /// `SECRETS_KEY` is missing, wrong, or does not open what the database holds.
    #[error("{0}")]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error("mail: {0}")]
    Mail(String),
}

/// Shared state of a running latchkey. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    cookies: CookiePolicy,
    store: Arc<dyn Store>,
    keys: KeyRing,
    revocations: Revocations,
    hasher: PasswordHasher,
    limiter: Limits,
    refresh_secret: RefreshSecret,
    device_key: DeviceKey,
    secrets_key: SecretsKey,
    metrics: PrometheusHandle,
    /// Google sign-in, when configured. Makes no network call until first used.
    google: Option<Arc<Provider>>,
    /// The named OpenID providers (`OIDC_PROVIDERS`), likewise.
    oidc: Vec<Arc<Provider>>,
    verified_tokens: VerifiedTokens,
    profiles: ProfileCache,
    mailer: Mailer,
    /// Passkeys' relying party; `None` when PUBLIC_URL's host is not a domain name.
    relying_party: Option<crate::passkeys::RelyingParty>,
}

impl crate::mail::outbox::Outbox for Inner {
    fn store(&self) -> &dyn Store {
        &*self.store
    }
    fn mailer(&self) -> &Mailer {
        &self.mailer
    }
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // A host application may already have a recorder; then its recorder gets the
            // metrics and this handle renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl AppState {
    /// Connects to the store, migrates it, loads keys and the server secret, and starts the
    /// background sync (revocations, keys) and pruning tasks.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let store = store::connect(&config.database_url).await?;
        store.migrate().await?;
        Self::with_store(config, store).await
    }

    /// Like [`AppState::start`] with an already opened, migrated store.
    pub async fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, StartError> {
        // Before anything reads a secret: the key, checked; old rows in clear sealed.
        let secrets_key = secrets::prepare(&config, &*store).await?;
        let keys = KeyRing::load(store.clone(), secrets_key.clone(), config.access_ttl).await?;
        let secret = secrets::server_secret(&*store, &secrets_key, "refresh_hmac", 32).await?;
        let refresh_secret =
            RefreshSecret::from_bytes(secret.expose_secret()).ok_or_else(|| {
                StoreError::Other("stored refresh secret has the wrong length".into())
            })?;
        let device_key = DeviceKey::from_bytes(
            secrets::server_secret(&*store, &secrets_key, "device_cookie_key", 32)
                .await?
                .expose_secret(),
        )
        .ok_or_else(|| StoreError::Other("stored device-cookie key has the wrong length".into()))?;
        let horizon = ms(config.access_ttl) + (LEEWAY_SECS as i64) * 1000 + ms(RETIRED_KEY_MARGIN);
        let revocations = Revocations::new(horizon);
        let next = revocations.sync(&*store, now_ms() - horizon).await?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let hasher = PasswordHasher::with_queue(config.password, cores, config.password_queue)?;
        // One state key for every provider; each seals under its own name (state_cookie.rs).
        let state_key = if config.google.is_some() || !config.oidc.is_empty() {
            Some(
                secrets::server_secret(
                    &*store,
                    &secrets_key,
                    "oauth_state_key",
                    StateSealer::KEY_LEN,
                )
                .await?,
            )
        } else {
            None
        };
        let key: &[u8] = state_key.as_ref().map_or(&[], |k| k.expose_secret());
        let google = match &config.google {
            Some(g) => Some(Arc::new(
                Provider::google(g, &config.public_url, key)
                    .map_err(|e| StartError::Oidc("google".into(), e))?,
            )),
            None => None,
        };
        let mut oidc = Vec::with_capacity(config.oidc.len());
        for p in &config.oidc {
            oidc.push(Arc::new(
                Provider::named(p, &config.public_url, key)
                    .map_err(|e| StartError::Oidc(p.name.clone(), e))?,
            ));
        }
        // Shared through the store when it can (PostgreSQL: limits hold across instances).
        let limiter: Arc<dyn RateLimiter> = store
            .rate_limiter(config.rate_limits)
            .unwrap_or_else(|| Arc::new(MemoryLimiter::new(config.rate_limits)));
        let smtp = match crate::mail::outbox::smtp_url(&config.mail.transport) {
            Some(url) => Some(
                crate::mail::outbox::transport(url)
                    .map_err(|e| StartError::Mail(format!("SMTP_URL not usable: {e}")))?,
            ),
            None => None,
        };
        let (mailer, reset_requests) = Mailer::new(&config, secrets_key.clone());
        let relying_party = crate::passkeys::RelyingParty::from_config(&config);
        if relying_party.is_none() {
            tracing::warn!(
                public_url = %config.public_url,
                "passkeys are off: PUBLIC_URL's host is not a domain name"
            );
        }
        let state = Self(Arc::new(Inner {
            relying_party,
            mailer,
            cookies: CookiePolicy::new(config.production),
            limiter: Limits(limiter.clone()),
            config,
            store,
            keys,
            revocations,
            hasher,
            refresh_secret,
            device_key,
            secrets_key,
            metrics: metrics_handle(),
            verified_tokens: VerifiedTokens::default(),
            profiles: ProfileCache::default(),
            google,
            oidc,
        }));
        state.spawn_background(next, limiter);
        if let Some(smtp) = smtp {
            crate::mail::outbox::spawn_worker(Arc::downgrade(&state.0), smtp);
        }
        state.spawn_reset_requests(reset_requests);
        Ok(state)
    }

    fn spawn_background(&self, mut since: i64, limiter: Arc<dyn RateLimiter>) {
        // The tasks hold a weak reference: they end when the last AppState is dropped.
        let weak = Arc::downgrade(&self.0);
        let every = self.0.config.poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                match inner.revocations.sync(&*inner.store, since).await {
                    Ok(next) => since = next,
                    Err(e) => tracing::warn!(error = %e, "revocation sync failed; retrying"),
                }
                n += 1;
                // Expired and long-revoked sessions: every ~10 minutes (and soon after start).
                if n % 1200 == 20 {
                    let cutoff = now_ms() - inner.revocations.horizon_ms();
                    match inner.store.prune_sessions(cutoff).await {
                        Ok(0) => {}
                        Ok(k) => {
                            tracing::info!(sessions = k, "pruned expired and revoked sessions")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "session pruning failed; retrying later")
                        }
                    }
                }
                // Delivered and given-up mail, and expired mail tokens, a week on.
                if n % 1200 == 40 {
                    let week = 7 * 24 * 3600 * 1000;
                    match inner.store.prune_mail(now_ms() - week).await {
                        Ok(0) => {}
                        Ok(k) => tracing::info!(rows = k, "pruned old mail and mail tokens"),
                        Err(e) => tracing::warn!(error = %e, "mail pruning failed; retrying later"),
                    }
                }
                // Pending second-factor sign-ins (5 minutes each), an hour after they expired.
                if n % 1200 == 60 {
                    match inner.store.prune_pending_logins(now_ms() - 3_600_000).await {
                        Ok(0) => {}
                        Ok(k) => tracing::info!(rows = k, "pruned expired pending sign-ins"),
                        Err(e) => {
                            tracing::warn!(error = %e, "pending sign-in pruning failed; retrying later")
                        }
                    }
                }
                // Security events older than EVENTS_RETENTION (SPEC 12): every ~10 minutes.
                if n % 1200 == 80 {
                    match crate::events::prune(&*inner.store, &inner.config).await {
                        Ok(0) => {}
                        Ok(k) => tracing::info!(rows = k, "pruned old security events"),
                        Err(e) => {
                            tracing::warn!(error = %e, "event pruning failed; retrying later")
                        }
                    }
                }
                // Keys change rarely: every ~10 polls (5 s by default).
                if n.is_multiple_of(10) {
                    if let Some(interval) = inner.config.key_rotation_interval {
                        let lead = inner.config.key_publish_lead();
                        match inner.keys.rotate_if_due(interval, lead).await {
                            Ok(Some(kid)) => tracing::info!(
                                %kid,
                                signs_in_secs = lead.as_secs(),
                                "scheduled signing-key rotation: next key published"
                            ),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "scheduled key rotation failed; retrying")
                            }
                        }
                    }
                    crate::mail::outbox::update_gauges(&*inner.store).await;
                    if let Err(e) = inner.keys.reload().await {
                        tracing::warn!(error = %e, "key reload failed; retrying");
                    }
                    limiter.maintain().await;
                    // Histogram samples wait in the recorder until a scrape or an upkeep
                    // drains them into their summaries; without this, an instance nobody
                    // scrapes kept every request's duration (issue 11: the soak's steady
                    // ~0.6 MiB a minute). What the exporter's own upkeep task does, every 5 s.
                    inner.metrics.run_upkeep();
                }
                metrics::gauge!("latchkey_revoked_sessions_cached")
                    .set(inner.revocations.len() as f64);
            }
        });
    }

    /// Forgot-password requests are looked up and mailed here, after their response went out.
    fn spawn_reset_requests(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<(crate::domain::Email, String)>,
    ) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            while let Some((email, ip)) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                let state = AppState(inner);
                if let Err(e) = crate::http::email::send_reset_link(&state, &email, &ip).await {
                    tracing::warn!(error = %e, "forgot password: the reset mail could not be queued");
                }
            }
        });
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }
    pub fn cookies(&self) -> CookiePolicy {
        self.0.cookies
    }
    pub fn store(&self) -> &dyn Store {
        &*self.0.store
    }
    pub fn keys(&self) -> &KeyRing {
        &self.0.keys
    }
    pub fn revocations(&self) -> &Revocations {
        &self.0.revocations
    }
    pub fn hasher(&self) -> &PasswordHasher {
        &self.0.hasher
    }
    pub fn limiter(&self) -> &Limits {
        &self.0.limiter
    }
    pub fn refresh_secret(&self) -> &RefreshSecret {
        &self.0.refresh_secret
    }
    /// The key device cookies are signed with (see `device`).
    pub fn device_key(&self) -> &DeviceKey {
        &self.0.device_key
    }
    /// The key that seals the secrets this instance stores (e.g. a rotated signing key).
    pub fn secrets_key(&self) -> &SecretsKey {
        &self.0.secrets_key
    }
    /// Recently served `/api/v1/me` answers (see `session::profiles`).
    pub fn profiles(&self) -> &ProfileCache {
        &self.0.profiles
    }
    /// Access tokens that passed full verification (see `tokens::cache`).
    pub fn verified_tokens(&self) -> &VerifiedTokens {
        &self.0.verified_tokens
    }
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }
    /// Google sign-in, when `GOOGLE_CLIENT_ID` and `GOOGLE_CLIENT_SECRET` are set.
    pub fn google(&self) -> Option<&Provider> {
        self.0.google.as_deref()
    }
    /// The named OpenID provider `name` (`OIDC_PROVIDERS`), if configured. Never Google's
    /// preset, whose routes are its own.
    pub fn oidc_provider(&self, name: &str) -> Option<&Provider> {
        self.0.oidc.iter().find(|p| p.name() == name).map(|p| &**p)
    }
    /// Every configured OpenID provider: Google's first, then the named ones in order.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.0.google.iter().chain(self.0.oidc.iter()).map(|p| &**p)
    }
    /// The configured provider whose issuer is `issuer` (issuers are unique by
    /// configuration), for naming an account's sign-in methods.
    pub fn provider_for_issuer(&self, issuer: &str) -> Option<&Provider> {
        self.providers().find(|p| p.issuer() == issuer)
    }
    /// Composes and queues mail (SPEC 10).
    pub fn mailer(&self) -> &Mailer {
        &self.0.mailer
    }
    /// The WebAuthn relying party (SPEC 11); `None` when passkeys are off.
    pub fn relying_party(&self) -> Option<&crate::passkeys::RelyingParty> {
        self.0.relying_party.as_ref()
    }
    /// The connection limits [`crate::serve`] should use (SPEC 8).
    pub fn serve_options(&self) -> crate::server::ServeOptions {
        crate::server::ServeOptions::from_config(&self.0.config)
    }
}
