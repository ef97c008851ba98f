//! A real SMTP server for the mail tests: `scripts/smtp_sink.py` (aiosmtpd) on a loopback
//! port, and the messages it received, as Python's `email` package decoded them.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smtp_sink.py");

/// A running SMTP sink; killed when dropped.
pub struct Sink {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub envelope_to: Vec<String>,
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub headers: Vec<(String, String)>,
}

impl Mail {
    fn from_json(v: &Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Mail {
            envelope_to: v["envelope_to"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            to: s("to"),
            from: s("from"),
            subject: s("subject"),
            text: s("text"),
            html: s("html"),
            headers: v["headers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| {
                            (
                                h[0].as_str().unwrap_or_default().to_owned(),
                                h[1].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The link of the text part that carries a token, else its last link.
    pub fn link(&self) -> String {
        let links: Vec<&str> = self
            .text
            .split_whitespace()
            .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
            .collect();
        links
            .iter()
            .find(|l| l.contains("#token="))
            .or(links.last())
            .unwrap_or_else(|| panic!("no link in {:?}", self.text))
            .to_string()
    }

    /// The token in the link's fragment (`#token=…`).
    pub fn token(&self) -> String {
        let link = self.link();
        link.split_once("#token=")
            .unwrap_or_else(|| panic!("no #token= in {link}"))
            .1
            .to_owned()
    }
}

impl Sink {
    /// A sink on a free port.
    pub fn start() -> Self {
        Self::start_with(0, 0)
    }

    /// A sink on `port` (0: any) that answers the first `fail_first` messages with 451.
    pub fn start_with(port: u16, fail_first: u32) -> Self {
        let dir = std::env::temp_dir().join(format!("latchkey-smtp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg("--dir")
            .arg(&dir)
            .arg("--port")
            .arg(port.to_string())
            .arg("--fail-first")
            .arg(fail_first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 scripts/smtp_sink.py (pip install aiosmtpd==1.4.6)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("smtp_sink did not start: {line:?}"));
        Sink {
            port,
            dir,
            child: Some(child),
        }
    }

    /// `SMTP_URL` for this sink (plain SMTP on loopback).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its messages stay readable).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|n| std::fs::read(self.dir.join(n)).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| Mail::from_json(&v))
            .collect()
    }

    /// Messages to `to` whose subject contains `subject`.
    pub fn to(&self, to: &str, subject: &str) -> Vec<Mail> {
        self.messages()
            .into_iter()
            .filter(|m| m.envelope_to.iter().any(|t| t == to) && m.subject.contains(subject))
            .collect()
    }

    /// Waits (up to `within`) until `n` messages to `to` with `subject` arrived.
    pub async fn wait_n(&self, to: &str, subject: &str, n: usize, within: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.to(to, subject);
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} of {n} messages to {to} with subject {subject:?} after {within:?}; received: {:?}",
                    got.len(),
                    self.messages()
                        .iter()
                        .map(|m| (&m.envelope_to, &m.subject))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first message to `to` with `subject`, waiting up to 15 s.
    pub async fn wait_for(&self, to: &str, subject: &str) -> Mail {
        self.wait_n(to, subject, 1, Duration::from_secs(15))
            .await
            .remove(0)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Points `config` at `sink`.
pub fn use_sink(config: &mut latchkey::Config, sink: &Sink) {
    config.mail.transport =
        latchkey::config::MailTransport::Smtp(secrecy::SecretString::from(sink.url()));
}
