//! `GET /dev/mail`: the development outbox (SPEC 10). In development without `SMTP_URL`,
//! mail is never sent; this page lists it with clickable links, so `cargo run --release`
//! alone lets a newcomer try every mail flow. 404 otherwise (always in production, where
//! `SMTP_URL` is required).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::state::AppState;

/// Messages shown, newest first.
const SHOWN: i64 = 50;

use crate::mail::templates::html_escape as escape;

pub async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.config().production || !state.mailer().dev_outbox() {
        return Err(ApiError::NotFound);
    }
    let entries = state.store().recent_mail(SHOWN).await?;
    let mut items = String::new();
    for e in &entries {
        let Some(m) = state.mailer().open(e) else {
            continue;
        };
        let links: String = m
            .links
            .iter()
            .map(|l| format!("<li><a href=\"{0}\">{0}</a></li>", escape(l)))
            .collect();
        items.push_str(&format!(
            "<article class=\"card\" data-testid=\"mail\"><h2>{subject}</h2>\
             <p class=\"muted\">To <strong data-testid=\"mail-to\">{to}</strong> · {when} · {kind}</p>\
             <ul>{links}</ul><pre>{text}</pre></article>\n",
            subject = escape(&m.subject),
            to = escape(&m.to),
            when = escape(&rfc3339(e.created_at)),
            kind = escape(&e.kind),
            text = escape(&m.text),
        ));
    }
    if items.is_empty() {
        items.push_str("<p class=\"muted\">No mail yet. Sign up, or ask for a password reset.</p>");
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Development outbox · latchkey</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>\
         <body class=\"wide\"><main id=\"main\"><h1>Development outbox</h1>\
         <p>No <code>SMTP_URL</code> is set, so mail is kept here instead of being sent \
         (development only; this page answers 404 in production). Newest first.</p>\n{items}</main></body></html>"
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        html,
    )
        .into_response())
}
