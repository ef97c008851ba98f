//! A browser's cookie store for flows that need cookie paths (the second-factor cookie's is
//! not `/`): shared by the mfa and events test binaries.
use std::collections::HashMap;

use reqwest::header::{HeaderMap, SET_COOKIE};

/// A browser's cookie store, enough for these flows: name → (value, path), updated from
/// `Set-Cookie` (`Max-Age=0` or an empty value removes), sent by path prefix.
#[derive(Debug, Clone, Default)]
pub struct Browser {
    cookies: HashMap<String, (String, String)>,
}

impl Browser {
    pub fn update(&mut self, headers: &HeaderMap) {
        for line in headers.get_all(SET_COOKIE) {
            let line = line.to_str().unwrap();
            let mut parts = line.split("; ");
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut path = "/".to_owned();
            let mut gone = value.is_empty();
            for a in parts {
                if let Some(p) = a.strip_prefix("Path=") {
                    path = p.to_owned();
                }
                if a == "Max-Age=0" {
                    gone = true;
                }
            }
            if gone {
                self.cookies.remove(name);
            } else {
                self.cookies
                    .insert(name.to_owned(), (value.to_owned(), path));
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.cookies.contains_key(name)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(|(v, _)| v.as_str())
    }

    /// Every cookie value it holds (the events secrets tour collects them).
    pub fn values(&self) -> Vec<String> {
        self.cookies.values().map(|(v, _)| v.clone()).collect()
    }

    pub fn remove(&mut self, name: &str) {
        self.cookies.remove(name);
    }

    pub fn header_for(&self, path: &str) -> String {
        self.cookies
            .iter()
            .filter(|(_, (_, p))| path.starts_with(p.as_str()))
            .map(|(n, (v, _))| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
