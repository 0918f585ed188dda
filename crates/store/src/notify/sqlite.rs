//! [`super::NotifyStore`] on SQLite: writes through the store's single writer
//! connection (so outbox `seq` order is commit order), reads from its readers.

use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::sqlite::SqliteStore;

impl SqliteStore {
    fn notify_read(&self) -> &SqlitePool {
        &self.reader
    }

    fn notify_write(&self) -> &SqlitePool {
        &self.writer
    }

    async fn notify_begin(&self) -> crate::Result<Transaction<'static, Sqlite>> {
        self.begin_write().await
    }
}

super::sql::notify_backend!(SqliteStore, Sqlite, SqliteConnection, None);
