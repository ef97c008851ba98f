//! Mounting latchkey into an existing axum application with its own state.
//!
//! `cargo run -p latchkey --example mount`, then sign up through
//! `POST /api/v1/auth/signup` and call `GET /hello` with the cookie.

use axum::extract::{FromRef, State};
use axum::{Router, routing::get};
use latchkey::{AppState, AuthUser, Config};

/// The host application's own state, holding latchkey's beside its own things.
#[derive(Clone)]
struct MyState {
    latchkey: AppState,
    greeting: &'static str,
}

/// This is all `AuthUser` needs to work in the host's handlers.
impl FromRef<MyState> for AppState {
    fn from_ref(s: &MyState) -> AppState {
        s.latchkey.clone()
    }
}

async fn hello(State(s): State<MyState>, user: AuthUser) -> String {
    format!(
        "{}, user {} (session {})",
        s.greeting, user.user_id, user.session_id
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let latchkey = AppState::start(Config::from_env()?).await?;
    let mine = Router::new()
        .route("/hello", get(hello))
        .with_state(MyState {
            latchkey: latchkey.clone(),
            greeting: "hello",
        });
    // latchkey's API under its own paths, the host's routes beside it.
    let app = latchkey::http::router(latchkey.clone()).merge(mine);
    let listener = tokio::net::TcpListener::bind(latchkey.config().listen_addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    latchkey::serve(listener, app, latchkey.serve_options(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
