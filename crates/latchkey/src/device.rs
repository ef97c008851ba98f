//! Device cookies (OWASP "device cookies", SPEC 8): the lockout-resistance rule.
//!
//! A successful password sign-in gives the browser a cookie naming the user and a random
//! device id, signed with a server secret (HMAC-SHA256). A later login for that user that
//! presents it is counted in the device's own failure budget, so failed attempts from
//! elsewhere can never lock out a browser that has signed in before. The cookie grants no
//! access by itself: it only chooses which rate-limit bucket a login attempt counts in.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use crate::domain::UserId;

const DEVICE_ID_BYTES: usize = 16;
/// Domain separation: this key signs nothing else, but the label keeps it that way.
const LABEL: &[u8] = b"latchkey/device-cookie/v1\0";

/// The server secret device cookies are signed with. No clear `Debug`.
pub struct DeviceKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey([redacted])")
    }
}

/// A device recognised from a valid cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub user: UserId,
    /// Random, base64url; the key of the device's failure budget.
    pub id: String,
}

impl DeviceKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(SecretBox::new(Box::new(arr))))
    }

    fn mac(&self, user: UserId, id: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(LABEL);
        mac.update(user.0.simple().to_string().as_bytes());
        mac.update(b".");
        mac.update(id.as_bytes());
        mac
    }

    /// A cookie value for `user`: the same device id when the browser already had one for
    /// this user, else a new one.
    pub fn issue(&self, user: UserId, existing: Option<&Device>) -> String {
        let id = match existing {
            Some(d) if d.user == user => d.id.clone(),
            _ => {
                let mut b = [0u8; DEVICE_ID_BYTES];
                rand::fill(&mut b);
                URL_SAFE_NO_PAD.encode(b)
            }
        };
        let tag = URL_SAFE_NO_PAD.encode(self.mac(user, &id).finalize().into_bytes());
        format!("{}.{id}.{tag}", user.0.simple())
    }

    /// The device a cookie value names, if its signature is valid (checked in constant
    /// time). Anything else — another shape, a bad signature — is no device.
    pub fn verify(&self, value: &str) -> Option<Device> {
        if value.len() > 128 {
            return None;
        }
        let mut parts = value.split('.');
        let (user, id, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || id.len() != 22 {
            return None;
        }
        // Only the form `issue` writes (32 lower-case hex digits): the MAC covers that form,
        // so the hyphenated, braced or upper-case spellings of the same id would verify too
        // (fuzzing, issue 11) — several cookie texts for one device.
        let parsed = uuid::Uuid::try_parse(user).ok()?;
        let mut simple = [0u8; uuid::fmt::Simple::LENGTH];
        if user.as_bytes() != parsed.simple().encode_lower(&mut simple).as_bytes() {
            return None;
        }
        let user = UserId(parsed);
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(user, id).verify_slice(&tag).ok()?;
        Some(Device {
            user,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_verify_only_untampered_and_under_their_key() {
        let k = DeviceKey::from_bytes(&[7; 32]).unwrap();
        let other = DeviceKey::from_bytes(&[8; 32]).unwrap();
        let user = UserId::new();
        let v = k.issue(user, None);
        let d = k.verify(&v).expect("valid");
        assert_eq!(d.user, user);
        assert!(other.verify(&v).is_none(), "another key");
        // Another user's id with this device's signature does not verify.
        let (_, rest) = v.split_once('.').unwrap();
        let forged = format!("{}.{rest}", UserId::new().0.simple());
        assert!(k.verify(&forged).is_none());
        for bad in ["", "a.b.c", "a.b", &format!("{v}.x"), &v[..v.len() - 1]] {
            assert!(k.verify(bad).is_none(), "{bad:?}");
        }
        // Fuzzing (issue 11, `device_cookie`): other spellings of the user id carried the
        // same MAC. Only the issued text verifies.
        let (simple, rest) = v.split_once('.').unwrap();
        for spelling in [
            user.0.hyphenated().to_string(),
            user.0.braced().to_string(),
            user.0.urn().to_string(),
            simple.to_ascii_uppercase(),
        ] {
            assert!(
                k.verify(&format!("{spelling}.{rest}")).is_none(),
                "{spelling}"
            );
        }
        let regression = include_str!("../../../fuzz/regressions/device_cookie/hyphenated-user");
        let fixed = DeviceKey::from_bytes(&[9; 32]).unwrap();
        assert!(fixed.verify(&regression[1..]).is_none());
        assert!(
            fixed
                .verify(&regression[1..].replacen('-', "", 4))
                .is_some(),
            "the issued spelling of the same cookie still verifies"
        );
        // Re-issuing for the same user keeps the device id; for another user, a new one.
        assert_eq!(k.verify(&k.issue(user, Some(&d))).unwrap().id, d.id);
        let u2 = UserId::new();
        assert_ne!(k.verify(&k.issue(u2, Some(&d))).unwrap().id, d.id);
        assert_eq!(format!("{k:?}"), "DeviceKey([redacted])");
    }
}
