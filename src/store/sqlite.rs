//! The embedded SQLite store: one file, WAL journal, `synchronous=FULL` so a key written
//! before a provider call survives a crash of the process or the machine. One connection
//! writes, committing queued writes in groups (`writer.rs`); a small pool reads.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::migrator;
use super::sql_store::SqlStore;
use super::writer::{GroupCommit, Writes};

/// Connections that read (WAL: readers never wait for the writer).
const READERS: u32 = 4;

/// Idempotency keys in a SQLite file.
pub(super) type SqliteStore = SqlStore<sqlx::Sqlite>;

impl SqlStore<sqlx::Sqlite> {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`) and migrates it.
    /// `?synchronous=normal` trades durability across a machine crash or power loss (a
    /// process crash stays safe) for far fewer disk flushes; the default is `full`.
    pub(super) async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let (url, synchronous) = match url.split_once("?synchronous=") {
            Some((u, "normal")) => (u, SqliteSynchronous::Normal),
            Some((u, "full")) => (u, SqliteSynchronous::Full),
            Some(_) => {
                return Err(sqlx::Error::Configuration(
                    "synchronous must be full or normal".into(),
                ));
            }
            None => (url, SqliteSynchronous::Full),
        };
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = Path::new(options.get_filename()).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrator().run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        Ok(Self {
            // IMMEDIATE: the batch takes the write lock at once, waiting (busy_timeout) for
            // another process's writer rather than failing when it upgrades later.
            writes: Writes::Group(GroupCommit::start(
                writer.acquire().await?,
                "BEGIN IMMEDIATE",
            )),
            pool,
        })
    }
}
