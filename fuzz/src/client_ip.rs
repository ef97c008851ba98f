//! `http::extract::client_ip`: the `X-Forwarded-For` walk (SPEC 8).
//!
//! Input: line 1 the socket peer's address (default `10.0.0.1`), line 2 the trusted proxies,
//! comma-separated networks or addresses (default `10.0.0.0/8, 127.0.0.1, ::1`), then
//! request headers, one `Name: value` per line (`X-Forwarded-For: …`, possibly several).
//! Properties: an untrusted peer is the client whatever the header says; the answer is the
//! peer or an address written in an `X-Forwarded-For` entry; without the header it is the
//! peer; and, behind a trusted peer, an untrusted address appended in a last header field
//! is the client.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderValue;
use ipnet::IpNet;
use latchkey::http::extract::client_ip;

fn entries(h: &axum::http::HeaderMap) -> Vec<IpAddr> {
    h.get_all("x-forwarded-for")
        .iter()
        .flat_map(|f| f.as_bytes().split(|b| *b == b','))
        .filter_map(|e| std::str::from_utf8(e.trim_ascii()).ok())
        .filter_map(|e| {
            e.parse::<IpAddr>()
                .ok()
                .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .collect()
}

pub fn run(data: &[u8]) {
    let (peer_line, rest) = super::first_line(data);
    let (trusted_line, rest) = super::first_line(rest);
    let peer: IpAddr = std::str::from_utf8(peer_line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(IpAddr::from([10, 0, 0, 1]));
    let mut trusted: Vec<IpNet> = String::from_utf8_lossy(trusted_line)
        .split(',')
        .filter_map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();
    if trusted.is_empty() {
        trusted = ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
    }
    let is_trusted = |ip: &IpAddr| {
        let ip = ip.to_canonical();
        trusted.iter().any(|n| n.contains(&ip))
    };
    let h = super::headers(rest);

    let got = client_ip(Some(peer), &h, &trusted).expect("a peer gives an answer");
    assert_eq!(client_ip(None, &h, &trusted), None);
    if !is_trusted(&peer) {
        assert_eq!(got, peer);
    }
    assert!(
        got == peer || entries(&h).contains(&got),
        "{got} is neither the peer nor in the header"
    );
    let mut bare = h.clone();
    bare.remove("x-forwarded-for");
    assert_eq!(client_ip(Some(peer), &bare, &trusted), Some(peer));

    // A last field naming an untrusted client, appended by a trusted peer: that client.
    let client = IpAddr::from([198, 51, 100, 77]);
    if is_trusted(&peer) && !is_trusted(&client) {
        let mut h = h;
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.77"));
        assert_eq!(client_ip(Some(peer), &h, &trusted), Some(client));
    }
}
