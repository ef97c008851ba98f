//! `device::DeviceKey::verify`: the device cookie (SPEC 8's lockout resistance).
//!
//! Input: the first byte picks a mode (its value modulo 2; `0`, `1` in the seeds):
//! - `0`: the rest is a cookie value, verified as is;
//! - `1`: the rest edits a value the key issued (see [`super::mutate`]), then verified.
//!
//! Properties: a value that verifies is exactly the one the key issues for that user and
//! device (one text per device: nothing else verifies); an edited value verifies only if it
//! is byte for byte the issued one.

use std::sync::LazyLock;

use latchkey::device::{Device, DeviceKey};
use latchkey::domain::UserId;

static KEY: LazyLock<DeviceKey> = LazyLock::new(|| DeviceKey::from_bytes(&[9; 32]).expect("a key"));

static ISSUED: LazyLock<(Device, String)> = LazyLock::new(|| {
    let d = Device {
        user: UserId("0192f0c1-7c4e-7a51-9e0b-6b1f3b2a1c9d".parse().unwrap()),
        id: "q8mN2xPz7LwR4tVb1YcK0g".into(),
    };
    let v = KEY.issue(d.user, Some(&d));
    (d, v)
});

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (d, issued) = &*ISSUED;
    let edited;
    let v = if mode % 2 == 0 {
        rest
    } else {
        edited = super::mutate(issued.as_bytes(), rest);
        &edited
    };
    let Ok(v) = std::str::from_utf8(v) else {
        return;
    };
    if let Some(got) = KEY.verify(v) {
        assert_eq!(KEY.issue(got.user, Some(&got)), v, "not the issued text");
        if mode % 2 == 1 {
            assert_eq!(&got, d);
        }
    }
}
