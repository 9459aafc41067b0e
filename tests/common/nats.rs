//! A NATS server with JetStream of the test's own (its own port and store folder), which the
//! test may stop and start again, and what its stream holds.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::process::free_port;
use super::provision::command;

/// `nats-server -js -sd DIR -p PORT`, stopped when dropped.
pub struct Nats {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// One message the stream holds.
#[derive(Debug, Clone)]
pub struct Held {
    pub subject: String,
    /// Header name (as sent) and value.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Held {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Nats {
    pub fn start() -> Self {
        let mut n = Nats {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
        };
        n.start_again();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Starts it (again, on the same port and store) and waits until it takes connections.
    pub fn start_again(&mut self) {
        let bin = command("nats-server", "nats-server");
        let child = Command::new(bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it at once.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message of `stream`, in its order.
    pub async fn held(&self, stream: &str) -> Vec<Held> {
        let client = async_nats::connect(self.url()).await.unwrap();
        let js = jetstream::new(client);
        let Ok(mut s) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let info = s.info().await.unwrap().clone();
        let mut got = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if info.state.messages == 0 {
                break;
            }
            let Ok(m) = s.get_raw_message(seq).await else {
                continue;
            };
            let headers = m
                .headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_owned()))
                })
                .collect();
            got.push(Held {
                subject: m.subject.to_string(),
                headers,
                body: serde_json::from_slice(&m.payload).unwrap(),
            });
        }
        got
    }

    /// Waits until `stream` holds `n` messages (or `limit` passes), and returns them.
    pub async fn wait_for(&self, stream: &str, n: usize, limit: Duration) -> Vec<Held> {
        let end = Instant::now() + limit;
        loop {
            let held = self.held(stream).await;
            if held.len() >= n || Instant::now() > end {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
