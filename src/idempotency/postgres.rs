//! The PostgreSQL store, shared by several gateway replicas. Row-level conditional
//! statements (`INSERT ... ON CONFLICT`, `UPDATE ... WHERE lease ...`) make every transition
//! atomic across replicas; migrations take PostgreSQL's advisory lock.

use std::str::FromStr;
use std::time::Duration;

/// The longest wait for a connection: with PostgreSQL down, a call answers
/// `STORE_UNAVAILABLE` after this, well within a second.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest one statement may run (lock waits included).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::sql::{Clock, HasDb, impl_store, migrator};

/// Idempotency keys in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://...`) and migrates the schema. Store operations fail
    /// fast when PostgreSQL is down or stuck: a connection is waited for at most
    /// [`ACQUIRE_TIMEOUT`], a statement runs at most [`STATEMENT_TIMEOUT`].
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?.options([(
            "statement_timeout",
            STATEMENT_TIMEOUT.as_millis().to_string(),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self { pool })
    }
}

impl HasDb for PostgresStore {
    type Db = sqlx::Postgres;
}

impl_store!(PostgresStore, "postgres", Clock::Postgres);
