//! How a session's user authenticated: RFC 8176 Authentication Method Reference values.
//!
//! | sign-in | `amr` |
//! |---|---|
//! | password (login, signup, password reset) | `pwd` |
//! | password, then a TOTP code | `pwd otp mfa` |
//! | password, then a recovery code (a one-time password printed at enrolment) | `pwd otp mfa` |
//! | Google or another OpenID provider | `fed` |
//! | passkey (see the passkeys module) | what it sets, e.g. `hwk`/`swk` and `mfa` |
//!
//! Stored on the session (space-separated), copied into every access token of the session,
//! kept across refresh. Reauthentication adds the method it used (the set only grows, see
//! [`Amr::union`]); `mfa` comes only from a sign-in that used two factors.

use std::ops::BitOr;

/// A set of RFC 8176 values. Cheap to copy; the empty set means "unknown" (sessions from
/// before the claim existed) and is left out of tokens.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Amr(u8);

/// The values in claim order, with their bits.
const NAMES: [(u8, &str); 6] = [
    (1, "pwd"),
    (2, "otp"),
    (4, "hwk"),
    (8, "swk"),
    (16, "fed"),
    (32, "mfa"),
];

impl Amr {
    /// Unknown (nothing recorded).
    pub const NONE: Amr = Amr(0);
    /// Password.
    pub const PWD: Amr = Amr(1);
    /// One-time password: a TOTP code or a recovery code.
    pub const OTP: Amr = Amr(2);
    /// Proof of possession of a hardware-secured key.
    pub const HWK: Amr = Amr(4);
    /// Proof of possession of a software-secured key.
    pub const SWK: Amr = Amr(8);
    /// Federated: an OpenID provider authenticated the user.
    pub const FED: Amr = Amr(16);
    /// Multiple-factor authentication.
    pub const MFA: Amr = Amr(32);

    /// A password sign-in followed by a TOTP or recovery code.
    pub const PWD_OTP_MFA: Amr = Amr(1 | 2 | 32);

    /// Both sets.
    pub const fn union(self, other: Amr) -> Amr {
        Amr(self.0 | other.0)
    }

    /// Whether every value of `other` is in this set.
    pub const fn contains(self, other: Amr) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the sign-in used more than one factor (`mfa`).
    pub const fn is_mfa(self) -> bool {
        self.contains(Amr::MFA)
    }

    /// The RFC 8176 names, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    /// The `amr` claim.
    pub fn to_claim(self) -> Vec<String> {
        self.names().into_iter().map(str::to_owned).collect()
    }

    /// From names (a claim's values or the stored text); unknown names are ignored.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Amr {
        names.into_iter().fold(Amr::NONE, |acc, n| {
            NAMES
                .iter()
                .find(|(_, name)| *name == n)
                .map_or(acc, |(bit, _)| Amr(acc.0 | bit))
        })
    }

    /// As the store keeps it: space-separated names.
    pub fn to_text(self) -> String {
        self.names().join(" ")
    }

    /// What [`Amr::to_text`] wrote.
    pub fn parse(text: &str) -> Amr {
        Amr::from_names(text.split_ascii_whitespace())
    }
}

impl BitOr for Amr {
    type Output = Amr;
    fn bitor(self, rhs: Amr) -> Amr {
        self.union(rhs)
    }
}

impl std::fmt::Debug for Amr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Amr({:?})", self.names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_claims() {
        let a = Amr::PWD | Amr::OTP | Amr::MFA;
        assert_eq!(a, Amr::PWD_OTP_MFA);
        assert_eq!(a.to_text(), "pwd otp mfa");
        assert_eq!(Amr::parse(&a.to_text()), a);
        assert_eq!(a.to_claim(), vec!["pwd", "otp", "mfa"]);
        assert_eq!(Amr::from_names(["fed", "nonsense"]), Amr::FED);
        assert!(Amr::parse("").is_empty());
        assert!(a.is_mfa() && !Amr::PWD.is_mfa());
        assert!(a.contains(Amr::OTP) && !a.contains(Amr::FED));
    }
}
