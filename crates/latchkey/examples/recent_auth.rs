//! A host application protecting its own routes with latchkey's SPEC 11 extractors:
//! `RequireRecentAuth` (signed in, or reauthenticated, within the last 10 minutes) and
//! `RequireMfa` (the session signed in with two factors).
//!
//! `cargo run -p latchkey --example recent_auth`, then:
//!
//! - `POST /api/v1/auth/signup` signs in; `POST /account/delete` answers 200 for 10
//!   minutes, then 403 `reauthentication_required` until
//!   `POST /api/v1/auth/reauthenticate {"method": "password", "password": …}`;
//! - `GET /payouts` answers 403 `mfa_required` until the account turns TOTP on
//!   (`/api/v1/auth/mfa/totp/setup`, `/confirm`) and signs in again with a code.

use axum::extract::{FromRef, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey::{AppState, Config, RequireMfa, RequireRecentAuth};
use serde_json::{Value, json};

#[derive(Clone)]
struct Shop {
    latchkey: AppState,
}

impl FromRef<Shop> for AppState {
    fn from_ref(s: &Shop) -> AppState {
        s.latchkey.clone()
    }
}

/// A dangerous action: only with a fresh proof of identity.
async fn delete_account(RequireRecentAuth(user): RequireRecentAuth) -> Json<Value> {
    Json(json!({
        "would_delete": user.user_id.to_string(),
        "authenticated_at": user.claims.auth_time,
    }))
}

/// Sensitive data: only for sessions that signed in with a second factor.
async fn payouts(State(_shop): State<Shop>, RequireMfa(user): RequireMfa) -> Json<Value> {
    Json(json!({ "user": user.user_id.to_string(), "amr": user.claims.amr }))
}

/// The host's routes, with its own state.
fn host_routes(latchkey: AppState) -> Router {
    Router::new()
        .route("/account/delete", post(delete_account))
        .route("/payouts", get(payouts))
        .with_state(Shop { latchkey })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let latchkey = AppState::start(Config::from_env()?).await?;
    let app = latchkey::http::router(latchkey.clone()).merge(host_routes(latchkey.clone()));
    let listener = tokio::net::TcpListener::bind(latchkey.config().listen_addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    latchkey::serve(listener, app, latchkey.serve_options(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
