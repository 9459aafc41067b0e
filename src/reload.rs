//! Secrets that change on disk, taken up without a restart: each [`Reload`] (an Antom
//! account's key directories, the callers' tokens file, a PayXpert password file, the TLS
//! certificate) is read again when a file it reads changes (the directory is watched, so
//! Kubernetes' swap of a mounted Secret's `..data` symlink counts), on SIGHUP, and every
//! [`POLL_EVERY`] as a safety net. A reload is all or nothing: what does not load keeps the
//! previous value, is logged, and counts `paygate_secret_reloads_total{result="error"}`; one
//! that took new contents counts `result="ok"`. Whoever uses a secret takes the current one
//! when a call starts, so a call in flight finishes with the one it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often every secret is read again even without a file event (a file system that sends
/// none, a missed event).
pub const POLL_EVERY: Duration = Duration::from_secs(10);

/// Time given to a burst of file events (a Secret update is several) before reading.
const SETTLE: Duration = Duration::from_millis(50);

/// Something read from files that can be read again while the gateway serves.
pub trait Reload: Send + Sync {
    /// What it is, for logs: e.g. `accounts.antom keys`.
    fn name(&self) -> String;
    /// The files and directories it reads. The directory of each file, and each directory, is
    /// watched.
    fn watched(&self) -> Vec<PathBuf>;
    /// Reads them again: `Ok(true)` when it now uses new contents, `Ok(false)` when nothing
    /// changed, `Err(why)` when they do not load (the previous ones stay in use).
    fn reload(&self) -> Result<bool, String>;
}

/// The contents last read, so that unchanged files are neither parsed again nor counted.
#[derive(Debug, Default)]
pub struct Seen(Mutex<Option<Vec<u8>>>);

impl Seen {
    /// The contents as seen now: `true` when they differ from the last seen (and remembers
    /// them).
    pub fn changed(&self, contents: &[u8]) -> bool {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, contents);
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.as_deref() == Some(digest.as_ref()) {
            return false;
        }
        *seen = Some(digest.as_ref().to_vec());
        true
    }
}

/// The bytes of `paths` (each prefixed by its name and length), for [`Seen`].
pub fn contents_of(paths: &[PathBuf]) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        all.extend_from_slice(p.as_os_str().as_encoded_bytes());
        all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        all.extend_from_slice(&bytes);
    }
    Ok(all)
}

/// Every secret of a gateway that can be read again.
#[derive(Default, Clone)]
pub struct Reloader {
    items: Vec<Arc<dyn Reload>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.items.iter().map(|i| i.name()))
            .finish()
    }
}

impl Reloader {
    /// Adds what can be reloaded.
    pub fn add(&mut self, item: Arc<dyn Reload>) {
        self.items.push(item);
    }

    /// Nothing to reload.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Reads every secret again now (`cause`, for the log); how many took new contents and
    /// how many failed.
    pub fn reload_all(&self, cause: &str) -> (usize, usize) {
        let (mut ok, mut failed) = (0, 0);
        for item in &self.items {
            match item.reload() {
                Ok(true) => {
                    ok += 1;
                    metrics::counter!("paygate_secret_reloads_total", "result" => "ok")
                        .increment(1);
                    tracing::info!(secret = %item.name(), cause, "secret reloaded");
                }
                Ok(false) => {}
                Err(why) => {
                    failed += 1;
                    metrics::counter!("paygate_secret_reloads_total", "result" => "error")
                        .increment(1);
                    tracing::error!(secret = %item.name(), cause, error = %why,
                        "secret not reloaded: it does not load; the previous one stays in use");
                }
            }
        }
        (ok, failed)
    }

    /// The directories to watch: each watched directory, and each watched file's directory.
    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .items
            .iter()
            .flat_map(|i| i.watched())
            .filter_map(|p| {
                if p.is_dir() {
                    Some(p)
                } else {
                    p.parent().map(Path::to_path_buf)
                }
            })
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Reloads on file events, SIGHUP and every [`POLL_EVERY`], forever.
    pub async fn run(self) {
        use notify::Watcher as _;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.try_send(());
            }
        });
        let _watcher = match watcher {
            Ok(mut w) => {
                for dir in self.directories() {
                    if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e,
                            "cannot watch a secret's directory; it is read again on SIGHUP and every 10 s");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; secrets are read again on SIGHUP and every 10 s");
                None
            }
        };
        let mut hup = hangups();
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.tick().await;
        loop {
            let cause = tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                    "file change"
                }
                () = next_hangup(&mut hup) => "SIGHUP",
                _ = poll.tick() => "poll",
            };
            let me = self.clone();
            // Reading and parsing keys is blocking work.
            let _ = tokio::task::spawn_blocking(move || me.reload_all(cause)).await;
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

async fn next_hangup(h: &mut Hangups) {
    #[cfg(unix)]
    if let Some(s) = h
        && s.recv().await.is_some()
    {
        return;
    }
    let _ = h;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_tells_new_contents_once() {
        let s = Seen::default();
        assert!(s.changed(b"a"));
        assert!(!s.changed(b"a"));
        assert!(s.changed(b"b"));
        assert!(s.changed(b"a"));
    }
}
