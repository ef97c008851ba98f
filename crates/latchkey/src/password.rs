//! Argon2id hashing on a bounded blocking pool (SPEC 8).
//!
//! Hashes run on a fixed pool of threads, one per core, so a login flood queues here instead
//! of occupying the runtime's threads or tokio's blocking pool. An unknown email is verified
//! against a dummy hash so both paths cost the same.
//!
//! The queue in front of the threads is bounded: when it is full a request fails at once with
//! [`HashError::Overloaded`] (503 `overloaded`) rather than waiting behind a flood, and a job
//! whose caller has gone away (the HTTP client disconnected, so its future was dropped) is
//! skipped when its turn comes instead of burning a core for nobody.
//!
//! Each hashing thread keeps one Argon2 memory buffer (19 MiB at production parameters)
//! while the pool is busy instead of allocating and freeing it per hash: with glibc's malloc,
//! a fresh 19 MiB `calloc` per login left hundreds of MiB resident under load and cost page
//! faults. After [`IDLE_RELEASE`] without work a thread unmaps its buffer (it is mapped
//! directly, not taken from malloc, so the memory really goes back to the kernel), and an
//! idle server returns to its start-up footprint.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

use crate::config::PasswordParams;
use crate::domain::Password;

/// Jobs that may wait per hashing thread by default: at production parameters (≈ 30–60 ms
/// a hash) a full queue drains in about half a second to a second, longer than a login
/// should wait anyway.
pub const DEFAULT_QUEUE_PER_THREAD: usize = 16;

/// How long a hashing thread keeps its Argon2 memory after its last job.
pub const IDLE_RELEASE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2 parameters rejected: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("hashing task failed")]
    Join,
    /// The hashing queue is full; the caller should answer 503 and have the client retry.
    #[error("the password-hashing queue is full")]
    Overloaded,
}

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    params: Params,
    pool: Arc<Pool>,
    /// Jobs admitted at most: running plus waiting.
    limit: usize,
    dummy_hash: String,
}

/// The queue shared by the hashing threads.
struct Pool {
    state: Mutex<Queue>,
    work: Condvar,
}

struct Queue {
    jobs: VecDeque<Job>,
    running: usize,
    /// Set when the hasher is dropped: the threads finish the queue and exit.
    closed: bool,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Jobs never run under the lock, so a poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pool.lock().closed = true;
        self.pool.work.notify_all();
    }
}

/// One hashing thread: runs jobs, and frees its Argon2 memory once idle for `idle_release`.
fn worker(pool: Arc<Pool>, idle_release: Duration) {
    let mut holds_memory = false;
    let mut q = pool.lock();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            q.running += 1;
            metrics::gauge!("latchkey_password_queue_depth").set(q.jobs.len() as f64);
            drop(q);
            // A panic inside Argon2 drops the job's sender (the caller sees `Join`) and must
            // not take the thread, or the running count, with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            holds_memory = true;
            q = pool.lock();
            q.running -= 1;
            continue;
        }
        if q.closed {
            return;
        }
        if holds_memory {
            let (guard, wait) = pool
                .work
                .wait_timeout(q, idle_release)
                .unwrap_or_else(PoisonError::into_inner);
            q = guard;
            if wait.timed_out() && q.jobs.is_empty() {
                drop(q);
                release_memory();
                holds_memory = false;
                q = pool.lock();
            }
        } else {
            q = pool.work.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Frees this thread's Argon2 memory.
fn release_memory() {
    BLOCKS.with(|b| *b.borrow_mut() = None);
}

thread_local! {
    /// This thread's Argon2 working memory, grown once and reused while the pool is busy.
    static BLOCKS: RefCell<Option<Memory>> = const { RefCell::new(None) };
}

/// Argon2 working memory mapped straight from the kernel, so that dropping it gives it back.
/// A heap allocation of this size is not enough: once glibc has freed one mmapped chunk it
/// raises its mmap threshold to that size, the next buffer comes from a malloc arena, and
/// freeing it leaves it resident (measured: 33 MiB instead of 13 MiB after a login flood).
#[cfg(unix)]
struct Memory {
    blocks: std::ptr::NonNull<Block>,
    len: usize,
}

#[cfg(unix)]
impl Memory {
    fn new(len: usize) -> Result<Self, HashError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<Block>())
            .ok_or_else(|| HashError::Hash("argon2 memory size overflows".into()))?;
        // SAFETY: a fresh private anonymous mapping; it aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(p.cast::<Block>()) {
            Some(blocks) if p != libc::MAP_FAILED => Ok(Self { blocks, len }),
            _ => Err(HashError::Hash(std::io::Error::last_os_error().to_string())),
        }
    }

    fn blocks(&mut self) -> &mut [Block] {
        // SAFETY: the mapping holds `len` blocks, page-aligned (more than `Block`'s 64) and
        // zero-filled by the kernel — a valid `Block` is any 1 KiB of u64s — and only this
        // value reaches it, borrowed mutably here, until `drop` unmaps it.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_ptr(), self.len) }
    }
}

