//! Where the store's writes go: [`Writes`].
//!
//! - **PostgreSQL** (`Writes::Pool`): straight to the pool, one statement or one transaction
//!   per write, as a write asks. The server batches the flushes of concurrent commits itself.
//! - **SQLite** (`Writes::Group`): to one writer task that owns the write connection. It takes
//!   whatever writes have queued (up to [`MAX_BATCH`]), runs each in its own savepoint inside
//!   one transaction, commits that transaction with one flush, and only then answers each
//!   write. A burst of N writes costs one flush instead of N, and durability is unchanged: no
//!   write is answered before the commit that holds it returned, so with `synchronous=FULL`
//!   nothing is answered that is not on disk.
//!
//! A write that fails with an error (not a refusal such as "the key exists", which is an
//! answer) fails its whole batch: the batch is rolled back and every write in it gets an
//! error, so a transaction SQLite may have aborted is never committed in part. A write whose
//! caller has gone before its turn is skipped.
//!
//! Writes are closures over owned values (`'static`), because the writer runs them after the
//! caller handed them over, and a caller that gives up must not leave anything borrowed.

use std::future::Future;
use std::pin::Pin;

use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Database, Pool};
use tokio::sync::{mpsc, oneshot};

use super::backend::{Arg, ArgBuf, Backend, Run};

/// The most writes one commit takes.
pub(super) const MAX_BATCH: usize = 256;

/// How many writes may wait for the writer; a caller beyond that waits to queue.
const QUEUE: usize = 4096;

/// A write: statements on a connection (inside a transaction when grouped), on owned values.
pub(super) type Op<DB, R> =
    Box<dyn for<'c> FnOnce(&'c mut <DB as Database>::Connection) -> Run<'c, R> + Send + 'static>;

/// What a grouped write left for its caller, given once the batch's commit is known.
type Answer = Box<dyn FnOnce(Result<(), &sqlx::Error>) + Send>;

/// A grouped write as the writer runs it: whether it succeeded, and its answer.
type Job<DB> = Box<
    dyn for<'c> FnOnce(
            &'c mut <DB as Database>::Connection,
        ) -> Pin<Box<dyn Future<Output = (bool, Answer)> + Send + 'c>>
        + Send,
>;

/// Where writes go (see the module documentation).
#[derive(Debug)]
pub(super) enum Writes<DB: Database> {
    /// Each write on the pool, on its own.
    Pool(Pool<DB>),
    /// Writes queued for the one writer task, committed in groups.
    Group(GroupCommit<DB>),
}

impl<DB: Backend> Writes<DB> {
    /// One statement; how many rows it changed.
    pub(super) async fn one(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<u64, sqlx::Error> {
        match self {
            Writes::Pool(pool) => DB::execute_pooled(pool, sql, args).await,
            Writes::Group(group) => {
                let args: Vec<ArgBuf> = args.iter().map(ArgBuf::of).collect();
                group
                    .run(Box::new(move |conn| {
                        let args: Vec<Arg<'_>> = args.iter().map(ArgBuf::view).collect();
                        DB::execute(conn, sql, &args)
                    }))
                    .await
            }
        }
    }

    /// Statements that hold together: `op` opens its own transaction on the connection it is
    /// given (a savepoint when grouped) and commits or rolls it back.
    pub(super) async fn op<R: Send + 'static>(&self, op: Op<DB, R>) -> Result<R, sqlx::Error> {
        match self {
            Writes::Pool(pool) => {
                let mut conn = pool.acquire().await?;
                op(&mut conn).await
            }
            Writes::Group(group) => group.run(op).await,
        }
    }
}

/// The queue to the writer task, which holds the write connection.
#[derive(Debug)]
pub(super) struct GroupCommit<DB: Database> {
    queue: mpsc::Sender<Job<DB>>,
}

impl<DB: Backend> GroupCommit<DB> {
    /// Starts the writer on `conn`, opening each batch's transaction with `begin`; it stops
    /// when the store is dropped.
    pub(super) fn start(conn: PoolConnection<DB>, begin: &'static str) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(conn, begin, jobs));
        Self { queue }
    }

