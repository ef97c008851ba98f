//! Finding 2 (issue 9): slow bodies exhausted file descriptors. SPEC 8 "Slow or many
//! clients", against the real binary under a 256-descriptor limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{BIN, free_port};

const TRICKLERS: usize = 300;

/// This test holds more than 300 sockets at once.
fn raise_own_fd_limit(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = lim.rlim_max.min(want);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The `n`th loopback source address: 127.0.0.2, …, 127.0.0.254, 127.0.1.1, …
fn source(n: usize) -> IpAddr {
    let n = n + 1;
    IpAddr::V4(Ipv4Addr::new(127, 0, (n / 254) as u8, (n % 254 + 1) as u8))
}

/// Kills the server however the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A slow client: a login request whose 1000-byte body comes one byte every 3 s. When the
/// server closes it (408 at the body deadline, or to make room), it comes back a second
/// later from the same address — the pressure never lets up.
async fn trickle(n: usize, server: SocketAddr, stop: Arc<AtomicBool>, connects: Arc<AtomicU64>) {
    // Staggered like clients arriving over 3 s, so their bytes are not in lockstep.
    tokio::time::sleep(Duration::from_millis(10 * n as u64)).await;
    while !stop.load(Ordering::Relaxed) {
        let Ok(sock) = TcpSocket::new_v4() else {
            return;
        };
        if sock.bind(SocketAddr::new(source(n), 0)).is_err() {
            return;
        }
        let Ok(mut s) = sock.connect(server).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        connects.fetch_add(1, Ordering::Relaxed);
        let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n\
                    Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
        if s.write_all(head.as_bytes()).await.is_ok() {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                tokio::select! {
                    // Answered (408) or closed: start over.
                    _ = s.read(&mut buf) => break,
                    () = tokio::time::sleep(Duration::from_secs(3)) => {
                        if s.write_all(b" ").await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        drop(s);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `GET /healthz` on a fresh connection; the time to a complete 200, or why not.
async fn probe(server: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let attempt = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let res = String::from_utf8_lossy(&buf);
        if res.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("answer: {res:?}"))
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_slow_bodies_under_a_256_descriptor_limit_never_keep_healthz_out() {
    raise_own_fd_limit(4096);
    let dir =
        std::env::temp_dir().join(format!("latchkey-conns-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("server.log");
    let port = free_port();
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    // Soft and hard limit 256: the server cannot raise it and must fit under it.
    let child = Command::new("sh")
        .args(["-c", "ulimit -n 256 && exec \"$0\"", BIN])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .env("LISTEN_ADDR", server.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = Server(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log().contains("listening") {
        assert!(Instant::now() < deadline, "server did not start: {}", log());
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "server exited: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start_line = log()
        .lines()
        .find(|l| l.contains("latchkey starting"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        start_line.contains("max_connections=") && start_line.contains("open-file limit 256"),
        "the start-up line states the fitted cap: {start_line}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    let tricklers: Vec<_> = (0..TRICKLERS)
        .map(|n| tokio::spawn(trickle(n, server, stop.clone(), connects.clone())))
        .collect();
    // All 300 are in (they arrive over 3 s) and the oldest have stalled.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // A fresh client, every 500 ms for 10 s, is answered within 2 s each time.
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let sampling = Instant::now();
    for k in 0..20u32 {
        let at = sampling + Duration::from_millis(500) * k;
        tokio::time::sleep_until(at.into()).await;
        match probe(server).await {
            Ok(d) => latencies.push(d),
            Err(e) => failures.push(format!("probe {k} at {:?}: {e}", at - sampling)),
        }
    }
    let alive = child.0.try_wait().unwrap().is_none();
    stop.store(true, Ordering::Relaxed);
    for t in tricklers {
        t.abort();
    }
    latencies.sort();
    eprintln!(
        "finding 2: {} trickler connections; /healthz probes ok {}/20, median {:?}, max {:?}",
        connects.load(Ordering::Relaxed),
        latencies.len(),
        latencies.get(latencies.len() / 2),
        latencies.last()
    );
    let log = log();
    let accept_failures = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(alive, "the server survived: {log}");
    assert!(failures.is_empty(), "fresh clients kept out: {failures:#?}");
    assert!(
        connects.load(Ordering::Relaxed) >= TRICKLERS as u64,
        "every slow client got a connection"
    );
    assert!(
        accept_failures <= 3,
        "{accept_failures} accept-failure lines in the log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