#[cfg(unix)]
impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, no longer borrowed.
        unsafe {
            libc::munmap(
                self.blocks.as_ptr().cast(),
                self.len * std::mem::size_of::<Block>(),
            );
        }
    }
}

/// Elsewhere a plain heap buffer.
#[cfg(not(unix))]
struct Memory(Vec<Block>);

#[cfg(not(unix))]
impl Memory {
    fn new(len: usize) -> Result<Self, HashError> {
        Ok(Self(vec![Block::default(); len]))
    }

    fn blocks(&mut self) -> &mut [Block] {
        &mut self.0
    }
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
        let mut held = b.borrow_mut();
        if held.as_mut().is_none_or(|m| m.blocks().len() < n) {
            *held = None; // unmap the smaller buffer before mapping the larger one
            *held = Some(Memory::new(n)?);
        }
        let blocks = match held.as_mut() {
            Some(m) => &mut m.blocks()[..n],
            None => return Err(HashError::Hash("argon2 memory missing".into())),
        };
        argon
            .hash_password_into_with_memory(password, salt, out, blocks)
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
    /// Builds the hasher with the default queue; `concurrency` is the number of hashes that
    /// may run at once (normally the core count).
    pub fn new(p: PasswordParams, concurrency: usize) -> Result<Self, HashError> {
        Self::with_queue(p, concurrency, None)
    }

    /// Builds the hasher with `concurrency` hashing threads and room for `queue` waiting
    /// jobs (`None`: [`DEFAULT_QUEUE_PER_THREAD`] per thread; at least one).
    pub fn with_queue(
        p: PasswordParams,
        concurrency: usize,
        queue: Option<usize>,
    ) -> Result<Self, HashError> {
        Self::start(p, concurrency, queue, IDLE_RELEASE)
    }

