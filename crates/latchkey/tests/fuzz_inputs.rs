//! The fuzz targets' checks on stable, in a normal `cargo test` (issue 11, item 1).
//!
//! `fuzz/` (cargo-fuzz, nightly, `scripts/fuzz.sh`) holds one target per parser of untrusted
//! input; its checks live in `fuzz/src/` and are compiled here too. This test replays every
//! committed input — the seeds (`fuzz/corpus/<target>/`) and the regression inputs of
//! fixed findings (`fuzz/regressions/<target>/`) — through them, then a few thousand
//! seeded mutations of the seeds per target: a crash found by fuzzing stays fixed without
//! nightly, and the checks keep compiling against the library.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

type Check = fn(&[u8]);

/// Every target of `fuzz/Cargo.toml`, with its check.
const TARGETS: &[(&str, Check)] = &[
    ("access_token_of", checks::access_token_of::run),
    ("access_token_verify", checks::access_token_verify::run),
    ("client_ip", checks::client_ip::run),
    ("cookie_header", checks::cookie_header::run),
    ("device_cookie", checks::device_cookie::run),
    ("display_name", checks::display_name::run),
    ("duration", checks::duration::run),
    ("email_parse", checks::email_parse::run),
    ("json_bodies", checks::json_bodies::run),
    ("next_rule", checks::next_rule::run),
    ("oauth_state_cookie", checks::oauth_state_cookie::run),
    ("refresh_token_parse", checks::refresh_token_parse::run),
];

/// Mutations per target, spread over its seeds (debug build: keep it to a second or two).
const MUTATIONS: usize = 3_000;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("readable");
            (p, data)
        })
        .collect()
}

/// Runs `check` on `data`; a panic is reported with the input, in hex and as text.
fn run(target: &str, what: &str, check: Check, data: &[u8]) -> Result<(), String> {
    std::panic::catch_unwind(|| check(data)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{target}: {what} failed: {msg}\n  input (hex): {hex}\n  input (text): {:?}",
            String::from_utf8_lossy(data)
        )
    })
}

#[test]
fn every_fuzz_target_is_checked_here() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "latchkey-fuzz")
        .collect();
    let mut here: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let mut there = bins.clone();
    here.sort();
    there.sort();
    assert_eq!(here, there, "fuzz/Cargo.toml and this list differ");
    for t in &there {
        assert!(
            !inputs(&fuzz_dir().join("corpus").join(t)).is_empty(),
            "fuzz/corpus/{t}/ has no seeds"
        );
    }
}

#[test]
fn committed_fuzz_inputs_and_their_mutations_pass_the_checks() {
    let mut failures = Vec::new();
    let mut rng: u64 = 0x5eed_1a7c_4b3f_9d21;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (target, check) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(target));
        let regressions = inputs(&fuzz_dir().join("regressions").join(target));
        for (path, data) in seeds.iter().chain(&regressions) {
            let what = path
                .strip_prefix(fuzz_dir())
                .unwrap_or(path)
                .display()
                .to_string();
            failures.extend(run(target, &what, *check, data).err());
        }
        for i in 0..MUTATIONS {
            let (path, seed) = &seeds[i % seeds.len()];
            // Keep the seed's first byte (some targets read it as a mode), edit the rest.
            let ops: Vec<u8> = (0..4 * (1 + next() % 4)).map(|_| next() as u8).collect();
            let mut data = seed[..1.min(seed.len())].to_vec();
            data.extend(checks::mutate(&seed[1.min(seed.len())..], &ops));
            let what = format!("mutation {i} of {}", path.display());
            failures.extend(run(target, &what, *check, &data).err());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
