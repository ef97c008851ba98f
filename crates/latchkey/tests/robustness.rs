//! "Bad input gets a clear error and loses nothing": hostile requests to every route never
//! produce a 5xx, always a problem+json 4xx, and never disturb a live session.

mod common;

use common::*;

/// A tiny deterministic generator, so a failure reproduces.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/signup"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout-all"),
    ("GET", "/api/v1/auth/sessions"),
    (
        "DELETE",
        "/api/v1/auth/sessions/00000000-0000-0000-0000-000000000000",
    ),
    ("GET", "/api/v1/me"),
];

#[tokio::test]
async fn hostile_requests_never_get_a_5xx_and_leave_sessions_intact() {
    let app = spawn_with(|c| {
        // Let the flood through so every request reaches the handlers.
        c.rate_limits.auth_per_ip.burst = 100_000;
        c.rate_limits.auth_per_email.burst = 100_000;
    })
    .await;
    let victim = app.signup(&unique_email("victim")).await;
    let mut rng = Lcg(0x5eed);
    let bodies: Vec<Vec<u8>> = vec![
        b"{\"email\": \"\\ud800\", \"password\": \"\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\"}".to_vec(),
        b"{\"email\": [], \"password\": {}}".to_vec(),
        b"{\"email\": \"a@b.co\", \"password\": \"12345678\", \"name\": \"\\u0007bell\"}".to_vec(),
        format!("{{\"email\": \"{}@x.io\", \"password\": \"12345678\"}}", "a".repeat(300)).into_bytes(),
        b"{\"email\": \"a@b.co\", \"password\": \"12345678\", \"extra\": 1e999}".to_vec(),
        "[".repeat(5000).into_bytes(),
        vec![0xff, 0xfe, 0x00],
    ];
    let cookies = [
        "refresh_token=%00; access_token=%ff".to_owned(),
        format!("access_token={}", "x".repeat(8000)),
        "access_token=a.b.c; access_token=d.e.f".to_owned(),
        format!(
            "refresh_token={}",
            victim
                .refresh
                .clone()
                .unwrap()
                .chars()
                .rev()
                .collect::<String>()
        ),
        "=; ;;; refresh_token".to_owned(),
    ];
    let mut n = 0;
    for (method, path) in ROUTES {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for i in 0..24 {
            let body = if i < bodies.len() {
                bodies[i].clone()
            } else {
                let len = (rng.next() % 600) as usize;
                rng.bytes(len)
            };
            let mut req = app.http.request(m.clone(), app.url(path)).body(body);
            req = req.header(
                "content-type",
                if i % 3 == 0 {
                    "application/json"
                } else {
                    "application/json; charset=latin1"
                },
            );
            req = req.header("cookie", &cookies[i % cookies.len()]);
            if i % 4 == 1 {
                req = req.header(
                    "authorization",
                    format!(
                        "Bearer {}",
                        String::from_utf8_lossy(&rng.bytes(40))
                            .replace(|c: char| !c.is_ascii_graphic(), "A")
                    ),
                );
            }
            if i % 5 == 2 {
                req = req.header("x-forwarded-for", "1.2.3.4, garbage, ::1");
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            assert!(status < 500, "{method} {path} #{i}: {status}");
            if status >= 400 {
                let ct = res
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                assert_eq!(ct, "application/problem+json", "{method} {path} #{i}");
                let body: serde_json::Value = res.json().await.expect("problem body is JSON");
                assert!(body["code"].as_str().is_some_and(|c| !c.is_empty()));
            }
            n += 1;
        }
    }
    assert_eq!(n, ROUTES.len() * 24);
    assert_eq!(
        app.me_status(&victim).await,
        200,
        "the victim's session survived"
    );
    let mut v = victim.clone();
    assert_eq!(app.refresh(&mut v).await.0, 200);
}
