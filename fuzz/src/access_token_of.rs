//! `http::extract::access_token_of`: which access token a request carries (Bearer, else the
//! access cookie; differing access cookies refused).
//!
//! Input: request headers, one `Name: value` per line (`Authorization`, `Cookie`, …).
//! Properties: a token found is non-empty and occurs in an `Authorization` or `Cookie`
//! header; a well-formed `Authorization: Bearer T` wins with `T` trimmed; refusals are 401
//! `token_invalid`; without `Authorization`, an access cookie appended in its own header is
//! the answer unless another, different value was already there (then 401).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use latchkey::http::extract::access_token_of;

const NAME: &str = "access_token";

fn check_refusal(e: latchkey::ApiError) {
    let res = e.into_response();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

pub fn run(data: &[u8]) {
    let h = super::headers(data);
    match access_token_of(&h, NAME) {
        Ok(Some(t)) => {
            assert!(!t.is_empty());
            let found = [header::AUTHORIZATION, header::COOKIE].iter().any(|n| {
                h.get_all(n)
                    .iter()
                    .any(|v| super::contains(v.as_bytes(), t.as_bytes()))
            });
            assert!(found, "{t:?} is in no header");
        }
        Ok(None) => {}
        Err(e) => check_refusal(e),
    }
    // The model of a Bearer credential: the first Authorization header, scheme `bearer` in
    // any case, one space, a token that is non-empty once trimmed, all visible ASCII.
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = v.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        let got = access_token_of(&h, NAME);
        assert_eq!(got.ok().flatten().as_deref(), Some(token.trim()), "{v:?}");
    }
    // Without Authorization: an appended cookie is the token, or a conflict.
    let mut h = h;
    h.remove(header::AUTHORIZATION);
    let earlier: Vec<String> = latchkey::cookies::read_cookie(&h, NAME)
        .into_iter()
        .map(str::to_owned)
        .collect();
    h.append(
        header::COOKIE,
        HeaderValue::from_static("access_token=planted.token"),
    );
    match access_token_of(&h, NAME) {
        Ok(Some(t)) => {
            assert_eq!(t, "planted.token");
            assert!(earlier.iter().all(|e| e == "planted.token"), "{earlier:?}");
        }
        Ok(None) => panic!("the planted cookie was not found"),
        Err(e) => {
            assert!(earlier.iter().any(|e| e != "planted.token"), "{earlier:?}");
            check_refusal(e);
        }
    }
}
