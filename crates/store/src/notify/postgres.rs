//! [`super::NotifyStore`] on PostgreSQL.
//!
//! A `BIGSERIAL` hands out numbers at insert time, not at commit time, so two
//! transactions inserting events concurrently (the group commit and, say, the
//! invoice run) could commit seq 12 before seq 11, and a reader following
//! `events_after(cursor)` would skip 11 forever. Every transaction that inserts
//! outbox events therefore first takes one transaction-scoped advisory lock,
//! held until it commits: outbox writers are serialized and `seq` order is
//! commit order. Transactions without events never take it.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::postgres::PgStore;

/// The advisory lock key of the outbox ("tg-outbx" as bytes, arbitrary).
const OUTBOX_LOCK: &str = "SELECT pg_advisory_xact_lock(8387222766398445688)";

impl PgStore {
    fn notify_read(&self) -> &PgPool {
        &self.pool
    }

    fn notify_write(&self) -> &PgPool {
        &self.pool
    }

    async fn notify_begin(&self) -> crate::Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

super::sql::notify_backend!(PgStore, Postgres, PgConnection, Some(OUTBOX_LOCK));
