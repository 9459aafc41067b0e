//! Where the store's writes go: [`Writes`].
//!
//! A [`Write`] (`backend.rs`) is statements that hold together, run inside one transaction;
//! it ends by saying whether that transaction is kept ([`End::Commit`]) or undone
//! ([`End::Rollback`], for a refusal such as "the key exists", which is an answer, not an
//! error). Each write is written once, generic over [`Tx`], and runs on either store:
//!
//! - **PostgreSQL** (`Writes::Pool`): on a pooled connection, one transaction per write (one
//!   statement alone needs none). The server batches the flushes of concurrent commits itself.
//!   A write that has a [`OneStatement`] for its case (the hot ones) runs as that statement
//!   first, one round trip; when it falls back (`sql::FALLBACK`), its transaction decides.
//! - **SQLite** (`Writes::Group`): on the group-commit writer (`group.rs`), which owns the
//!   write connection on its own thread and commits whatever writes have queued as one
//!   transaction with one flush (each write in its own savepoint), answering each write only
//!   after that commit returned.
//!
//! Writes own their values (`'static`, see `owned.rs`), because the writer runs them after
//! the caller handed them over, and a caller that gives up must not leave anything borrowed.

use sqlx::Pool;

use super::backend::{Arg, ArgBuf, Backend, End, OneStatement, Tx, Write};
use super::group::GroupCommit;
use super::sql::FALLBACK;
use super::traits::StoreError;

/// Whether `e` is a [`OneStatement`] leaving its case to the write's transaction.
fn fell_back(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("22P02") && d.message().contains(FALLBACK)
        }
        _ => false,
    }
}

/// One statement; how many rows it changed.
pub(super) struct One {
    sql: &'static str,
    args: Vec<ArgBuf>,
}

impl Write for One {
    type Out = u64;

    async fn run<T: Tx>(self, tx: &mut T) -> Result<End<u64>, StoreError> {
        let args: Vec<Arg<'_>> = self.args.iter().map(ArgBuf::view).collect();
        Ok(End::Commit(tx.execute(self.sql, &args).await?))
    }
}

/// Where writes go (see the module documentation).
#[derive(Debug)]
pub(super) enum Writes<DB: sqlx::Database> {
    /// Each write on a pooled connection, on its own.
    Pool(Pool<DB>),
    /// Writes queued for SQLite's group-commit writer.
    Group(GroupCommit),
}

impl<DB: Backend> Writes<DB> {
    /// One statement; how many rows it changed.
    pub(super) async fn one(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        match self {
            Writes::Pool(pool) => Ok(DB::execute_pooled(pool, sql, args).await?),
            Writes::Group(group) => {
                let args = args.iter().map(ArgBuf::of).collect();
                group.run(One { sql, args }).await
            }
        }
    }

    /// `write` in its own transaction (a savepoint in a group), kept or undone as it ends.
    pub(super) async fn write<W: Write>(&self, write: W) -> Result<W::Out, StoreError> {
        match self {
            Writes::Pool(pool) => {
                if DB::ONE_STATEMENT
                    && let Some(one) = write.one_statement()
                {
                    let OneStatement { sql, args, answer } = one;
                    match DB::fetch_optional_pooled(pool, sql, &args).await {
                        Ok(Some(row)) => return Ok(answer(DB::int(&row, 0)?)),
                        Ok(None) => return Err(sqlx::Error::RowNotFound.into()),
                        Err(e) if fell_back(&e) => {
                            tracing::debug!("a one-statement write fell back to its transaction");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                let mut tx = pool.begin().await?;
                match write.run(&mut tx).await? {
                    End::Commit(out) => {
                        tx.commit().await?;
                        Ok(out)
                    }
                    End::Rollback(out) => {
                        tx.rollback().await?;
                        Ok(out)
                    }
                }
            }
            Writes::Group(group) => group.run(write).await,
        }
    }
}