    fn start(
        p: PasswordParams,
        concurrency: usize,
        queue: Option<usize>,
        idle_release: Duration,
    ) -> Result<Self, HashError> {
        let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        // On a short-lived thread, so its Argon2 memory does not stay resident in the caller's.
        let dummy_hash = std::thread::scope(|s| {
            s.spawn(|| hash_phc(&params, b"latchkey dummy password for unknown users"))
                .join()
        })
        .map_err(|_| HashError::Join)??;
        let threads = concurrency.max(1);
        let queue = queue.unwrap_or(threads * DEFAULT_QUEUE_PER_THREAD).max(1);
        let pool = Arc::new(Pool {
            state: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: 0,
                closed: false,
            }),
            work: Condvar::new(),
        });
        for i in 0..threads {
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("latchkey-argon2-{i}"))
                .spawn(move || worker(pool, idle_release))
                .map_err(|e| HashError::Hash(e.to_string()))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                pool,
                limit: threads + queue,
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

    /// Jobs admitted and not finished: running plus waiting. Zero when the pool is idle.
    pub fn in_flight(&self) -> usize {
        let q = self.inner.pool.lock();
        q.running + q.jobs.len()
    }

    /// Jobs waiting for a hashing thread.
    pub fn queued(&self) -> usize {
        self.inner.pool.lock().jobs.len()
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        self.submit(f)?.await.map_err(|_| HashError::Join)
    }

    /// Queues `f`, or refuses at once when the pool is full. Dropping the receiver before
    /// `f` starts (the request was abandoned) means `f` never runs.
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                metrics::counter!("latchkey_password_abandoned_total").increment(1);
                return;
            }
            let _ = tx.send(f());
        });
        let pool = &self.inner.pool;
        let mut q = pool.lock();
        if q.running + q.jobs.len() >= self.inner.limit {
            drop(q);
            metrics::counter!("latchkey_password_overloaded_total").increment(1);
            return Err(HashError::Overloaded);
        }
        q.jobs.push_back(job);
        metrics::gauge!("latchkey_password_queue_depth").set(q.jobs.len() as f64);
        drop(q);
        pool.work.notify_one();
        Ok(rx)
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

    const TINY: PasswordParams = PasswordParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Occupies the hasher's single thread until the returned sender is dropped or sent to.
    async fn block_the_thread(h: &PasswordHasher) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let rx = h
            .submit(move || {
                let _ = started_tx.send(());
                let _ = wait.recv();
            })
            .unwrap();
        started.await.unwrap();
        std::mem::forget(rx); // keep the job's receiver alive: it must run, not be skipped
        release
    }

    /// A thread counts its job done just after the caller got the answer.
    async fn settles_to_idle(h: &PasswordHasher) {
        for _ in 0..100 {
            if h.in_flight() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} jobs still in flight", h.in_flight());
    }

    // Finding 3 (issue 9): the queue is bounded, and abandoned jobs are not hashed.
    #[tokio::test]
    async fn finding_3_a_full_queue_answers_overloaded_at_once() {
        let h = PasswordHasher::with_queue(TINY, 1, Some(2)).unwrap();
        let release = block_the_thread(&h).await;
        let waiting: Vec<_> = (0..2).map(|_| h.submit(|| ()).unwrap()).collect();
        assert_eq!((h.in_flight(), h.queued()), (3, 2));
        let t = std::time::Instant::now();
        let err = h.verify("whatever password", None).await.unwrap_err();
        assert!(matches!(err, HashError::Overloaded), "{err:?}");
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        drop(release);
        for w in waiting {
            w.await.unwrap();
        }
        assert!(!h.verify("whatever password", None).await.unwrap());
        settles_to_idle(&h).await;
    }

    #[tokio::test]
    async fn finding_3_a_job_whose_caller_left_is_not_run() {
        let h = PasswordHasher::with_queue(TINY, 1, None).unwrap();
        let release = block_the_thread(&h).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let abandoned = h
            .submit(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .unwrap();
        drop(abandoned); // what dropping a request's future does
        let after = h.submit(|| 7).unwrap();
        drop(release);
        assert_eq!(after.await.unwrap(), 7);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        settles_to_idle(&h).await;
    }

    // Finding 12 (issue 9): idle threads free their Argon2 memory; busy ones keep it.
    #[tokio::test]
    async fn finding_12_idle_threads_free_their_argon2_memory() {
        let h = PasswordHasher::start(TINY, 1, None, Duration::from_millis(200)).unwrap();
        let capacity = || {
            h.submit(|| BLOCKS.with(|b| b.borrow_mut().as_mut().map_or(0, |m| m.blocks().len())))
        };
        let phc = h
            .hash(Password::parse("correct horse".into()).unwrap())
            .await
            .unwrap();
        assert_eq!(capacity().unwrap().await.unwrap(), 64, "kept while busy");
        assert!(h.verify("correct horse", Some(&phc)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(capacity().unwrap().await.unwrap(), 0, "freed once idle");
        assert!(h.verify("correct horse", Some(&phc)).await.unwrap());
    }

    #[test]
    fn production_parameters_follow_the_spec() {
        let p = PasswordParams::default();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (19_456, 2, 1));
    }
}
