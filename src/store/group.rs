//! SQLite's group commit: one writer thread owns the write connection. It takes whatever
//! writes have queued (up to [`MAX_BATCH`]), runs each in its own savepoint inside one
//! transaction, commits that transaction with one flush, and only then answers each write.
//! A burst of N writes costs one flush instead of N, and durability is unchanged: no write is
//! answered before the commit that holds it returned, so with `synchronous=FULL` nothing is
//! answered that is not on disk.
//!
//! The writer runs its statements itself, on the connection it owns, through the same
//! SQLite library sqlx links (rusqlite, pinned to sqlx's `libsqlite3-sys`): a batch costs one
//! wake-up of the writer and one of each caller, not a hand-off to a connection thread for
//! every statement. Writes are the store's [`Write`]s, generic over [`Tx`]; here each
//! statement runs when it is called and its future is ready when returned, so the writer
//! polls a write once to run it (a write that waits on anything else is refused).
//!
//! A write that fails with an error (not a refusal such as "the key exists", which is an
//! answer) fails its whole batch: the batch is rolled back and every write in it gets an
//! error, so a transaction SQLite may have aborted is never committed in part. A write whose
//! caller has gone before its turn is skipped.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{CachedStatement, Connection};
use tokio::sync::{mpsc, oneshot};

use super::backend::{Arg, End, Run, Tx, Write};
use super::sql::{Clock, render};
use super::traits::StoreError;

/// The most writes one commit takes.
pub(super) const MAX_BATCH: usize = 256;

/// How many writes may wait for the writer; a caller beyond that waits to queue.
const QUEUE: usize = 4096;

/// What a grouped write left for its caller, given once the batch's commit is known.
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A grouped write as the writer runs it: whether it succeeded, and its answer.
type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Answer) + Send>;

/// The queue to the writer thread, which holds the write connection.
#[derive(Debug)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Opens the write connection to the database file at `path` (migrated already) and
    /// starts the writer on it; the writer stops when the store is dropped.
    pub(super) fn start(path: &Path, synchronous: &'static str) -> Result<Self, StoreError> {
        let conn = open(path, synchronous)?;
        let (queue, jobs) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_batches(conn, jobs))
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Self { queue })
    }

    /// Queues `write` and waits for its answer, which comes after its batch committed.
    pub(super) async fn run<W: Write>(&self, write: W) -> Result<W::Out, StoreError> {
        let (tx, rx) = oneshot::channel::<Result<W::Out, StoreError>>();
        let job: Job = Box::new(move |conn| {
            if tx.is_closed() {
                // The caller is gone: nothing to do, and nobody to answer.
                let skip: Answer = Box::new(|_| ());
                return (true, skip);
            }
            let result = in_savepoint(conn, write);
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |committed| {
                let _ = tx.send(match committed {
                    Ok(()) => result,
                    Err(e) => Err(result
                        .err()
                        .unwrap_or_else(|| StoreError::GroupFailed(e.to_string()))),
                });
            });
            (ok, answer)
        });
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// The write connection, set as sqlx sets the store's others.
fn open(path: &Path, synchronous: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The writer: one transaction per batch of queued writes, answered after its commit.
fn write_batches(mut conn: Connection, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut answers = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&mut conn, &mut batch, &mut answers);
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // The writes not run (after a failed one) are dropped unanswered: their callers get
        // an error.
        batch.clear();
        for answer in answers.drain(..) {
            answer(committed.as_ref().map(|_| ()));
        }
    }
}

/// Runs `batch` in one transaction and commits it, stopping at the first write that fails.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    answers: &mut Vec<Answer>,
) -> Result<(), StoreError> {
    // IMMEDIATE: the batch takes the write lock at once, waiting (busy_timeout) for another
    // process's writer rather than failing when it upgrades later.
    statement(conn, "BEGIN IMMEDIATE")?;
    for job in batch.drain(..) {
        let (ok, answer) = job(conn);
        answers.push(answer);
        if !ok {
            return Err(StoreError::GroupFailed(
                "a write in the same group commit failed".into(),
            ));
        }
    }
    statement(conn, "COMMIT")
}

/// `write` in a savepoint of the batch's transaction, released or rolled back as it ends.
fn in_savepoint<W: Write>(conn: &mut Connection, write: W) -> Result<W::Out, StoreError> {
    statement(conn, "SAVEPOINT write")?;
    let end = at_once(write.run(&mut Statements(conn)))?;
    match end {
        End::Commit(out) => {
            statement(conn, "RELEASE write")?;
            Ok(out)
        }
        End::Rollback(out) => {
            statement(conn, "ROLLBACK TO write")?;
            statement(conn, "RELEASE write")?;
            Ok(out)
        }
    }
}

/// The result of a write whose statements run when called: it is done on its first poll.
fn at_once<T>(write: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    match pin!(write).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::NotImmediate),
    }
}

/// Runs one statement without arguments.
fn statement(conn: &Connection, sql: &'static str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.raw_execute())
        .map(drop)
        .map_err(StoreError::Sqlite)
}

/// The writer's connection as a [`Tx`]: each statement runs when it is called.
struct Statements<'c>(&'c mut Connection);

