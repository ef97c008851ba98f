//! An open-loop refresh load for the scale benchmark (`bench/scale.py`, issue 14): requests
//! leave on a fixed schedule, `rate` per second, whatever the server's answers do, and each
//! request's latency is counted from the moment it was due — so a slow answer cannot lower
//! the offered rate or hide the queueing it causes (wrk's `delay()` is closed-loop: each
//! connection waits for its answer before pacing the next request).
//!
//! ```text
//! cargo run --release -p latchkey --example refresh_open_loop -- \
//!     --url http://127.0.0.1:8099 --tokens tokens.tsv --offset 4096 --sessions 8192 \
//!     --rate 1500 --seconds 10
//! ```
//!
//! `tokens.tsv` is what `scale_seed mint` writes (`email<TAB>access<TAB>refresh`). Each
//! request rotates the next session in turn (a session comes round every `sessions / rate`
//! seconds, under the per-session refresh limit) and keeps the session's new refresh token,
//! so every request is a real rotation. Prints one JSON object: offered and achieved rate,
//! p50/p90/p99/max latency in ms, the statuses seen, and how many requests found their
//! session still waiting for its previous answer (sent to the next free session instead).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

struct Session {
    busy: AtomicBool,
    token: Mutex<String>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(args: &[String], name: &str, default: f64) -> f64 {
    arg(args, name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
    })
}

fn refresh_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("refresh_token="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .filter(|v| !v.is_empty())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One thread: the generator shares the machine with the server it measures.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = format!(
        "{}/api/v1/auth/refresh",
        arg(&args, "--url").ok_or("--url is required")?
    );
    let file = arg(&args, "--tokens").ok_or("--tokens is required")?;
    let offset = num(&args, "--offset", 0.0) as usize;
    let count = num(&args, "--sessions", 8192.0) as usize;
    let rate = num(&args, "--rate", 1500.0);
    let seconds = num(&args, "--seconds", 10.0);

    let text = std::fs::read_to_string(&file)?;
    let sessions: Arc<Vec<Session>> = Arc::new(
        text.lines()
            .skip(offset)
            .take(count)
            .map(|line| Session {
                busy: AtomicBool::new(false),
                token: Mutex::new(line.rsplit('\t').next().unwrap_or("").to_owned()),
            })
            .collect(),
    );
    if sessions.is_empty() {
        return Err("no sessions in the tokens file at that offset".into());
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;

    let total = (rate * seconds).round() as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, u16)>();
    let mut displaced = 0usize;
    let mut next = 0usize;
    let start = Instant::now();
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        // The next session not waiting for an answer.
        let mut i = next % sessions.len();
        let mut tries = 0;
        while sessions[i].busy.swap(true, Ordering::AcqRel) {
            i = (i + 1) % sessions.len();
            tries += 1;
            if tries == sessions.len() {
                return Err("every session is waiting for an answer".into());
            }
        }
        if tries > 0 {
            displaced += 1;
        }
        next = i + 1;
        let (client, url, sessions, tx) =
            (client.clone(), url.clone(), sessions.clone(), tx.clone());
        tokio::spawn(async move {
            let s = &sessions[i];
            let mut token = s.token.lock().await;
            let status = match client
                .post(&url)
                .header(reqwest::header::COOKIE, format!("refresh_token={token}"))
                .send()
                .await
            {
                Ok(r) => {
                    if let Some(t) = refresh_cookie(r.headers()) {
                        *token = t;
                    }
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            drop(token);
            s.busy.store(false, Ordering::Release);
            let _ = tx.send((due.elapsed(), status));
        });
    }
    let sent_in = start.elapsed();
    drop(tx);
    let mut lat = Vec::with_capacity(total);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    while let Some((d, status)) = rx.recv().await {
        lat.push(d.as_secs_f64() * 1000.0);
        *statuses.entry(status).or_default() += 1;
    }
    let done_in = start.elapsed();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p / 100.0) as usize).min(lat.len() - 1)];
    let ok = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "offered_rps": rate,
            "sent_rps": (total as f64 / sent_in.as_secs_f64() * 10.0).round() / 10.0,
            "achieved_rps": (ok as f64 / done_in.as_secs_f64() * 10.0).round() / 10.0,
            "requests": total,
            "ok": ok,
            "errors": total - ok,
            "statuses": statuses,
            "displaced": displaced,
            "p50_ms": (pct(50.0) * 100.0).round() / 100.0,
            "p90_ms": (pct(90.0) * 100.0).round() / 100.0,
            "p99_ms": (pct(99.0) * 100.0).round() / 100.0,
            "max_ms": (pct(100.0) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
