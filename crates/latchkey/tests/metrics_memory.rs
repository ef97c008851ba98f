//! Issue 11, the soak: an instance nobody scrapes must not keep its request-duration samples.
//!
//! The Prometheus recorder queues every histogram sample until a scrape or an upkeep drains
//! it into its summary. latchkey builds the recorder itself (no exporter task), so without
//! its own upkeep an unscraped instance kept 8+ bytes per request forever — the soak's steady
//! RSS growth. This binary counts live heap bytes with its own global allocator (a binary of
//! its own, so no other test allocates meanwhile).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

#[tokio::test]
async fn request_duration_samples_are_drained_without_a_scrape() {
    // Polling every 100 ms: the upkeep runs every tenth poll, once a second.
    let app = common::spawn().await;
    let res = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = live_mib();

    // The histogram the request middleware records into, as a million requests would.
    let h = metrics::histogram!("latchkey_http_request_duration_seconds", "route" => "/healthz");
    for i in 0..1_000_000u32 {
        h.record(f64::from(i % 1000) / 1e6);
    }
    let queued = live_mib() - before;
    assert!(
        queued > 4.0,
        "a million samples are queued before the upkeep ({queued:.1} MiB): the check can fail"
    );

    // Nobody scrapes `/metrics`. The drained sample blocks are freed through epoch-based
    // reclamation, which advances as threads record: light traffic (a thousand samples
    // every 100 ms, 8 KiB of their own) goes on, as it would on a live server.
    let mut kept = queued;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..1000u32 {
            h.record(f64::from(i) / 1e6);
        }
        kept = live_mib() - before;
        if kept < 1.0 {
            break;
        }
    }
    assert!(
        kept < 1.0,
        "{kept:.1} MiB of a million samples still held 5 s later: histogram samples are not drained"
    );
}
