//! `config::parse_duration`: ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL, SESSION_MAX_AGE,
//! REFRESH_REUSE_GRACE and the other duration settings.
//!
//! Input: the setting's value, as text.
//! Properties: an accepted duration is at most the documented cap (100 years, so that
//! adding it to a timestamp stays in range) whatever its unit; it survives being written
//! back in seconds (or milliseconds); surrounding spaces do not change it.

use std::time::Duration;

use latchkey::config::parse_duration;

/// The cap `parse_duration` documents: about 100 years.
const CAP: Duration = Duration::from_secs(3_153_600_000);
const _: () = assert!(CAP.as_secs() == latchkey::config::MAX_DURATION.as_secs());

pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = parse_duration(raw) else {
        return;
    };
    assert!(d <= CAP, "{raw:?} -> {d:?}, over the cap");
    // Later arithmetic on it: a millisecond timestamp plus it stays in range.
    assert!(
        latchkey::clock::now_ms()
            .checked_add(latchkey::clock::ms(d))
            .is_some()
    );
    let back = if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    };
    assert_eq!(parse_duration(&back), Ok(d), "{raw:?} -> {d:?}");
    assert_eq!(parse_duration(&format!(" {raw} ")), Ok(d));
}
