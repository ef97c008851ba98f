//! The TOTP rule (RFC 6238; SPEC 11): HMAC-SHA-1, 6 digits, 30-second steps, one step of
//! skew either way. Codes are made by `totp-rs`; which step a code matches is decided here,
//! comparing against all three candidate steps in constant time (no early exit), and the
//! store accepts each step at most once, and only after the last accepted one
//! ([`crate::store::Store::use_totp_step`]).

use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use subtle::{Choice, ConstantTimeEq as _};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::error::ApiError;

/// Seconds per time step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of now.
pub const SKEW: i64 = 1;
/// Secret length: 160 bits, RFC 4226's recommendation for HMAC-SHA-1.
pub const SECRET_BYTES: usize = 20;

/// A TOTP secret in clear; only ever stored sealed. No `Debug`.
pub struct TotpSecret(SecretSlice<u8>);

impl TotpSecret {
    pub fn generate() -> Self {
        let mut b = vec![0u8; SECRET_BYTES];
        rand::fill(&mut b[..]);
        Self(SecretSlice::from(b))
    }

    pub fn from_bytes(bytes: SecretSlice<u8>) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    fn totp(&self, account: &str, issuer: &str) -> Totp {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS as u8)
            .with_skew(SKEW as u16)
            .with_step_duration(STEP_SECS as u64)
            .with_secret(Secret::from(self.bytes().to_vec()))
            // `:` separates issuer and account in the URI's label and is refused in either.
            .with_account_name(account.replace(':', ""))
            .with_issuer(Some(issuer.replace(':', "")))
            .build_noncompliant()
    }

    /// The secret as authenticator apps take it typed in: base32, no padding.
    pub fn base32(&self) -> SecretString {
        SecretString::from(self.totp("a", "b").secret().to_base32())
    }

    /// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER` (Key URI format).
    pub fn otpauth_uri(&self, account: &str, issuer: &str) -> Result<SecretString, ApiError> {
        self.totp(account, issuer)
            .to_url()
            .map(SecretString::from)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// The code of time step `step`.
    pub fn code_at_step(&self, step: i64) -> String {
        let t = self.totp("a", "b");
        t.generate(u64::try_from(step.max(0)).unwrap_or(0) * STEP_SECS as u64)
            .to_string()
    }

    /// The step within ±[`SKEW`] of `now_secs` whose code `code` is, if any. Every
    /// candidate is computed and compared in constant time.
    pub fn matching_step(&self, code: &Code, now_secs: i64) -> Option<i64> {
        let now_step = now_secs.div_euclid(STEP_SECS);
        let mut found = Choice::from(0);
        let mut step = 0i64;
        for s in (now_step - SKEW)..=(now_step + SKEW) {
            let hit = self.code_at_step(s).as_bytes().ct_eq(code.0.as_bytes());
            // The latest matching step wins (any one is fine: codes of different steps
            // differ except by chance, and a chance repeat is still a right code).
            step = i64::conditional_select(&step, &s, hit);
            found |= hit;
        }
        bool::from(found).then_some(step)
    }
}

use subtle::ConditionallySelectable as _;

/// A code as typed, normalised: spaces removed, exactly [`DIGITS`] ASCII digits.
pub struct Code(String);

impl Code {
    /// Parses a typed TOTP code: spaces (and tabs) anywhere are ignored; any other
    /// non-digit is 400 `invalid_request`; the wrong number of digits is 400 `invalid_code`.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let s: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(ApiError::InvalidRequest(
                "the code must be digits only".into(),
            ));
        }
        if s.len() != DIGITS {
            return Err(ApiError::InvalidCode);
        }
        Ok(Self(s))
    }
}

/// The time step of `now_secs`.
pub fn step_of(now_secs: i64) -> i64 {
    now_secs.div_euclid(STEP_SECS)
}

/// An SVG QR code of `text` (the otpauth URI): plain `<svg>` with `<rect>`/`<path>` only.
pub fn qr_svg(text: &str) -> Result<String, ApiError> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows, last 6 digits.
    #[test]
    fn matches_the_rfc_test_vectors() {
        let s = TotpSecret::from_bytes(SecretSlice::from(b"12345678901234567890".to_vec()));
        for (t, code) in [
            (59i64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(s.code_at_step(step_of(t)), code, "t={t}");
            let c = Code::parse(code).unwrap();
            assert_eq!(s.matching_step(&c, t), Some(step_of(t)));
            // ±1 step accepted, ±2 not.
            assert_eq!(s.matching_step(&c, t + STEP_SECS), Some(step_of(t)));
            assert_eq!(s.matching_step(&c, t - STEP_SECS), Some(step_of(t)));
            assert_eq!(s.matching_step(&c, t + 2 * STEP_SECS), None);
            assert_eq!(s.matching_step(&c, t - 2 * STEP_SECS), None);
        }
    }

    #[test]
    fn codes_are_normalised_and_checked() {
        assert_eq!(Code::parse(" 123 456 ").unwrap().0, "123456");
        assert!(matches!(
            Code::parse("12345a"),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            Code::parse("١٢٣٤٥٦"),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(Code::parse("12345"), Err(ApiError::InvalidCode)));
        assert!(matches!(Code::parse("1234567"), Err(ApiError::InvalidCode)));
    }

    #[test]
    fn uri_and_qr() {
        let s = TotpSecret::generate();
        let uri = s.otpauth_uri("ada@example.com", "localhost").unwrap();
        let uri = uri.expose_secret();
        assert!(
            uri.starts_with("otpauth://totp/localhost:ada%40example.com?secret="),
            "{uri}"
        );
        assert!(uri.contains(s.base32().expose_secret()));
        let svg = qr_svg(uri).unwrap();
        assert!(svg.contains("<svg") && !svg.contains("<script"));
    }
}
