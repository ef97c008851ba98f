//! Serving over TCP with the connection limits SPEC 8 asks for.
//!
//! `axum::serve` has no header, body or idle deadlines and no connection cap, so latchkey
//! drives hyper's HTTP/1.1 connection builder itself and keeps a [`Tracker`] of every held
//! connection:
//!
//! - each connection records whether it is *waiting* for request bytes (idle between
//!   requests, headers arriving, or the handler awaiting body bytes) or *busy* (a handler
//!   working, a response being written), and since when;
//! - a per-connection timer closes it when headers take longer than `header_read_timeout`,
//!   or it sits idle longer than `idle_timeout`; the request body is wrapped so that reading
//!   it fails `body_read_timeout` after the headers, which is answered 408;
//! - at `max_connections`, a new connection is admitted by closing the held connection that
//!   has waited longest for request bytes; busy connections and requests whose bytes are
//!   still flowing are never chosen (if only those are held, the new connection is closed);
//! - the accept loop survives running out of descriptors: it reclaims the longest-waiting
//!   connection, backs off, and logs at most one warning per 10 s.
//!
//! hyper's own header read timeout is off: it restarts whenever hyper waits for a request
//! head, so it would also close idle keep-alive connections at 10 s; the tracker's timer
//! tells idle (60 s) from headers in progress (10 s). The peer address is attached as
//! `ConnectInfo` for rate limits and sessions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::config::Config;
use crate::error::{ApiError, BoxError};

/// Most request header fields accepted.
pub const MAX_HEADERS: usize = 64;
/// Size of the buffer the request head must fit in.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A request whose bytes arrived this recently is "being read at normal speed" and is never
/// closed to make room (SPEC 8); only connections silent for longer are stalled.
pub const STALLED_AFTER: Duration = Duration::from_millis(250);
/// Descriptors kept free for everything but client connections (database pool and its
/// files, listener, logs, resolver…): the larger of this and a tenth of the limit.
pub const FD_HEADROOM: u64 = 64;
/// After the body deadline the handler answers 408; the connection is closed if it has not
/// done so this much later (e.g. a handler that stopped reading the body).
const BODY_GRACE: Duration = Duration::from_secs(1);
/// At most one accept-failure warning per this period.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// `t + d`, or about 30 years on for a deadline too far to represent (no panic on a huge
/// configured timeout).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(30 * 365 * 86_400))
}

/// Limits of one [`serve`] call (SPEC 8). Build with [`ServeOptions::from_config`] (or
/// `AppState::serve_options`); the defaults are the SPEC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Request headers must arrive within this long (from the connection's first request
    /// byte, or from accept for the first request).
    pub header_read_timeout: Duration,
    /// A whole request body must arrive within this long after its headers.
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no new request is closed after this long.
    pub idle_timeout: Duration,
    /// Client connections held at most.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

impl ServeOptions {
    /// The limits `config` asks for (`max_connections` as configured: fit it to the
    /// descriptor limit first with [`fit_to_fd_limit`]).
    pub fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections.max(1),
        }
    }
}

/// `MAX_CONNECTIONS` after fitting it to the process's open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCap {
    /// What `MAX_CONNECTIONS` asked for.
    pub configured: usize,
    /// What the server will hold.
    pub effective: usize,
    /// The soft `RLIMIT_NOFILE` after raising it to the hard limit where allowed (`None`:
    /// unlimited or unknown).
    pub fd_limit: Option<u64>,
}

impl fmt::Display for ConnectionCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "max_connections={}", self.effective)?;
        match self.fd_limit {
            Some(limit) if self.effective < self.configured => write!(
                f,
                " (MAX_CONNECTIONS={} lowered to fit the open-file limit {limit})",
                self.configured
            ),
            Some(limit) => write!(f, " (open-file limit {limit})"),
            None => Ok(()),
        }
    }
}

/// Raises the soft open-file limit to the hard limit (as most servers do), then lowers
/// `configured` to fit under it with [`FD_HEADROOM`] to spare. Call once at start-up.
pub fn fit_to_fd_limit(configured: usize) -> ConnectionCap {
    let fd_limit = raise_fd_limit();
    ConnectionCap {
        configured,
        effective: cap_for_fd_limit(configured, fd_limit),
        fd_limit,
    }
}

