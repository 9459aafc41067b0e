//! What the store's code asks of a sqlx database: run one statement with its arguments, read
//! rows, read a column as text or an integer. [`Backend`] is implemented once, for every sqlx
//! database with the types the store uses, so `sql_store.rs` holds the store's logic once for
//! SQLite and PostgreSQL, as plain generic code. The only per-database facts are in
//! [`Dialect`]: its clock expression, its name and how it counts affected rows.
//!
//! A [`Write`] is statements that hold together, written once over [`Tx`] (statements inside
//! one transaction): a sqlx transaction runs it on PostgreSQL, SQLite's group-commit writer
//! (`group.rs`) runs it on its own connection.

use std::future::Future;
use std::pin::Pin;

use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row as _, Type};

use super::sql::{Clock, render};
use super::traits::StoreError;

/// A value bound to a statement's next `$n`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// Text.
    Text(&'a str),
    /// Text or NULL.
    OptText(Option<&'a str>),
    /// A 64-bit integer (times are Unix ms).
    Int(i64),
}

/// An [`Arg`] that owns its text, for a write that runs after its caller handed it over.
#[derive(Debug, Clone)]
pub(crate) enum ArgBuf {
    /// Text.
    Text(String),
    /// Text or NULL.
    OptText(Option<String>),
    /// A 64-bit integer.
    Int(i64),
}

impl ArgBuf {
    /// `arg`, owned.
    pub(crate) fn of(arg: &Arg<'_>) -> Self {
        match *arg {
            Arg::Text(v) => ArgBuf::Text(v.to_owned()),
            Arg::OptText(v) => ArgBuf::OptText(v.map(str::to_owned)),
            Arg::Int(v) => ArgBuf::Int(v),
        }
    }

    /// The [`Arg`] it holds.
    pub(crate) fn view(&self) -> Arg<'_> {
        match self {
            ArgBuf::Text(v) => Arg::Text(v),
            ArgBuf::OptText(v) => Arg::OptText(v.as_deref()),
            ArgBuf::Int(v) => Arg::Int(*v),
        }
    }
}

/// Statements inside one write's transaction, and its rows' columns read back by type: what
/// a write (`writer.rs`) runs on. Implemented by a sqlx transaction on any [`Backend`], and
/// by SQLite's group-commit writer (`group.rs`), where each statement runs at once on the
/// writer's own thread and its future is ready when returned.
pub(crate) trait Tx: Send {
    /// A row a query returned.
    type Row: Send;
    /// Runs `sql` with `args`; how many rows it changed.
    fn execute<'e>(&'e mut self, sql: &'static str, args: &[Arg<'_>]) -> Run<'e, u64>;
    /// Runs `sql` with `args`; its first row, if any.
    fn fetch_optional<'e>(
        &'e mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Run<'e, Option<Self::Row>>;
    /// Column `i` as text.
    fn text(row: &Self::Row, i: usize) -> Result<String, StoreError>;
    /// Column `i` as an integer.
    fn int(row: &Self::Row, i: usize) -> Result<i64, StoreError>;
}

impl<DB: Backend> Tx for sqlx::Transaction<'_, DB> {
    type Row = DB::Row;

    fn execute<'e>(&'e mut self, sql: &'static str, args: &[Arg<'_>]) -> Run<'e, u64> {
        let run = DB::execute(self, sql, args);
        Box::pin(async move { Ok(run.await?) })
    }

    fn fetch_optional<'e>(
        &'e mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Run<'e, Option<Self::Row>> {
        let run = DB::fetch_optional(self, sql, args);
        Box::pin(async move { Ok(run.await?) })
    }

    fn text(row: &Self::Row, i: usize) -> Result<String, StoreError> {
        Ok(DB::text(row, i)?)
    }

    fn int(row: &Self::Row, i: usize) -> Result<i64, StoreError> {
        Ok(DB::int(row, i)?)
    }
}

/// How a write ends: its transaction kept or undone, and its answer either way.
#[derive(Debug)]
pub(crate) enum End<R> {
    /// Keep what the write did.
    Commit(R),
    /// Undo what the write did; its answer stands.
    Rollback(R),
}

/// Statements that hold together, run inside one transaction (see `writer.rs`).
pub(crate) trait Write: Send + 'static {
    /// The write's answer.
    type Out: Send + 'static;
    /// Runs the statements on `tx`.
    fn run<T: Tx>(
        self,
        tx: &mut T,
    ) -> impl Future<Output = Result<End<Self::Out>, StoreError>> + Send;
    /// The same write as one statement, for a database that runs one
    /// ([`Dialect::ONE_STATEMENT`]), when the write has one for its case: see
    /// [`OneStatement`]. `None`: [`Write::run`] only.
    fn one_statement(&self) -> Option<OneStatement<'_, Self::Out>> {
        None
    }
}

