//! The embedded SQLite store: one file, WAL journal, `synchronous=FULL` so a key written
//! before a provider call survives a crash of the process or the machine. One connection
//! writes, committing queued writes in groups (`group.rs`); a small pool reads.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::group::GroupCommit;
use super::sql::migrator;
use super::sql_store::SqlStore;
use super::traits::StoreError;
use super::writer::Writes;

/// Connections that read (WAL: readers never wait for the writer).
const READERS: u32 = 4;

/// Idempotency keys in a SQLite file.
pub(super) type SqliteStore = SqlStore<sqlx::Sqlite>;

impl SqlStore<sqlx::Sqlite> {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`) and migrates it.
    /// `?synchronous=normal` trades durability across a machine crash or power loss (a
    /// process crash stays safe) for far fewer disk flushes; the default is `full`.
    pub(super) async fn open(url: &str) -> Result<Self, StoreError> {
        let (url, synchronous) = match url.split_once("?synchronous=") {
            Some((u, "normal")) => (u, (SqliteSynchronous::Normal, "NORMAL")),
            Some((u, "full")) => (u, (SqliteSynchronous::Full, "FULL")),
            Some(_) => {
                return Err(StoreError::Database(sqlx::Error::Configuration(
                    "synchronous must be full or normal".into(),
                )));
            }
            None => (url, (SqliteSynchronous::Full, "FULL")),
        };
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous.0)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = Path::new(options.get_filename()).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrator()
            .run(&migrating)
            .await
            .map_err(sqlx::Error::from)?;
        migrating.close().await;
        let writes = Writes::Group(GroupCommit::start(options.get_filename(), synchronous.1)?);
        let pool = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        Ok(Self { writes, pool })
    }
}
