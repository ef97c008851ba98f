//! The machine's raw Argon2id verification capacity at latchkey's production parameters
//! (m=19456 KiB, t=2, p=1), on every core at once: the physical limit for logins/s.
//! Used by `bench/run.sh`. Prints one JSON line.

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash};
use argon2::{Algorithm, Argon2, Params, Version};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let p = latchkey::config::PasswordParams::default();
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, None).expect("valid params");
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let hash = argon
        .hash_password(b"correct horse battery")
        .expect("hash")
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..cores)
        .map(|_| {
            let hash = hash.clone();
            std::thread::spawn(move || {
                let parsed = PasswordHash::new(&hash).expect("phc");
                let mut n = 0u64;
                while Instant::now() < deadline {
                    assert!(
                        Argon2::default()
                            .verify_password(b"correct horse battery", &parsed)
                            .is_ok()
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{{\"cores\": {cores}, \"verifies\": {total}, \"seconds\": {elapsed:.3}, \"verifies_per_sec\": {:.1}}}",
        total as f64 / elapsed
    );
}
