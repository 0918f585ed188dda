//! [`super::ChangeStore`] on SQLite: writes on the single writer connection;
//! the attachment of pending items in one `BEGIN IMMEDIATE` transaction.

use sqlx::Sqlite;

use super::rows::{Tables, change_store};
use crate::Result;
use crate::notify::sqlite as outbox;
use crate::sqlite::SqliteStore;

fn tables(s: &SqliteStore) -> Tables<'_, Sqlite> {
    Tables {
        write: &s.writer,
        read: &s.reader,
    }
}

async fn begin(s: &SqliteStore) -> Result<sqlx::Transaction<'static, Sqlite>> {
    s.begin_write().await
}

change_store!(SqliteStore, tables, begin, "");