fn cap_for_fd_limit(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let headroom = FD_HEADROOM.max(limit / 10);
    // A tiny limit still serves a few clients rather than none.
    let room = limit.saturating_sub(headroom).max(limit / 4).max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

#[cfg(unix)]
fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct. It fails (EINVAL/EPERM, e.g. on macOS
        // with an unlimited hard limit) without side effects; the old limit then stands.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    // `rlim_t` is not u64 on every platform.
    #[allow(clippy::useless_conversion)]
    let limit = u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX);
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(limit)
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<u64> {
    None
}

/// Out of descriptors (per process or system-wide).
fn is_fd_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// An accept error that concerns one connection only (retry at once).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Why the server closed a connection, as the `reason` label of
/// `latchkey_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    /// No new request within `idle_timeout`.
    Idle,
    /// Headers not complete within `header_read_timeout`.
    SlowHeaders,
    /// Body not complete within `body_read_timeout` (+ grace) and no 408 sent.
    SlowBody,
    /// Closed at the cap to admit a new connection.
    Evicted,
    /// Closed because descriptors ran out.
    Reclaimed,
    /// New connection closed at the cap: every held one was busy or active.
    Refused,
}

impl CloseReason {
    fn label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::SlowHeaders => "slow_headers",
            Self::SlowBody => "slow_body",
            Self::Evicted => "evicted",
            Self::Reclaimed => "reclaimed",
            Self::Refused => "refused",
        }
    }

    fn count(self) {
        metrics::counter!("latchkey_connections_closed_total", "reason" => self.label())
            .increment(1);
    }
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests (or before the first byte of a later request).
    Idle,
    /// A request head is arriving (from accept for the first request).
    Head,
    /// The handler has the request; its body is not complete yet.
    Body,
    /// Handler working or response being written.
    Busy,
}

#[derive(Debug)]
struct Activity {
    phase: Phase,
    /// When the current phase began.
    since: Instant,
    /// When request bytes last arrived.
    last_read: Instant,
    /// In [`Phase::Body`]: the handler polled the body and is waiting for bytes (until
    /// then the handler is working, i.e. busy).
    awaiting_body: bool,
    /// Requests started on this connection, so that a late guard of request n never
    /// resets the phase of request n+1.
    request: u64,
}

/// One held connection, shared by the accept loop (eviction), its task (deadlines), its
/// I/O (bytes arriving), and its requests (phases).
#[derive(Debug)]
struct Slot {
    id: u64,
    activity: Mutex<Activity>,
    evict: Notify,
}

impl Slot {
    fn new(id: u64, now: Instant) -> Self {
        Self {
            id,
            activity: Mutex::new(Activity {
                phase: Phase::Head,
                since: now,
                last_read: now,
                awaiting_body: false,
                request: 0,
            }),
            evict: Notify::new(),
        }
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        // The critical sections cannot panic; a poisoned lock still holds valid data.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bytes_read(&self) {
        let now = Instant::now();
        let mut a = self.activity();
        a.last_read = now;
        if a.phase == Phase::Idle {
            a.phase = Phase::Head;
            a.since = now;
        }
    }

    /// Headers are complete; returns the request's number.
    fn request_started(&self, has_body: bool, now: Instant) -> u64 {
        let mut a = self.activity();
        a.request += 1;
        a.phase = if has_body { Phase::Body } else { Phase::Busy };
        a.since = now;
        a.awaiting_body = false;
        a.request
    }

    fn body_polled(&self, request: u64, pending: bool, finished: bool) {
        let mut a = self.activity();
        if a.request != request || a.phase != Phase::Body {
            return;
        }
        if finished {
            a.phase = Phase::Busy;
            a.since = Instant::now();
            a.awaiting_body = false;
        } else {
            a.awaiting_body = pending;
        }
    }

    fn response_finished(&self, request: u64) {
        let mut a = self.activity();
        if a.request == request && a.phase != Phase::Head {
            a.phase = Phase::Idle;
            a.since = Instant::now();
            a.awaiting_body = false;
        }
    }

    /// When the connection is to be closed if nothing changes, and why.
    fn deadline(&self, opts: &ServeOptions) -> Option<(Instant, CloseReason)> {
        let a = self.activity();
        match a.phase {
            Phase::Idle => Some((later(a.since, opts.idle_timeout), CloseReason::Idle)),
            Phase::Head => Some((
                later(a.since, opts.header_read_timeout),
                CloseReason::SlowHeaders,
            )),
            Phase::Body if a.awaiting_body => Some((
                later(later(a.since, opts.body_read_timeout), BODY_GRACE),
                CloseReason::SlowBody,
            )),
            Phase::Body | Phase::Busy => None,
        }
    }

