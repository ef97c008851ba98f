//! Types that carry their checks: an [`Email`] or [`Password`] exists only once parsed.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// A canonical email address: trimmed, Unicode NFC, lower-cased, at most 254 characters
/// (SPEC 6). The same canonicalisation runs at signup, login and Google linking.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why an email was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address")]
pub struct InvalidEmail;

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        // NFC again after lower-casing: lower-casing can undo NFC (`İ` becomes `i` + U+0307,
        // which must then be reordered with a following mark), and a canonical address must
        // be its own canonical form (fuzzing, issue 11).
        let canonical: String = raw
            .trim()
            .nfc()
            .collect::<String>()
            .to_lowercase()
            .nfc()
            .collect();
        if canonical.chars().count() > 254 || canonical.is_empty() {
            return Err(InvalidEmail);
        }
        let (local, domain) = canonical.rsplit_once('@').ok_or(InvalidEmail)?;
        let bad = |c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',' | ';' | '\\')
        };
        if local.is_empty()
            || local.chars().count() > 64
            || domain.is_empty()
            || domain.contains('@')
            || local.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || canonical.chars().any(bad)
        {
            return Err(InvalidEmail);
        }
        // Only what the mail worker can address, as it will (SPEC 10): an account at an
        // address no mail reaches (`a..b@`, `(comment)x@`, `x@-host`) could never verify it
        // nor reset its password.
        match canonical.parse::<lettre::message::Mailbox>() {
            Ok(m) if m.name.is_none() && m.email.as_ref() == canonical => Ok(Self(canonical)),
            _ => Err(InvalidEmail),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an email read back from the store, which only ever holds canonical ones.
    pub(crate) fn from_store(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password within NIST SP 800-63B bounds: 8 to 256 characters. Never printed.
pub struct Password(SecretString);

/// Why a password was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("password must be at least 8 characters")]
    TooShort,
    #[error("password must be at most 256 characters")]
    TooLong,
}

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 256;

    pub fn parse(raw: String) -> Result<Self, WeakPassword> {
        let n = raw.chars().count();
        if n < Self::MIN_CHARS {
            Err(WeakPassword::TooShort)
        } else if n > Self::MAX_CHARS {
            Err(WeakPassword::TooLong)
        } else {
            Ok(Self(SecretString::from(raw)))
        }
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A display name: trimmed, at most [`DisplayName::MAX_CHARS`] characters, with no control
/// characters (Unicode Cc), no format characters (Cf: bidi overrides and isolates, zero-width
/// space, soft hyphen, tag characters…) except U+200C and U+200D, which emoji sequences and
/// several scripts need, and no line or paragraph separators (SPEC 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("name must be at most 100 characters")]
    TooLong,
    #[error("name must not contain control, format or separator characters")]
    ForbiddenCharacter,
}

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    /// `Ok(None)` for an absent or blank name.
    pub fn parse(raw: &str) -> Result<Option<Self>, InvalidName> {
        let n = raw.trim();
        if n.is_empty() {
            return Ok(None);
        }
        if n.chars().count() > Self::MAX_CHARS {
            return Err(InvalidName::TooLong);
        }
        if n.chars().any(Self::forbidden) {
            return Err(InvalidName::ForbiddenCharacter);
        }
        Ok(Some(Self(n.to_owned())))
    }

    /// A character no name may hold (once trimmed).
    fn forbidden(c: char) -> bool {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        match c.general_category() {
            GeneralCategory::Control
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator => true,
            GeneralCategory::Format => !matches!(c, '\u{200C}' | '\u{200D}'),
            _ => false,
        }
    }

    /// The JSON Schema pattern (ECMA-262, Unicode mode) that a string matches exactly when
    /// [`DisplayName::parse`] accepts it: optional white space (what `trim` removes), at most
    /// [`DisplayName::MAX_CHARS`] characters that are not [forbidden](Self::forbidden), optional
    /// white space. Built from the same predicates, so the OpenAPI document cannot drift from
    /// the code; BMP characters are written `\uXXXX`, the few others literally.
    pub fn json_schema_pattern() -> &'static str {
        static PATTERN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        PATTERN.get_or_init(|| {
            let space = char_class(char::is_whitespace);
            let forbidden = char_class(Self::forbidden);
            format!(
                "^[{space}]*[^{forbidden}]{{0,{}}}[{space}]*$",
                Self::MAX_CHARS
            )
        })
    }

    /// A name an identity provider supplied: cut to the length limit, and dropped rather
    /// than refused when it holds a forbidden character (sign-in must not fail over it).
    pub fn from_provider(raw: Option<&str>) -> Option<Self> {
        let cut: String = raw?.trim().chars().take(Self::MAX_CHARS).collect();
        Self::parse(&cut).ok().flatten()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The members of a regular-expression character class (without the brackets) that holds
/// exactly the characters `member` accepts, as ranges.
fn char_class(member: impl Fn(char) -> bool) -> String {
    fn one(out: &mut String, c: char) {
        if u32::from(c) <= 0xFFFF {
            out.push_str(&format!("\\u{:04X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    fn range(out: &mut String, (lo, hi): (char, char)) {
        one(out, lo);
        if hi != lo {
            out.push('-');
            one(out, hi);
        }
    }
    let mut out = String::new();
    let mut run: Option<(char, char)> = None;
    for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
        if !member(c) {
            continue;
        }
        run = match run {
            Some((lo, hi)) if u32::from(hi) + 1 == u32::from(c) => Some((lo, c)),
            Some(r) => {
                range(&mut out, r);
                Some((c, c))
            }
            None => Some((c, c)),
        };
    }
    if let Some(r) = run {
        range(&mut out, r);
    }
    out
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A user's id (the access token's `sub`).
    UserId
);
id_type!(
    /// A session's id (the access token's `sid`): one family of refresh tokens.
    SessionId
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 (schemathesis): the OpenAPI pattern of a name agrees with
    /// [`DisplayName::parse`] on every character, inside a name and at its ends (where white
    /// space is trimmed), and on the length bound.
    #[test]
    fn name_pattern_accepts_exactly_what_parse_accepts() {
        let pattern = regex::Regex::new(DisplayName::json_schema_pattern()).unwrap();
        let agree = |s: &str| {
            assert_eq!(
                pattern.is_match(s),
                DisplayName::parse(s).is_ok(),
                "{s:?} (pattern vs parse)"
            );
        };
        // Every BMP character; above it, every forbidden one, its neighbours, and a sample
        // (a full sweep takes 10 s in a debug build).
        let near_forbidden = |x: u32| {
            (x.saturating_sub(1)..=x + 1)
                .filter_map(char::from_u32)
                .any(DisplayName::forbidden)
        };
        let chars = (0..=u32::from(char::MAX))
            .filter(|&x| x <= 0xFFFF || x % 257 == 0 || near_forbidden(x))
            .filter_map(char::from_u32);
        for c in chars {
            agree(&format!("a{c}b"));
            agree(&format!("{c}ab"));
            agree(&format!("ab{c}"));
        }
        for s in ["", " ", "\t\n", "Ada", " Ada\u{3000}"] {
            agree(s);
        }
        let hundred = "x".repeat(DisplayName::MAX_CHARS);
        agree(&hundred);
        agree(&format!("{hundred}x"));
        agree(&format!("  {hundred}\t"));
        agree(&format!("  {hundred}y\t"));
        agree(&"é".repeat(DisplayName::MAX_CHARS));
        agree(&"😀".repeat(DisplayName::MAX_CHARS + 1));
    }

    /// Finding 10 (issue 9): names refuse bidi controls, isolates and invisible characters,
    /// but keep the joiners that emoji and scripts need.
    #[test]
    fn finding_10_names_refuse_format_characters_except_joiners() {
        for bad in [
            "evil\u{202E}gnp.exe",
            "a\u{2066}b\u{2069}",
            "zero\u{200B}width",
            "soft\u{00AD}hyphen",
            "bom\u{FEFF}",
            "word\u{2060}joiner",
            "arabic\u{061C}mark",
            "tag\u{E0041}",
            "line\u{2028}break",
            "bell\u{0007}",
            "new\nline",
            "del\u{007F}",
            "c1\u{0085}x",
        ] {
            assert_eq!(
                DisplayName::parse(bad),
                Err(InvalidName::ForbiddenCharacter),
                "{bad:?}"
            );
        }
        for ok in [
            "Ada Lovelace",
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}",
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
            "Zoë Ōtake",
            "\u{4E2D}\u{6587}",
        ] {
            assert_eq!(
                DisplayName::parse(ok).unwrap().unwrap().as_str(),
                ok,
                "{ok:?}"
            );
        }
        assert_eq!(DisplayName::parse("   "), Ok(None));
        assert_eq!(
            DisplayName::parse(&"x".repeat(101)),
            Err(InvalidName::TooLong)
        );
        assert_eq!(
            DisplayName::from_provider(Some(&"x".repeat(300)))
                .unwrap()
                .as_str()
                .len(),
            100
        );
        assert_eq!(DisplayName::from_provider(Some("a\u{202E}b")), None);
    }

    #[test]
    fn emails_are_trimmed_normalised_and_lowercased() {
        let e = Email::parse("  Ada@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "ada@example.com");
        // "é" as e + combining acute (NFD) and as one code point (NFC) are one address.
        let nfd = Email::parse("Re\u{0301}my@example.com").unwrap();
        let nfc = Email::parse("r\u{00e9}my@example.com").unwrap();
        assert_eq!(nfd, nfc);
    }

    /// Fuzzing (issue 11, `email_parse`): lower-casing after NFC could leave a string that is
    /// not NFC, so the canonical address of `İ` + U+0655 did not parse to itself (its owner
    /// could not sign in with the address the account shows). The input is
    /// `fuzz/regressions/email_parse/`.
    #[test]
    fn fuzz_canonical_emails_parse_to_themselves() {
        let regression = include_str!("../../../fuzz/regressions/email_parse/lowercase-undoes-nfc");
        for raw in [
            regression,
            "\u{130}\u{655}@example.com",
            "\u{130}STANBUL@example.com",
        ] {
            let e = Email::parse(raw).unwrap();
            assert_eq!(Email::parse(e.as_str()).as_ref(), Ok(&e), "{raw:?}");
        }
        assert_eq!(
            Email::parse("\u{130}\u{655}@example.com").unwrap().as_str(),
            "i\u{655}\u{307}@example.com"
        );
    }

    #[test]
    fn unusual_addresses_mail_can_reach_are_kept() {
        for ok in [
            "o'brien+tag@example.com",
            "j\u{fc}rgen@example.com",
            "x@b\u{fc}cher.example",
            "a/b=c?d{e}|~!#$%&*@example.com",
        ] {
            assert_eq!(Email::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa mple.com",
            "a@@example.com",
            "a@.example.com",
            // Nothing mail can be sent to (the mail worker's parser refuses them).
            "a..b@example.com",
            ".a@example.com",
            "a(comment)@example.com",
            "a@example.com(comment)",
            "a:b@example.com",
            "a@-example.com",
            &long,
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_bounds_follow_nist() {
        assert_eq!(
            Password::parse("1234567".into()).unwrap_err(),
            WeakPassword::TooShort
        );
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("é".repeat(256)).is_ok());
        assert_eq!(
            Password::parse("x".repeat(257)).unwrap_err(),
            WeakPassword::TooLong
        );
        assert_eq!(
            format!("{:?}", Password::parse("hunter2hunter2".into()).unwrap()),
            "Password([redacted])"
        );
    }
}
