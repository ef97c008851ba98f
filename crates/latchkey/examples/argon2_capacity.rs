//! The machine's raw Argon2id capacity at latchkey's production parameters (m=19456 KiB,
//! t=2, p=1), on every core at once, memory allocated once per thread and nothing else
//! running: the physical limit for logins/s. Used by `bench/run.sh`. Prints one JSON line.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let p = latchkey::config::PasswordParams::default();
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, None).expect("valid params");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..cores)
        .map(|_| {
            let params = params.clone();
            std::thread::spawn(move || {
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                let mut memory = vec![Block::default(); params.block_count()];
                let mut out = [0u8; 32];
                let mut n = 0u64;
                while Instant::now() < deadline {
                    argon
                        .hash_password_into_with_memory(
                            b"correct horse battery",
                            b"sixteen byte salt",
                            &mut out,
                            &mut memory,
                        )
                        .expect("argon2");
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
