//! Argon2id hashing on a bounded blocking pool (SPEC 8).
//!
//! Hashes run on a fixed pool of threads, one per core, so a login flood queues here instead
//! of occupying the runtime's threads or tokio's blocking pool. An unknown email is verified against a dummy hash so both paths cost the same.
//!
//! Each hashing thread keeps one Argon2 memory buffer (19 MiB at production parameters)
//! instead of allocating and freeing it per hash: with glibc's malloc, a fresh 19 MiB
//! `calloc` per login left hundreds of MiB resident under load and cost page faults.

use std::cell::RefCell;
use std::sync::Arc;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

use crate::config::PasswordParams;
use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2 parameters rejected: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("hashing task failed")]
    Join,
}

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    params: Params,
    /// Jobs for the hashing threads; they exit when the hasher is dropped.
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
    dummy_hash: String,
}

thread_local! {
    /// This thread's Argon2 working memory, grown once and reused.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs Argon2id into `out` with this thread's reusable memory.
fn argon2id_into(
    params: &Params,
    version: Version,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    let argon = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let n = params.block_count();
    BLOCKS.with(|b| {
        let mut blocks = b.borrow_mut();
        if blocks.len() < n {
            blocks.resize(n, Block::default());
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..n])
            .map_err(|e| HashError::Hash(e.to_string()))
    })
}

/// A new PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for `password`.
fn hash_phc(params: &Params, password: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let mut out = [0u8; 32];
    argon2id_into(params, Version::V0x13, password, &salt, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| HashError::Hash(e.to_string()))?,
        salt: Some(Salt::new(&salt).map_err(|e| HashError::Hash(e.to_string()))?),
        hash: Some(Output::new(&out).map_err(|e| HashError::Hash(e.to_string()))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string; anything that is not an Argon2id PHC string
/// matches nothing.
fn verify_phc(phc: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut out = vec![0u8; expected.len()];
    if argon2id_into(&params, version, password, salt.as_ref(), &mut out).is_err() {
        return false;
    }
    out.ct_eq(expected.as_bytes()).into()
}

impl PasswordHasher {
    /// Builds the hasher; `concurrency` is the number of hashes that may run at once
    /// (normally the core count).
    pub fn new(p: PasswordParams, concurrency: usize) -> Result<Self, HashError> {
        let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        // On a short-lived thread, so its Argon2 memory does not stay resident in the caller's.
        let dummy_hash = std::thread::scope(|s| {
            s.spawn(|| hash_phc(&params, b"latchkey dummy password for unknown users"))
                .join()
        })
        .map_err(|_| HashError::Join)??;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..concurrency.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("latchkey-argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the hasher was dropped
                        }
                    }
                })
                .map_err(|e| HashError::Hash(e.to_string()))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                jobs: std::sync::Mutex::new(tx),
                dummy_hash,
            }),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        let params = self.inner.params.clone();
        self.run(move || hash_phc(&params, password.expose().as_bytes()))
            .await?
    }

    /// Verifies `password` against `stored` (a PHC string). With `None` — unknown user,
    /// or an account without a password — a dummy hash is verified instead and the answer
    /// is `false`, so the time taken does not reveal which case it was.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let real = stored.is_some();
        let hash = stored.unwrap_or(&self.inner.dummy_hash).to_owned();
        let password = secrecy::SecretString::from(password.to_owned());
        let ok = self
            .run(move || {
                use secrecy::ExposeSecret;
                verify_phc(&hash, password.expose_secret().as_bytes())
            })
            .await?;
        Ok(real && ok)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.inner
            .jobs
            .lock()
            .map_err(|_| HashError::Join)?
            .send(job)
            .map_err(|_| HashError::Join)?;
        rx.await.map_err(|_| HashError::Join)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(
            PasswordParams {
                m_cost_kib: 64,
                t_cost: 1,
                p_cost: 1,
            },
            2,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = cheap();
        let phc = h
            .hash(Password::parse("correct horse".into()).unwrap())
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(h.verify("correct horse", Some(&phc)).await.unwrap());
        assert!(!h.verify("wrong horse!", Some(&phc)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies_even_with_the_dummy_password() {
        let h = cheap();
        assert!(
            !h.verify("latchkey dummy password for unknown users", None)
                .await
                .unwrap()
        );
        assert!(!h.verify("x", Some("not a phc string")).await.unwrap());
        let argon2i = "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(
            !h.verify("password", Some(argon2i)).await.unwrap(),
            "only Argon2id is accepted"
        );
    }

    #[test]
    fn phc_strings_interoperate_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(64, 1, 1, None).unwrap();
        // Ours verifies with the crate's verifier…
        let ours = hash_phc(&params, b"hunter2hunter2").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"hunter2hunter2", &parsed)
                .is_ok()
        );
        // …and the crate's verifies with ours, with reused memory across sizes.
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(128, 2, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(verify_phc(&theirs, b"pw"));
        assert!(!verify_phc(&theirs, b"pW"));
        assert!(verify_phc(&ours, b"hunter2hunter2"));
    }

    #[test]
    fn production_parameters_follow_the_spec() {
        let p = PasswordParams::default();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (19_456, 2, 1));
    }
}