    /// Since when the connection has been waiting for request bytes, if it may be closed
    /// to make room: idle, or a request stalled for at least [`STALLED_AFTER`].
    fn waiting_since(&self, now: Instant) -> Option<Instant> {
        let a = self.activity();
        match a.phase {
            Phase::Idle => Some(a.since),
            Phase::Head | Phase::Body => {
                if a.phase == Phase::Body && !a.awaiting_body {
                    return None;
                }
                let since = a.since.max(a.last_read);
                (now.saturating_duration_since(since) >= STALLED_AFTER).then_some(since)
            }
            Phase::Busy => None,
        }
    }
}

/// Every held connection, for the cap and for reclaiming descriptors.
struct Tracker {
    max: usize,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Tracker {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection, closing the longest-waiting held one at the cap. `None`:
    /// at the cap with nothing to close; the caller drops the new connection.
    fn admit(&self, id: u64) -> Option<Arc<Slot>> {
        let now = Instant::now();
        let mut slots = self.slots();
        if slots.len() >= self.max {
            let victim = Self::longest_waiting(&slots, now)?;
            Self::close(&mut slots, victim, CloseReason::Evicted);
        }
        let slot = Arc::new(Slot::new(id, now));
        slots.insert(id, slot.clone());
        metrics::gauge!("latchkey_connections_open").set(slots.len() as f64);
        Some(slot)
    }

    /// Out of descriptors: closes the longest-waiting connection, if any.
    fn reclaim(&self) -> bool {
        let mut slots = self.slots();
        match Self::longest_waiting(&slots, Instant::now()) {
            Some(victim) => {
                Self::close(&mut slots, victim, CloseReason::Reclaimed);
                metrics::gauge!("latchkey_connections_open").set(slots.len() as f64);
                true
            }
            None => false,
        }
    }

    fn longest_waiting(slots: &HashMap<u64, Arc<Slot>>, now: Instant) -> Option<u64> {
        slots
            .values()
            .filter_map(|s| s.waiting_since(now).map(|since| (since, s.id)))
            .min()
            .map(|(_, id)| id)
    }

    fn close(slots: &mut HashMap<u64, Arc<Slot>>, id: u64, reason: CloseReason) {
        if let Some(slot) = slots.remove(&id) {
            // A stored permit: the connection's task sees it even if not waiting yet.
            slot.evict.notify_one();
            reason.count();
        }
    }

    fn remove(&self, id: u64) {
        let mut slots = self.slots();
        slots.remove(&id);
        metrics::gauge!("latchkey_connections_open").set(slots.len() as f64);
    }
}

/// Removes the connection from the tracker when its task ends, however it ends.
struct Registration {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tracker.remove(self.id);
    }
}

