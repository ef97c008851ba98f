//! A software WebAuthn authenticator for the tests: real ES256 (P-256) keys, real
//! authenticator data, CBOR attestation objects (`fmt: "none"`) and signatures, so the
//! server's webauthn-rs verifies them as it would a browser's — and so the hostile cases
//! (another origin, another relying party, a stale challenge, a counter that goes back, a
//! forged signature) are real responses with one thing wrong.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const ORIGIN: &str = "http://localhost:8080";
pub const RP_ID: &str = "localhost";

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;

pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

/// A minimal CBOR encoder: what attestation objects and COSE keys need.
pub enum Cbor {
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
    Map(Vec<(Cbor, Cbor)>),
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
}

impl Cbor {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Cbor::Int(i) if *i >= 0 => head(out, 0, *i as u64),
            Cbor::Int(i) => head(out, 1, (-1 - *i) as u64),
            Cbor::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend(b);
            }
            Cbor::Text(t) => {
                head(out, 3, t.len() as u64);
                out.extend(t.as_bytes());
            }
            Cbor::Map(kv) => {
                head(out, 5, kv.len() as u64);
                for (k, v) in kv {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// What one response says; each field can be set wrong on purpose.
#[derive(Clone)]
pub struct Claims {
    pub origin: String,
    pub rp_id: String,
    pub user_verified: bool,
    pub challenge: Option<Vec<u8>>,
    pub kind: Option<&'static str>,
}

impl Default for Claims {
    fn default() -> Self {
        Claims {
            origin: ORIGIN.to_owned(),
            rp_id: RP_ID.to_owned(),
            user_verified: true,
            challenge: None,
            kind: None,
        }
    }
}

/// One credential of the authenticator.
pub struct Credential {
    pub id: Vec<u8>,
    key: SigningKey,
    /// The user handle stored with it (the user id the server gave at registration).
    pub user_handle: Vec<u8>,
    /// The signature counter; `sign` increments it first (unless it is 0 and stays so, as
    /// for synced passkeys: see `counting`).
    pub counter: u32,
    pub counting: bool,
    pub backup_eligible: bool,
}

impl Credential {
    pub fn new() -> Self {
        let mut secret = [0u8; 32];
        let mut id = vec![0u8; 32];
        rand::fill(&mut secret);
        rand::fill(&mut id[..]);
        secret[0] &= 0x7f; // well below the group order
        Credential {
            id,
            key: SigningKey::from_slice(&secret).expect("a valid P-256 scalar"),
            user_handle: Vec::new(),
            counter: 0,
            counting: true,
            backup_eligible: false,
        }
    }

    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        Cbor::Map(vec![
            (Cbor::Int(1), Cbor::Int(2)),  // kty: EC2
            (Cbor::Int(3), Cbor::Int(-7)), // alg: ES256
            (Cbor::Int(-1), Cbor::Int(1)), // crv: P-256
            (Cbor::Int(-2), Cbor::Bytes(point.x().unwrap().to_vec())),
            (Cbor::Int(-3), Cbor::Bytes(point.y().unwrap().to_vec())),
        ])
        .to_vec()
    }

    fn flags(&self, c: &Claims) -> u8 {
        let mut f = UP;
        if c.user_verified {
            f |= UV;
        }
        if self.backup_eligible {
            f |= BE | BS;
        }
        f
    }

    /// The `PublicKeyCredential` JSON that `navigator.credentials.create()` would give for
    /// `options` (the server's `{publicKey: …}`), stored user handle included.
    pub fn register(&mut self, options: &Value, c: &Claims) -> Value {
        let pk = &options["publicKey"];
        self.user_handle = unb64(pk["user"]["id"].as_str().expect("user.id"));
        let challenge = c
            .challenge
            .clone()
            .unwrap_or_else(|| unb64(pk["challenge"].as_str().expect("challenge")));
        let client_data = client_data(c.kind.unwrap_or("webauthn.create"), &challenge, c);
        let mut auth_data = Sha256::digest(c.rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags(c) | AT);
        auth_data.extend(self.counter.to_be_bytes());
        auth_data.extend([0u8; 16]); // AAGUID: none
        auth_data.extend((self.id.len() as u16).to_be_bytes());
        auth_data.extend(&self.id);
        auth_data.extend(self.cose_key());
        let attestation = Cbor::Map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ])
        .to_vec();
        json!({
            "id": b64(&self.id),
            "rawId": b64(&self.id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
    }

    /// The `PublicKeyCredential` JSON that `navigator.credentials.get()` would give for
    /// `options`, signed.
    pub fn assert(&mut self, options: &Value, c: &Claims) -> Value {
        if self.counting {
            self.counter += 1;
        }
        let challenge = c.challenge.clone().unwrap_or_else(|| {
            unb64(
                options["publicKey"]["challenge"]
                    .as_str()
                    .expect("challenge"),
            )
        });
        let client_data = client_data(c.kind.unwrap_or("webauthn.get"), &challenge, c);
        let mut auth_data = Sha256::digest(c.rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags(c));
        auth_data.extend(self.counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client_data));
        let sig: Signature = self.key.sign(&signed);
        json!({
            "id": b64(&self.id),
            "rawId": b64(&self.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(sig.to_der().as_bytes()),
                "userHandle": b64(&self.user_handle),
            },
            "clientExtensionResults": {},
        })
    }
}

fn client_data(kind: &str, challenge: &[u8], c: &Claims) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": kind,
        "challenge": b64(challenge),
        "origin": c.origin,
        "crossOrigin": false,
    }))
    .unwrap()
}
