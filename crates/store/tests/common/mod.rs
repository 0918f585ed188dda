//! The backend harness of the store suites: every scenario runs against SQLite
//! (a temp file, always) and PostgreSQL (a fresh schema, when
//! `TOLLGATE_TEST_POSTGRES_URL` is set; set but unreachable fails).

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use tollgate_store::postgres::PgStore;
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{CustomerRecord, Store};

pub const PG_ENV: &str = "TOLLGATE_TEST_POSTGRES_URL";

pub async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("tollgate.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (Arc::new(store), dir)
}

pub fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "tg_test_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL store in a fresh schema, or `None` (with a notice) when the
/// environment variable is not set. Panics if it is set but unusable.
pub async fn pg_store() -> Option<PgStore> {
    let Ok(url) = std::env::var(PG_ENV) else {
        eprintln!("skipping PostgreSQL suite: {PG_ENV} not set");
        return None;
    };
    let store = PgStore::connect_with_schema(&url, &unique_schema())
        .await
        .unwrap_or_else(|e| panic!("{PG_ENV} is set to {url:?} but PostgreSQL is unusable: {e}"));
    store.migrate().await.unwrap();
    Some(store)
}

/// Runs one scenario against every backend: `scenario::sqlite` and `scenario::postgres`.
#[macro_export]
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn sqlite() {
                let (store, _dir) = $crate::common::sqlite_store().await;
                super::$scenario(store).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(pg) = $crate::common::pg_store().await {
                    super::$scenario(std::sync::Arc::new(pg.clone())).await;
                    pg.drop_schema().await.unwrap();
                }
            }
        }
    )*};
}

/// Inserts a plain customer `id` (no name, e-mail or metadata; UTC) created
/// at `at`.
pub async fn insert_customer(store: &Arc<dyn Store>, id: &str, currency: &str, at: Timestamp) {
    store
        .insert_customer(&CustomerRecord {
            id: id.to_string(),
            name: None,
            email: None,
            currency: currency.to_string(),
            time_zone: "UTC".to_string(),
            metadata: serde_json::json!({}),
            admin_bypass: false,
            created_at: at,
            updated_at: at,
            deleted_at: None,
        })
        .await
        .unwrap();
}
