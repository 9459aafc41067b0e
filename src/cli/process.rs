//! What every command shares with its process: the environment, the shutdown signals, and
//! the one rule for exit codes.

use std::process::ExitCode;

/// Why a command failed. Its message goes to standard error after `paygate: `; the exit
/// code is 2 for a configuration or usage error (fix the input, then run again) and 1 for
/// anything else.
pub(crate) enum Failure {
    /// Bad configuration or usage: exit 2.
    Usage(String),
    /// The command could not do its work: exit 1.
    Failed(String),
}

impl Failure {
    /// A configuration error, worded as every command words it.
    pub(crate) fn config(e: impl std::fmt::Display) -> Self {
        Self::Usage(format!("configuration error: {e}"))
    }

    /// Why a gateway could not start: a configuration error, or a store this release must
    /// not run on (said as it is, not as a configuration error).
    pub(crate) fn start(e: paygate::server::StartError) -> Self {
        match e {
            paygate::server::StartError::Config(c) => Self::config(c),
            paygate::server::StartError::NewerSchema(s) => Self::Failed(s.to_string()),
        }
    }

    pub(super) fn exit(self) -> ExitCode {
        let (message, code) = match self {
            Self::Usage(m) => (m, 2),
            Self::Failed(m) => (m, 1),
        };
        eprintln!("paygate: {message}");
        ExitCode::from(code)
    }
}

/// A non-empty environment variable.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
