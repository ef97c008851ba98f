//! `domain::DisplayName::parse` and `DisplayName::from_provider`: name cleaning (SPEC 8).
//!
//! Input: the name, as text.
//! Properties: a kept name is trimmed, 1 to 100 characters, free of control, format (but
//! U+200C/U+200D) and separator characters, and parses again to itself; blank means no
//! name; a provider's name is cut and dropped, never refused, and equals the parsed name
//! whenever that one is kept.

use latchkey::domain::{DisplayName, InvalidName};

pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = DisplayName::parse(raw);
    match &parsed {
        Ok(Some(n)) => {
            let s = n.as_str();
            assert_eq!(s.trim(), s);
            assert!((1..=DisplayName::MAX_CHARS).contains(&s.chars().count()));
            assert!(
                !s.chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
            );
            assert_eq!(DisplayName::parse(s).as_ref(), Ok(&Some(n.clone())));
        }
        Ok(None) => assert!(raw.trim().is_empty(), "{raw:?}"),
        Err(InvalidName::TooLong) => {
            assert!(raw.trim().chars().count() > DisplayName::MAX_CHARS)
        }
        Err(InvalidName::ForbiddenCharacter) => {}
    }
    let from_provider = DisplayName::from_provider(Some(raw));
    if let Some(n) = &from_provider {
        assert_eq!(
            DisplayName::parse(n.as_str()).as_ref(),
            Ok(&Some(n.clone()))
        );
    }
    if let Ok(Some(n)) = parsed {
        assert_eq!(from_provider, Some(n));
    }
}
