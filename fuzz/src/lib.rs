//! The checks behind latchkey's fuzz targets (`fuzz_targets/*.rs` only call `run`).
//!
//! Each module takes the raw bytes libFuzzer hands over, feeds them to one parser of
//! untrusted input in `crates/latchkey` and asserts that parser's properties: never a panic,
//! and what each module's doc says. Input formats are plain text where possible, so the seed
//! corpora under `fuzz/corpus/<target>/` read as what they are (cookies, tokens, chains).

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub mod access_token_of;
pub mod access_token_verify;
pub mod client_ip;
pub mod cookie_header;
pub mod device_cookie;
pub mod display_name;
pub mod duration;
pub mod email_parse;
pub mod json_bodies;
pub mod next_rule;
pub mod oauth_state_cookie;
pub mod refresh_token_parse;

/// Request headers from text: one `Name: value` per line (`\n`); lines that are not a valid
/// header are skipped. Values are raw bytes, so non-ASCII and odd bytes reach the parsers.
pub fn headers(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    h
}

/// `base` after the edits `ops` describes, four bytes each: operation, position (two bytes,
/// scaled to the length) and a byte — replace, insert, delete, flip a bit, or truncate.
pub fn mutate(base: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for op in ops.chunks_exact(4) {
        let at = |len: usize| usize::from(u16::from_le_bytes([op[1], op[2]])) % (len + 1);
        match op[0] % 5 {
            0 if !out.is_empty() => {
                let i = at(out.len() - 1);
                out[i] = op[3];
            }
            1 => {
                let i = at(out.len());
                out.insert(i, op[3]);
            }
            2 if !out.is_empty() => {
                let i = at(out.len() - 1);
                out.remove(i);
            }
            3 if !out.is_empty() => {
                let i = at(out.len() - 1);
                out[i] ^= 1 << (op[3] % 8);
            }
            4 => {
                let i = at(out.len());
                out.truncate(i);
            }
            _ => {}
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Splits off the first line: `(line, rest)`.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    latchkey::clock::now_ms() / 1000
}
