//! Who delivers a sink. The projector's approach (`projector::ownership`) with its own lock
//! namespace: on PostgreSQL a session-level advisory lock per sink, keyed
//! `hashtext('studio.sink.' || name)` so it never collides with a projection's
//! (`'studio.projection.' || name`), held on a dedicated connection. While this process lives it
//! owns the sink; when it dies the server ends the session, frees the lock, and another
//! instance's next attempt takes the sink over. On SQLite one file has one writer at a time, and
//! the checkpoint compare-and-set keeps a second runner from moving a checkpoint twice.

use projector::db::ReadDb;
use sqlx::{Connection, PgConnection};

const LOCK_SQL: &str = "SELECT pg_try_advisory_lock(hashtext('studio.sink.' || $1))";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock(hashtext('studio.sink.' || $1))";

pub struct SinkOwnership {
    /// The pool to take the lock connection from, and that connection once taken. Session
    /// locks belong to one connection, so it is detached from the pool: returning it would hand
    /// our locks to whoever borrows it next.
    pg: Option<(sqlx::PgPool, Option<PgConnection>)>,
}

impl SinkOwnership {
    pub fn new(db: &ReadDb) -> Self {
        let pg = match db {
            ReadDb::Postgres(pool) => Some((pool.clone(), None)),
            ReadDb::Sqlite(_) => None,
        };
        Self { pg }
    }

    /// Tries to become the owner of `sink`; true when this runner owns it.
    pub async fn try_acquire(&mut self, sink: &str) -> bool {
        let Some((pool, conn)) = &mut self.pg else {
            return true;
        };
        if conn.is_none() {
            match pool.acquire().await {
                Ok(c) => *conn = Some(c.detach()),
                Err(err) => {
                    tracing::warn!(error = %err, "no connection for sink locks");
                    return false;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match sqlx::query_scalar::<_, bool>(LOCK_SQL)
            .bind(sink)
            .fetch_one(&mut *c)
            .await
        {
            Ok(owned) => owned,
            Err(err) => {
                tracing::warn!(error = %err, "sink lock connection failed");
                *conn = None;
                false
            }
        }
    }

    pub async fn release(&mut self, sink: &str) {
        if let Some((_, Some(conn))) = &mut self.pg {
            let _ = sqlx::query(UNLOCK_SQL).bind(sink).execute(&mut *conn).await;
        }
    }

    pub async fn release_all(&mut self) {
        if let Some((_, conn)) = &mut self.pg {
            if let Some(mut c) = conn.take() {
                // Free the locks before the session ends, so another instance can take the
                // sinks at once rather than after the server notices the closed socket.
                let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
            }
        }
    }
}
