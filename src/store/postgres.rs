//! The PostgreSQL store, shared by several gateway replicas. Row-level conditional
//! statements (`INSERT ... ON CONFLICT`, `UPDATE ... WHERE lease ...`) make every transition
//! atomic across replicas; migrations take PostgreSQL's advisory lock.

use std::str::FromStr;
use std::time::Duration;

/// The longest wait for a connection: with PostgreSQL down, a call answers
/// `STORE_UNAVAILABLE` after this, well within a second.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest one statement may run (lock waits included).
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for the first connection at start: an unreachable or silent server is a
/// start-up error naming it within this time.
pub(super) const START_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use super::sql::migrator;
use super::sql_store::SqlStore;
use super::writer::Writes;

/// Idempotency keys in PostgreSQL.
pub(super) type PostgresStore = SqlStore<sqlx::Postgres>;

impl SqlStore<sqlx::Postgres> {
    /// Connects to `url` (`postgres://...`) and migrates the schema. Store operations fail
    /// fast when PostgreSQL is down or stuck: a connection is waited for at most
    /// [`ACQUIRE_TIMEOUT`], a statement runs at most [`STATEMENT_TIMEOUT`].
    pub(super) async fn open(url: &str) -> Result<Self, sqlx::Error> {
        // Every statement is a point read or write by key: its generic plan is the plan, so
        // it is made once per connection instead of again for each call's values.
        let options = PgConnectOptions::from_str(url)?.options([
            (
                "statement_timeout",
                STATEMENT_TIMEOUT.as_millis().to_string(),
            ),
            ("plan_cache_mode", "force_generic_plan".to_string()),
        ]);
        // The first connection names the server it could not reach (never the password), and
        // gets longer than a call's acquire timeout: a remote server's TLS handshake may need it.
        let target = format!(
            "PostgreSQL at {}:{} (database {:?})",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let unreachable = |e: String| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("{target}: {e}"),
            ))
        };
        let mut first = tokio::time::timeout(START_CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer within {} s",
                    START_CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| match e {
                sqlx::Error::Io(io) => unreachable(io.to_string()),
                other => unreachable(other.to_string()),
            })?;
        migrator().run(&mut first).await?;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self {
            writes: Writes::Pool(pool.clone()),
            pool,
        })
    }
}
