//! `oidc::state_cookie::StateSealer::open`: the sealed OAuth state cookie.
//!
//! Input: the first byte picks a mode (its value modulo 3; `0`, `1`, `2` in the seeds):
//! - `0`: the rest is a cookie value, opened as is;
//! - `1`: the rest edits a value sealed by the key (see [`super::mutate`]), then opened;
//! - `2`: the rest is a pending sign-in, one field a line (`state`, `nonce`, PKCE verifier,
//!   `next`, lifetime in ms), sealed and opened again.
//!
//! Properties: what opens has not expired and seals and opens again to itself; an edited
//! value opens only if it is byte for byte the sealed one; a sealed attempt opens to itself
//! until its expiry and not from then on; a sealed value is a base64url cookie value.

use std::sync::LazyLock;

use latchkey::oidc::state_cookie::{PendingLogin, StateSealer};

const NOW_MS: i64 = 1_800_000_000_000;

static SEALER: LazyLock<StateSealer> =
    LazyLock::new(|| StateSealer::new(&[7; StateSealer::KEY_LEN]).expect("a key"));

static SEALED: LazyLock<(PendingLogin, String)> = LazyLock::new(|| {
    let p = PendingLogin {
        state: "Zk9vYmFyYmF6cXV4c3RhdGU".into(),
        nonce: "bm9uY2Vub25jZW5vbmNl".into(),
        pkce_verifier: "dmVyaWZpZXJ2ZXJpZmllcnZlcmlmaWVydmVyaWZpZXI".into(),
        next: "/account?tab=sessions".into(),
        expires_at: NOW_MS + 600_000,
    };
    let v = SEALER.seal(&p);
    (p, v)
});

fn check_opened(p: &PendingLogin) {
    assert!(NOW_MS < p.expires_at);
    let v = SEALER.seal(p);
    assert_eq!(SEALER.open(&v, NOW_MS).as_ref(), Some(p));
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(v) = std::str::from_utf8(rest) else {
                return;
            };
            if let Some(p) = SEALER.open(v, NOW_MS) {
                check_opened(&p);
            }
        }
        1 => {
            let (p, sealed) = &*SEALED;
            let edited = super::mutate(sealed.as_bytes(), rest);
            let Ok(v) = std::str::from_utf8(&edited) else {
                return;
            };
            if let Some(got) = SEALER.open(v, NOW_MS) {
                assert_eq!(v, sealed, "an edited value opened");
                assert_eq!(&got, p);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let mut f = text.split('\n');
            let mut next = || f.next().unwrap_or_default().to_owned();
            let (state, nonce, pkce_verifier, next_path) = (next(), next(), next(), next());
            let life: i64 = next().trim().parse().unwrap_or(600_000);
            let p = PendingLogin {
                state,
                nonce,
                pkce_verifier,
                next: next_path,
                expires_at: NOW_MS.saturating_add(life),
            };
            let v = SEALER.seal(&p);
            assert!(
                v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{v:?}"
            );
            if v.len() > 4096 {
                // Too long for a cookie: refused, whatever it holds.
                assert_eq!(SEALER.open(&v, NOW_MS), None);
                return;
            }
            let before = p.expires_at.saturating_sub(1);
            assert_eq!(SEALER.open(&v, before).as_ref(), Some(&p));
            assert_eq!(SEALER.open(&v, p.expires_at), None);
        }
    }
}