impl Tx for Statements<'_> {
    type Row = Vec<Value>;

    fn execute<'e>(&'e mut self, sql: &'static str, args: &[Arg<'_>]) -> Run<'e, u64> {
        let changed = bound(self.0, sql, args).and_then(|mut s| s.raw_execute());
        Box::pin(std::future::ready(
            changed.map(|n| n as u64).map_err(StoreError::Sqlite),
        ))
    }

    fn fetch_optional<'e>(
        &'e mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Run<'e, Option<Self::Row>> {
        let row = bound(self.0, sql, args).and_then(|mut s| {
            let mut rows = s.raw_query();
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let n = row.as_ref().column_count();
            (0..n)
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<_, _>>()
                .map(Some)
        });
        Box::pin(std::future::ready(row.map_err(StoreError::Sqlite)))
    }

    fn text(row: &Self::Row, i: usize) -> Result<String, StoreError> {
        match column(row, i)? {
            Value::Text(s) => Ok(s.clone()),
            other => Err(decode(i, "text", other)),
        }
    }

    fn int(row: &Self::Row, i: usize) -> Result<i64, StoreError> {
        match column(row, i)? {
            Value::Integer(v) => Ok(*v),
            other => Err(decode(i, "an integer", other)),
        }
    }
}

/// `sql` (for SQLite's clock), prepared once per connection, with `args` bound: `$n` takes
/// `args[n - 1]`, wherever and however often it appears.
fn bound<'c>(
    conn: &'c Connection,
    sql: &'static str,
    args: &[Arg<'_>],
) -> rusqlite::Result<CachedStatement<'c>> {
    let mut s = conn.prepare_cached(render(Clock::Sqlite, sql))?;
    for i in 1..=s.parameter_count() {
        let name = s.parameter_name(i).unwrap_or("?");
        let arg = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| args.get(n.checked_sub(1)?))
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?;
        match *arg {
            Arg::Text(v) => s.raw_bind_parameter(i, v)?,
            Arg::OptText(v) => s.raw_bind_parameter(i, v)?,
            Arg::Int(v) => s.raw_bind_parameter(i, v)?,
        }
    }
    Ok(s)
}

fn column(row: &[Value], i: usize) -> Result<&Value, StoreError> {
    row.get(i)
        .ok_or_else(|| StoreError::Decode(format!("no column {i}: the row has {}", row.len())))
}

fn decode(i: usize, wanted: &str, got: &Value) -> StoreError {
    StoreError::Decode(format!(
        "column {i}: expected {wanted}, found {:?}",
        got.data_type()
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

    /// Inserts an instance row.
    struct Insert(&'static str);

    impl Write for Insert {
        type Out = u64;
        async fn run<T: Tx>(self, tx: &mut T) -> Result<End<u64>, StoreError> {
            Ok(End::Commit(tx.execute(INSERT, &[Text(self.0)]).await?))
        }
    }

    /// Inserts a row, then fails.
    struct Fails;

    impl Write for Fails {
        type Out = u64;
        async fn run<T: Tx>(self, tx: &mut T) -> Result<End<u64>, StoreError> {
            tx.execute(INSERT, &[Text("failing")]).await?;
            Err(StoreError::Decode("this write fails".into()))
        }
    }

    /// Says it runs, holds the writer until released, then inserts a row.
    struct Held {
        running: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl Write for Held {
        type Out = u64;
        async fn run<T: Tx>(self, tx: &mut T) -> Result<End<u64>, StoreError> {
            let _ = self.running.send(());
            let _ = self.release.recv();
            Ok(End::Commit(tx.execute(INSERT, &[Text("first")]).await?))
        }
    }

    /// Waits on something other than its statements.
    struct Waits;

    impl Write for Waits {
        type Out = ();
        async fn run<T: Tx>(self, _: &mut T) -> Result<End<()>, StoreError> {
            tokio::task::yield_now().await;
            Ok(End::Commit(()))
        }
    }

    async fn open() -> (tempfile::TempDir, SqlStore<Sqlite>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = SqlStore::<Sqlite>::open(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_failing_write_fails_its_group_and_nothing_of_it_commits() {
        let (_dir, store) = open().await;
        // Hold the writer on a first write, so that the next three queue as one group.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (running, started) = oneshot::channel::<()>();
        let first = store.writes.write(Held {
            running,
            release: held,
        });
        let (first, (before, failing, after)) = tokio::join!(first, async {
            started.await.unwrap();
            let queued = async {
                tokio::join!(
                    store.writes.write(Insert("before")),
                    store.writes.write(Fails),
                    store.writes.write(Insert("after")),
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
        assert_eq!(store.writes.write(Insert("later")).await.unwrap(), 1);
        assert!(stored(&store, "later").await);
    }

    #[tokio::test]
    async fn a_write_that_waits_is_refused_and_the_writer_goes_on() {
        let (_dir, store) = open().await;
        let refused = store.writes.write(Waits).await.unwrap_err();
        assert!(refused.to_string().contains("waited"), "{refused}");
        assert_eq!(store.writes.write(Insert("next")).await.unwrap(), 1);
        assert!(stored(&store, "next").await);
    }

    #[tokio::test]
    async fn statements_bind_dollar_arguments_by_number_and_report_sqlite_errors() {
        let (_dir, store) = open().await;
        // `$2` before `$1`, and `$1` twice.
        let n = store
            .writes
            .one(
                "INSERT INTO instances (instance_id, started_at, heartbeat_at) \
                 VALUES ($2 || $1, length($1), 0)",
                &[Text("b"), Text("a")],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let row = sqlx::query("SELECT started_at FROM instances WHERE instance_id = 'ab'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(row.get::<i64, _>(0), 1);
        let e = store
            .writes
            .one("INSERT INTO no_such_table VALUES ($1)", &[Text("x")])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Sqlite(d) if d.to_string().contains("no_such_table")),
            "{e:?}"
        );
    }
}
