//! # latchkey
//!
//! Self-hosted authentication for web applications: email/password sign-in, short-lived
//! EdDSA access tokens and rotating refresh tokens in HttpOnly cookies, real logout.
//!
//! The `latchkey` binary runs it as a service. This crate lets an existing axum application
//! mount the same router and protect its own routes with [`AuthUser`]:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use latchkey::{AppState, AuthUser, Config};
//!
//! async fn hello(user: AuthUser) -> String {
//!     format!("hello, {}", user.user_id)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let state = AppState::start(Config::from_env()?).await?;
//! let mine: Router<AppState> = Router::new().route("/hello", get(hello));
//! let app = latchkey::http::app(state.clone(), mine);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! latchkey::serve(listener, app, state.serve_options(), std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! A host application with its own state implements `FromRef<HostState> for AppState`;
//! `AuthUser` then works in its handlers too (see `examples/mount.rs`).
//!
//! Data flow: [`config`] → [`state`] → [`http`] (router, origin check, extractors,
//! handlers) → [`session`] and [`tokens`] → [`store`].

pub mod clock;
pub mod config;
pub mod cookies;
pub mod device;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod mail;
pub mod mfa;
pub mod oidc;
pub mod passkeys;
pub mod password;
pub mod ratelimit;
pub mod secrets;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod tokens;

pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use http::extract::AuthUser;
pub use mfa::{RequireMfa, RequireRecentAuth};
pub use server::{ServeOptions, serve};
pub use state::{AppState, StartError};
