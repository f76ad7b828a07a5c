//! The read side's database: the same SQLite file or PostgreSQL database as the log, reached
//! through one enum so every projection's SQL is written once. The SQL sticks to what both
//! engines share (`$N` parameters, `ON CONFLICT … DO UPDATE`, `TEXT`/`BIGINT`/`DOUBLE PRECISION`).

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use sqlx::{Postgres, Sqlite, Transaction};

const POOL_SIZE: u32 = 4;

#[derive(Clone)]
pub enum ReadDb {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One transaction on either backend.
pub enum ReadTx {
    /// On SQLite a write transaction also holds its turn at the file's in-process write gate
    /// (`eventlog::store::sqlite::write_gate`) until it ends.
    Sqlite(
        Transaction<'static, Sqlite>,
        Option<tokio::sync::OwnedMutexGuard<()>>,
    ),
    Postgres(Transaction<'static, Postgres>),
}

/// A value bound into portable SQL. Nulls keep their type: PostgreSQL refuses a text-typed
/// NULL for a BIGINT column.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(Some(v.to_string()))
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(Some(v))
    }
}
impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        SqlValue::Text(v)
    }
}
impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(Some(v))
    }
}
impl From<u64> for SqlValue {
    fn from(v: u64) -> Self {
        SqlValue::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<Option<u64>> for SqlValue {
    fn from(v: Option<u64>) -> Self {
        SqlValue::Int(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(Some(v))
    }
}
impl From<Option<f64>> for SqlValue {
    fn from(v: Option<f64>) -> Self {
        SqlValue::Real(v)
    }
}

/// Runs `$body` with `$conn` bound to the backend's connection or pool, once per backend type.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::ReadDb::Sqlite($pool) => $body,
            $crate::db::ReadDb::Postgres($pool) => $body,
        }
    };
}

/// Like [`on_db!`] for an open transaction; `$conn` is `&mut Connection`.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::db::ReadTx::Sqlite(tx, _) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::db::ReadTx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// Binds a list of [`SqlValue`]s onto a query, whatever its backend.
#[macro_export]
macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut q = $query;
        for v in $values {
            q = match v {
                $crate::db::SqlValue::Text(s) => q.bind(s.clone()),
                $crate::db::SqlValue::Int(i) => q.bind(*i),
                $crate::db::SqlValue::Real(f) => q.bind(*f),
            };
        }
        q
    }};
}

impl ReadDb {
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let options = eventlog::store::sqlite::connect_options(url)?;
            Ok(ReadDb::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .connect_with(options)
                    .await?,
            ))
        } else {
            Ok(ReadDb::Postgres(
                PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .connect(url)
                    .await?,
            ))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            ReadDb::Sqlite(_) => "sqlite",
            ReadDb::Postgres(_) => "postgres",
        }
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`):
    /// a deferred transaction that reads and then writes can fail at once with SQLITE_BUSY when
    /// the log's writer committed in between, instead of waiting its turn.
    pub async fn begin_write(&self) -> Result<ReadTx, sqlx::Error> {
        Ok(match self {
            ReadDb::Sqlite(pool) => {
                let gate = eventlog::store::sqlite::write_gate(&pool.connect_options());
                let turn = gate.lock_owned().await;
                ReadTx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?, Some(turn))
            }
            ReadDb::Postgres(pool) => ReadTx::Postgres(pool.begin().await?),
        })
    }

    /// A read transaction that sees one consistent snapshot: the checkpoint and the rows it
    /// vouches for come from the same moment.
    pub async fn begin_read(&self) -> Result<ReadTx, sqlx::Error> {
        Ok(match self {
            ReadDb::Sqlite(pool) => ReadTx::Sqlite(pool.begin().await?, None),
            ReadDb::Postgres(pool) => ReadTx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
        })
    }
}

impl ReadTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            ReadTx::Sqlite(tx, _turn) => tx.commit().await,
            ReadTx::Postgres(tx) => tx.commit().await,
        }
    }

    pub async fn execute(&mut self, sql: &str, values: &[SqlValue]) -> Result<u64, sqlx::Error> {
        on_tx!(self, conn => Ok(bind_all!(sqlx::query(sql), values).execute(conn).await?.rows_affected()))
    }

    /// Runs a query whose first column is TEXT and returns it per row.
    pub async fn texts(
        &mut self,
        sql: &str,
        values: &[SqlValue],
    ) -> Result<Vec<String>, sqlx::Error> {
        on_tx!(self, conn => bind_all!(sqlx::query_scalar::<_, String>(sql), values).fetch_all(conn).await)
    }

    /// Runs a query returning `(TEXT, TEXT)` rows.
    pub async fn text_pairs(
        &mut self,
        sql: &str,
        values: &[SqlValue],
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        on_tx!(self, conn => bind_all!(sqlx::query_as::<_, (String, String)>(sql), values).fetch_all(conn).await)
    }

    /// Runs a query whose first column is a BIGINT, if it returns a row.
    pub async fn int(
        &mut self,
        sql: &str,
        values: &[SqlValue],
    ) -> Result<Option<i64>, sqlx::Error> {
        on_tx!(self, conn => bind_all!(sqlx::query_scalar::<_, i64>(sql), values).fetch_optional(conn).await)
    }
}
