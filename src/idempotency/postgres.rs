//! The PostgreSQL store, shared by several gateway replicas. Row-level conditional
//! statements (`INSERT ... ON CONFLICT`, `UPDATE ... WHERE lease ...`) make every transition
//! atomic across replicas; migrations take PostgreSQL's advisory lock.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::sql::{Clock, HasDb, impl_store, migrator};

/// Idempotency keys in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://...`) and migrates the schema.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self { pool })
    }
}

impl HasDb for PostgresStore {
    type Db = sqlx::Postgres;
}

impl_store!(PostgresStore, "postgres", Clock::Postgres);
