//! Persistence: five store traits, one per kind of state ([`KeyStore`], [`RefundStore`],
//! [`EventStore`], [`SubscriptionStore`], and what operators read, [`OperatorStore`], in
//! `traits.rs`), their rows (`rows.rs`, `admin_rows.rs`), and one [`StoreError`].
//! `sql.rs` holds the SQL both backends run, `sql_store.rs` implements the traits once with it
//! over `backend.rs`, and `sqlite.rs` and `postgres.rs` open a store.
//! A [`Store`] is all four, as [`open`] returns it; each consumer keeps the trait it needs.

mod admin_rows;
mod admin_store;
mod backend;
mod group;
mod owned;
mod postgres;
mod rows;
mod sql;
mod sql_store;
mod sqlite;
mod traits;
mod writer;

use std::sync::Arc;

pub use self::admin_rows::*;
pub use self::rows::*;
pub use self::sql::INSTANCE_STALE;
pub use self::traits::*;

/// Opens the store at `url` (`sqlite://PATH` or `postgres://...`), migrated.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else {
        Err(StoreError::from(sqlx::Error::Configuration(
            "the store URL must start with sqlite:// or postgres://".into(),
        )))
    }
}
