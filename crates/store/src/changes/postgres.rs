//! [`super::ChangeStore`] on PostgreSQL: the attachment of pending items locks
//! their rows (`FOR UPDATE`) in one transaction, so two invoice runs cannot
//! both take them.

use sqlx::Postgres;

use super::rows::{Tables, change_store};
use crate::Result;
use crate::notify::postgres as outbox;
use crate::postgres::PgStore;

fn tables(s: &PgStore) -> Tables<'_, Postgres> {
    Tables {
        write: &s.pool,
        read: &s.pool,
    }
}

async fn begin(s: &PgStore) -> Result<sqlx::Transaction<'static, Postgres>> {
    Ok(s.pool.begin().await?)
}

change_store!(PgStore, tables, begin, " FOR UPDATE");