/// The socket, reporting each arrival of request bytes to the slot.
struct TrackedIo {
    inner: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.slot.bytes_read();
        }
        res
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Reading the request body failed because it did not arrive within `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// The request body: fails at the body deadline and tells the slot when the handler waits
/// for bytes and when the body is complete.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    slot: Arc<Slot>,
    request: u64,
    timed_out: Arc<AtomicBool>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.slot.body_polled(this.request, false, true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                let finished = this.inner.is_end_stream();
                this.slot.body_polled(this.request, false, finished);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                this.slot.body_polled(this.request, true, false);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body; when hyper drops it (written, or the connection went away) the
/// connection is idle again.
struct ResponseBody {
    inner: Body,
    _done: ResponseDone,
}

struct ResponseDone {
    slot: Arc<Slot>,
    request: u64,
}

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.slot.response_finished(self.request);
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Logs accept failures at most once per [`ACCEPT_WARN_EVERY`], with a count of the rest,
/// so that running out of descriptors cannot flood the log.
#[derive(Default)]
struct AcceptWarnings {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptWarnings {
    fn report(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < ACCEPT_WARN_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Serves `app` on `listener` with the limits of `options` until `shutdown` resolves, then
/// drains connections (10 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The tracker enforces the header deadline (see the module docs).
        .header_read_timeout(None)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    // Embedders get the same fitting as the binary (which has fitted already, and logged
    // it: then this changes nothing).
    let cap = fit_to_fd_limit(options.max_connections);
    if cap.effective < cap.configured {
        tracing::info!("{cap}");
    }
    let tracker = Arc::new(Tracker::new(cap.effective));
    let mut warnings = AcceptWarnings::default();
    let mut backoff = Duration::ZERO;
    let mut next_id: u64 = 0;
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    backoff = Duration::ZERO;
                    pair
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors: free the longest-waiting connection's, and back
                    // off instead of spinning on an error that repeats until one is free.
                    if is_fd_exhaustion(&e) {
                        tracker.reclaim();
                    }
                    warnings.report(&e);
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_millis(500));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        next_id += 1;
        let Some(slot) = tracker.admit(next_id) else {
            CloseReason::Refused.count();
            drop(stream);
            continue;
        };
        let registration = Registration {
            tracker: tracker.clone(),
            id: next_id,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(TrackedIo {
            inner: stream,
            slot: slot.clone(),
        });
        let svc = {
            let slot = slot.clone();
            let app = app.clone();
            hyper::service::service_fn(move |req| {
                handle(req, app.clone(), slot.clone(), peer, options)
            })
        };
        let conn = graceful.watch(builder.serve_connection(io, svc));
        tokio::spawn(async move {
            let _registration = registration;
            if let Some(reason) = drive(conn, &slot, &options).await {
                reason.count();
                tracing::debug!(%peer, reason = reason.label(), "connection closed");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing");
    }
    Ok(())
}

/// One request: phases for the tracker, the body deadline, `ConnectInfo`, and 408 when the
/// body was late.
async fn handle(
    req: hyper::Request<Incoming>,
    app: Router,
    slot: Arc<Slot>,
    peer: SocketAddr,
    options: ServeOptions,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    use hyper::body::Body as _;
    let now = Instant::now();
    let has_body = !req.body().is_end_stream();
    let request = slot.request_started(has_body, now);
    let done = ResponseDone {
        slot: slot.clone(),
        request,
    };
    // Only a request with a body gets the body deadline (most requests — GET /me — have
    // none, and need no timer).
    let timed_out = has_body.then(|| Arc::new(AtomicBool::new(false)));
    let mut req = req.map(|inner| match &timed_out {
        Some(flag) => Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(later(
                now,
                options.body_read_timeout,
            ))),
            slot,
            request,
            timed_out: flag.clone(),
        }),
        None => Body::new(inner),
    });
    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
    let res = app.oneshot(req).await?;
    let res = if timed_out.is_some_and(|t| t.load(Ordering::Relaxed)) {
        // Whatever the handler made of the failed read, the answer is 408, and the rest of
        // the body is not waited for.
        let mut res = ApiError::RequestTimeout.into_response();
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        res
    } else {
        res
    };
    Ok(res.map(|inner| ResponseBody { inner, _done: done }))
}

/// Drives one connection until it ends (`None`) or a deadline or the cap closes it.
async fn drive(conn: impl Future, slot: &Slot, options: &ServeOptions) -> Option<CloseReason> {
    let mut conn = pin!(conn);
    let mut evicted = pin!(slot.evict.notified());
    let mut timer = pin!(tokio::time::sleep(options.idle_timeout));
    // Every phase change happens inside the connection's own poll (its I/O, its handler),
    // so re-reading the deadline after each poll keeps the timer exact.
    poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if evicted.as_mut().poll(cx).is_ready() {
            // Counted by the tracker, which knows why.
            return Poll::Ready(None);
        }
        loop {
            let Some((at, reason)) = slot.deadline(options) else {
                return Poll::Pending;
            };
            if at <= Instant::now() {
                return Poll::Ready(Some(reason));
            }
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_descriptor_limit_with_headroom() {
        assert_eq!(cap_for_fd_limit(4096, None), 4096);
        assert_eq!(cap_for_fd_limit(4096, Some(256)), 192);
        assert_eq!(cap_for_fd_limit(4096, Some(1024)), 922);
        assert_eq!(cap_for_fd_limit(4096, Some(1_048_576)), 4096);
        assert_eq!(cap_for_fd_limit(100, Some(256)), 100);
        assert_eq!(cap_for_fd_limit(4096, Some(40)), 10);
        assert_eq!(cap_for_fd_limit(4096, Some(2)), 1);
        let cap = ConnectionCap {
            configured: 4096,
            effective: 192,
            fd_limit: Some(256),
        };
        assert_eq!(
            cap.to_string(),
            "max_connections=192 (MAX_CONNECTIONS=4096 lowered to fit the open-file limit 256)"
        );
    }
}
