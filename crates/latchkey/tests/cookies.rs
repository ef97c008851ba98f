//! SPEC 3: every cookie write and clear, attribute by attribute, in both modes, over HTTP.

mod common;

use common::*;
use serde_json::json;

fn attrs(line: &str) -> (String, Vec<String>) {
    let mut parts = line.split("; ");
    let name = parts.next().unwrap().split('=').next().unwrap().to_owned();
    let mut rest: Vec<String> = parts
        .filter(|a| !a.starts_with("Max-Age"))
        .map(str::to_owned)
        .collect();
    rest.sort();
    (name, rest)
}

fn max_age(line: &str) -> i64 {
    line.split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age present")
        .parse()
        .unwrap()
}

fn expected(production: bool) -> [(String, Vec<String>); 2] {
    let mut access = vec![
        "HttpOnly".to_owned(),
        "Path=/".to_owned(),
        "SameSite=Lax".to_owned(),
    ];
    let mut refresh = vec![
        "HttpOnly".to_owned(),
        "Path=/api/v1/auth".to_owned(),
        "SameSite=Strict".to_owned(),
    ];
    if production {
        access.push("Secure".into());
        refresh.push("Secure".into());
        access.sort();
        refresh.sort();
        [
            ("__Host-access_token".into(), access),
            ("__Secure-refresh_token".into(), refresh),
        ]
    } else {
        [
            ("access_token".into(), access),
            ("refresh_token".into(), refresh),
        ]
    }
}

async fn app_in(production: bool) -> TestApp {
    spawn_with(|c| {
        if production {
            common::into_production(c);
        }
    })
    .await
}

/// Sends the production-named cookies when needed.
fn cookie_header(production: bool, access: Option<&str>, refresh: Option<&str>) -> String {
    let (a, r) = if production {
        ("__Host-access_token", "__Secure-refresh_token")
    } else {
        ("access_token", "refresh_token")
    };
    let mut v = Vec::new();
    if let Some(x) = access {
        v.push(format!("{a}={x}"));
    }
    if let Some(x) = refresh {
        v.push(format!("{r}={x}"));
    }
    v.join("; ")
}

fn value_of(lines: &[String], name: &str) -> String {
    lines
        .iter()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

#[tokio::test]
async fn every_write_and_clear_in_both_modes() {
    for production in [false, true] {
        let app = app_in(production).await;
        let want = expected(production);
        let email = unique_email("ck");

        // signup and login set both cookies.
        let mut written = Vec::new();
        let res = app
            .post_json(
                "/api/v1/auth/signup",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 201);
        written.push(("signup", res.headers().clone()));
        let res = app
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 200);
        written.push(("login", res.headers().clone()));
        let lines = set_cookie_lines(&written[1].1);
        let (access, refresh) = (value_of(&lines, &want[0].0), value_of(&lines, &want[1].0));

        // refresh sets both.
        let res = app
            .http
            .post(app.url("/api/v1/auth/refresh"))
            .header("cookie", cookie_header(production, None, Some(&refresh)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        written.push(("refresh", res.headers().clone()));
        let lines = set_cookie_lines(&written[2].1);
        let refresh2 = value_of(&lines, &want[1].0);

        let device_name = if production {
            "__Secure-device"
        } else {
            "device"
        };
        for (what, headers) in &written {
            let (device, lines): (Vec<String>, Vec<String>) = set_cookie_lines(headers)
                .into_iter()
                .partition(|l| l.starts_with(&format!("{device_name}=")));
            assert_eq!(lines.len(), 2, "{what}: exactly two auth cookies");
            // Password sign-ins also set the device cookie (SPEC 3, 8); refresh does not.
            if *what == "refresh" {
                assert!(device.is_empty(), "refresh sets no device cookie");
            } else {
                let mut want_device = vec![
                    "HttpOnly".to_owned(),
                    "Path=/api/v1/auth".to_owned(),
                    "SameSite=Lax".to_owned(),
                ];
                if production {
                    want_device.push("Secure".into());
                    want_device.sort();
                }
                assert_eq!(device.len(), 1, "{what}: one device cookie");
                assert_eq!(
                    attrs(&device[0]),
                    (device_name.to_owned(), want_device),
                    "{what}: {}",
                    device[0]
                );
                assert_eq!(max_age(&device[0]), 31_536_000, "{what}: a year");
            }
            assert_eq!(
                attrs(&lines[0]),
                want[0],
                "{what} access, production={production}: {}",
                lines[0]
            );
            assert_eq!(
                attrs(&lines[1]),
                want[1],
                "{what} refresh, production={production}: {}",
                lines[1]
            );
            assert_eq!(
                max_age(&lines[0]),
                900,
                "{what}: access Max-Age is its lifetime"
            );
            assert_eq!(
                max_age(&lines[1]),
                14 * 86_400,
                "{what}: refresh Max-Age is the idle lifetime"
            );
            assert!(
                lines
                    .iter()
                    .all(|l| !l.to_ascii_lowercase().contains("domain=")),
                "{what}: no Domain"
            );
            assert_eq!(headers["cache-control"], "no-store", "{what}");
        }

        // A failed refresh and logout clear both, with the same name, path and flags.
        let res = app
            .http
            .post(app.url("/api/v1/auth/refresh"))
            .header("cookie", cookie_header(production, None, Some("bad")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let failed = res.headers().clone();
        let res = app
            .http
            .post(app.url("/api/v1/auth/logout"))
            .header(
                "cookie",
                cookie_header(production, Some(&access), Some(&refresh2)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        for (what, headers) in [
            ("failed refresh", failed),
            ("logout", res.headers().clone()),
        ] {
            let lines = set_cookie_lines(&headers);
            assert_eq!(lines.len(), 2, "{what}");
            for (line, w) in lines.iter().zip(&want) {
                assert_eq!(&attrs(line), w, "{what}: {line}");
                assert_eq!(max_age(line), 0, "{what}: {line}");
                assert!(
                    line.starts_with(&format!("{}=;", w.0)),
                    "{what}: empty value: {line}"
                );
            }
            assert_eq!(headers["cache-control"], "no-store");
        }
    }
}

#[tokio::test]
async fn nothing_else_sets_cookies() {
    let app = spawn().await;
    let jar = app.signup(&unique_email("none")).await;
    for path in [
        "/api/v1/me",
        "/api/v1/auth/sessions",
        "/healthz",
        "/readyz",
        "/.well-known/jwks.json",
        "/api/v1/openapi.json",
        "/metrics",
    ] {
        let res = app.get(path, &jar).await;
        assert!(
            res.headers().get("set-cookie").is_none(),
            "{path} must not set cookies"
        );
    }
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "x@example.com", "password": "wrong password"}),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "failed login sets nothing"
    );
}