/// A [`Write`] as one statement (`sql.rs`, "one statement per hot write"): it does exactly
/// what the write's transaction would do in the case it is written for, and answers one
/// integer, read by `answer`; in any other case it fails with `sql::FALLBACK` having changed
/// nothing, and the transaction runs instead.
pub(crate) struct OneStatement<'a, O> {
    /// The statement.
    pub(crate) sql: &'static str,
    /// Its arguments.
    pub(crate) args: Vec<Arg<'a>>,
    /// The write's answer from the statement's one integer.
    pub(crate) answer: fn(i64) -> O,
}

/// A boxed, sendable future of a statement's result, as a write sees it.
pub(crate) type Run<'e, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'e>>;

/// A boxed, sendable future of a statement's result, as sqlx gives it.
pub(crate) type DbRun<'e, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'e>>;

/// The facts that differ between the databases the store runs on.
pub(crate) trait Dialect: Database {
    /// Its clock, for `NOW_MS`.
    const CLOCK: Clock;
    /// The store's name in logs (`sqlite`, `postgres`).
    const STORE: &'static str;
    /// Whether a [`Write`]'s [`OneStatement`] runs instead of its transaction (PostgreSQL:
    /// data-modifying `WITH`, one round trip).
    const ONE_STATEMENT: bool;
    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Dialect for sqlx::Sqlite {
    const CLOCK: Clock = Clock::Sqlite;
    const STORE: &'static str = "sqlite";
    const ONE_STATEMENT: bool = false;
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for sqlx::Postgres {
    const CLOCK: Clock = Clock::Postgres;
    const STORE: &'static str = "postgres";
    const ONE_STATEMENT: bool = true;
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// One statement at a time on a connection (a pooled one, or a transaction's), and columns
/// read back by type. Statements are rendered for the database's clock.
pub(crate) trait Backend: Dialect {
    /// Runs `sql` with `args`; how many rows it changed.
    fn execute<'e>(
        conn: &'e mut Self::Connection,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, u64>;
    /// The same as [`Backend::execute`] on a pooled connection.
    fn execute_pooled<'e>(
        pool: &'e sqlx::Pool<Self>,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, u64>;
    /// The same as [`Backend::fetch_optional`] on a pooled connection.
    fn fetch_optional_pooled<'e>(
        pool: &'e sqlx::Pool<Self>,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, Option<Self::Row>>;
    /// Runs `sql` with `args` on a pooled connection; its rows.
    fn fetch_all_pooled<'e>(
        pool: &'e sqlx::Pool<Self>,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, Vec<Self::Row>>;
    /// Runs `sql` with `args`; its first row, if any.
    fn fetch_optional<'e>(
        conn: &'e mut Self::Connection,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, Option<Self::Row>>;
    /// Column `i` as text.
    fn text(row: &Self::Row, i: usize) -> Result<String, sqlx::Error>;
    /// Column `i` as text or NULL.
    fn opt_text(row: &Self::Row, i: usize) -> Result<Option<String>, sqlx::Error>;
    /// Column `i` as an integer.
    fn int(row: &Self::Row, i: usize) -> Result<i64, sqlx::Error>;
    /// Column `i` as an integer or NULL.
    fn opt_int(row: &Self::Row, i: usize) -> Result<Option<i64>, sqlx::Error>;
}

fn query<DB>(sql: &'static str, args: &[Arg<'_>]) -> sqlx::query::Query<'static, DB, DB::Arguments>
where
    DB: Dialect,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    args.iter()
        .fold(sqlx::query(render(DB::CLOCK, sql)), |q, arg| match *arg {
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
        })
}

impl<DB> Backend for DB
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> String: Decode<'t, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    fn execute<'e>(
        conn: &'e mut Self::Connection,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, u64> {
        let q = query::<DB>(sql, args);
        Box::pin(async move { Ok(DB::rows_affected(&q.execute(conn).await?)) })
    }

    fn execute_pooled<'e>(
        pool: &'e sqlx::Pool<Self>,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, u64> {
        let q = query::<DB>(sql, args);
        Box::pin(async move { Ok(DB::rows_affected(&q.execute(pool).await?)) })
    }

    fn fetch_optional_pooled<'e>(
        pool: &'e sqlx::Pool<Self>,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, Option<Self::Row>> {
        let q = query::<DB>(sql, args);
        Box::pin(q.fetch_optional(pool))
    }

    fn fetch_all_pooled<'e>(
        pool: &'e sqlx::Pool<Self>,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, Vec<Self::Row>> {
        let q = query::<DB>(sql, args);
        Box::pin(q.fetch_all(pool))
    }

    fn fetch_optional<'e>(
        conn: &'e mut Self::Connection,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> DbRun<'e, Option<Self::Row>> {
        let q = query::<DB>(sql, args);
        Box::pin(q.fetch_optional(conn))
    }

    fn text(row: &Self::Row, i: usize) -> Result<String, sqlx::Error> {
        row.try_get(i)
    }

    fn opt_text(row: &Self::Row, i: usize) -> Result<Option<String>, sqlx::Error> {
        row.try_get(i)
    }

    fn int(row: &Self::Row, i: usize) -> Result<i64, sqlx::Error> {
        row.try_get(i)
    }

    fn opt_int(row: &Self::Row, i: usize) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(i)
    }
}
