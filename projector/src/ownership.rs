//! Who applies a projection. On PostgreSQL, a session-level advisory lock per projection, held
//! on a dedicated connection: while this process lives it owns the projection; when it dies the
//! server ends the session, frees the lock, and another instance takes over on its next try.
//! On SQLite one file has one writer at a time anyway, and the checkpoint compare-and-set keeps
//! a second runner from double-applying.

use crate::db::ReadDb;
use sqlx::{Connection, PgConnection};

pub struct Ownership {
    pg: Option<(sqlx::PgPool, Option<PgConnection>)>,
    held: Vec<String>,
}

impl Ownership {
    pub async fn new(db: &ReadDb) -> Self {
        let pg = match db {
            ReadDb::Postgres(pool) => Some((pool.clone(), None)),
            ReadDb::Sqlite(_) => None,
        };
        Self {
            pg,
            held: Vec::new(),
        }
    }

    /// Tries to become the owner of `projection`; true when this runner owns it.
    pub async fn try_acquire(&mut self, projection: &str) -> bool {
        let Some((pool, conn)) = &mut self.pg else {
            self.held.push(projection.to_string());
            return true;
        };
        if conn.is_none() {
            match pool.acquire().await {
                Ok(c) => *conn = Some(c.detach()),
                Err(err) => {
                    tracing::warn!(error = %err, "no connection for projection locks");
                    return false;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match sqlx::query_scalar::<_, bool>(
            "SELECT pg_try_advisory_lock(hashtext('studio.projection.' || $1))",
        )
        .bind(projection)
        .fetch_one(&mut *c)
        .await
        {
            Ok(true) => {
                self.held.push(projection.to_string());
                true
            }
            Ok(false) => false,
            Err(err) => {
                tracing::warn!(error = %err, "projection lock connection failed");
                *conn = None;
                false
            }
        }
    }

    pub async fn release(&mut self, projection: &str) {
        self.held.retain(|p| p != projection);
        if let Some((_, Some(conn))) = &mut self.pg {
            let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('studio.projection.' || $1))")
                .bind(projection)
                .execute(&mut *conn)
                .await;
        }
    }

    pub async fn release_all(&mut self) {
        if let Some((_, conn)) = &mut self.pg {
            if let Some(mut c) = conn.take() {
                // Free the locks before the session ends, so another instance can take the
                // projections at once rather than after the server notices the closed socket.
                let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
            }
        }
        self.held.clear();
    }
}