    /// Queues `op` and waits for its answer, which comes after its batch committed.
    async fn run<R: Send + 'static>(&self, op: Op<DB, R>) -> Result<R, sqlx::Error> {
        let (tx, rx) = oneshot::channel::<Result<R, sqlx::Error>>();
        let job: Job<DB> = Box::new(move |conn| {
            Box::pin(async move {
                if tx.is_closed() {
                    // The caller is gone: nothing to do, and nobody to answer.
                    let skip: Answer = Box::new(|_| ());
                    return (true, skip);
                }
                let result = op(conn).await;
                let ok = result.is_ok();
                let answer: Answer = Box::new(move |committed| {
                    let _ = tx.send(match committed {
                        Ok(()) => result,
                        Err(e) => Err(result.err().unwrap_or_else(|| batch_failed(e))),
                    });
                });
                (ok, answer)
            })
        });
        self.queue.send(job).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// The writer: one transaction per batch of queued writes, answered after its commit.
async fn write_batches<DB: Backend>(
    mut conn: PoolConnection<DB>,
    begin: &'static str,
    mut jobs: mpsc::Receiver<Job<DB>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut answers = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let committed = async {
            let mut tx = conn.begin_with(begin).await?;
            for job in batch.drain(..) {
                let (ok, answer) = job(&mut tx).await;
                answers.push(answer);
                if !ok {
                    // Rolled back when `tx` drops; the writes not run yet are dropped below,
                    // and their callers get an error.
                    return Err(sqlx::Error::Protocol(
                        "a write in the same group commit failed".into(),
                    ));
                }
            }
            tx.commit().await
        }
        .await;
        batch.clear();
        for answer in answers.drain(..) {
            answer(committed.as_ref().map(|_| ()));
        }
    }
}

/// The error a write gets when its batch did not commit.
fn batch_failed(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!(
        "the group commit holding this write failed: {e}"
    )))
}

/// The error a write gets when the writer dropped it unrun (an earlier write of its group
/// failed) or is gone.
fn stopped() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(
        "the store's writer did not run this write (its group failed, or the writer stopped)",
    ))
}

#[cfg(test)]
mod tests {
    //! The group's rules, on a real SQLite file: a write that errs fails its whole group,
    //! nothing of that group is committed, and the writer goes on with the next group.

    use sqlx::Row as _;

    use super::*;
    use crate::store::backend::Arg::Text;
    use crate::store::sql_store::SqlStore;

    type Sqlite = sqlx::Sqlite;

    const INSERT: &str = "INSERT INTO instances (instance_id, started_at, heartbeat_at) \
         VALUES ($1, 0, 0)";

    async fn stored(store: &SqlStore<Sqlite>, id: &str) -> bool {
        sqlx::query("SELECT count(*) FROM instances WHERE instance_id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
            == 1
    }

    fn insert(id: &'static str) -> Op<Sqlite, u64> {
        Box::new(move |conn| Sqlite::execute(conn, INSERT, &[Text(id)]))
    }

    #[tokio::test]
    async fn a_failing_write_fails_its_group_and_nothing_of_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = SqlStore::<Sqlite>::open(&url).await.unwrap();
        // Hold the writer on a first write, so that the next three queue as one group.
        let (release, held) = oneshot::channel::<()>();
        let (running, started) = oneshot::channel::<()>();
        let first = store.writes.op(Box::new(move |conn| {
            Box::pin(async move {
                let _ = running.send(());
                let _ = held.await;
                Sqlite::execute(conn, INSERT, &[Text("first")]).await
            })
        }));
        let fails: Op<Sqlite, u64> = Box::new(|conn| {
            Box::pin(async move {
                Sqlite::execute(conn, INSERT, &[Text("failing")]).await?;
                Err(sqlx::Error::Protocol("this write fails".into()))
            })
        });
        let (first, (before, failing, after)) = tokio::join!(first, async {
            started.await.unwrap();
            let queued = async {
                tokio::join!(
                    store.writes.op(insert("before")),
                    store.writes.op(fails),
                    store.writes.op(insert("after")),
                )
            };
            let release = async {
                // Let the three queue (in this order), then let the writer go on.
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                let _ = release.send(());
            };
            tokio::join!(queued, release).0
        });
        assert_eq!(first.unwrap(), 1);
        assert!(
            before.is_err(),
            "a write grouped with a failing one is not answered OK"
        );
        assert!(
            failing
                .unwrap_err()
                .to_string()
                .contains("this write fails")
        );
        assert!(
            after.is_err(),
            "a write queued behind the failing one is not run"
        );
        assert!(stored(&store, "first").await);
        for id in ["before", "failing", "after"] {
            assert!(!stored(&store, id).await, "{id} was committed");
        }
        // The writer goes on.
        assert_eq!(store.writes.op(insert("later")).await.unwrap(), 1);
        assert!(stored(&store, "later").await);
    }
}
