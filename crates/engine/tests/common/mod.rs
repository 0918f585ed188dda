//! Shared test harness: a small catalog, the backends (SQLite on a temp file
//! always; PostgreSQL when TOLLGATE_TEST_POSTGRES_URL is set — a set but
//! unreachable URL fails the test), and engine helpers.
#![allow(dead_code, clippy::unwrap_used)]

pub mod faulty;

use std::sync::Arc;

use jiff::Timestamp;
use tollgate_core::catalog::{Catalog, load_catalog};
use tollgate_engine::{Engine, EngineConfig, NewCustomer, SubscribeOptions, TestClock};
use tollgate_store::Store;
use tollgate_store::postgres::PgStore;
use tollgate_store::sqlite::SqliteStore;

pub const CATALOG: &str = r#"
[catalog]
name = "Test"
currency = "USD"

[features.api_calls]
kind = "metered"
name = "API calls"
reset = "billing_period"

[features.minutes]
kind = "metered"
name = "Minutes"
reset = "day"

[features.seats]
kind = "gauge"
name = "Seats"

[features.snapshots]
kind = "rate"
name = "Snapshots"
window = "1m"

[features.jobs]
kind = "concurrency"
name = "Concurrent jobs"
lease_ttl = "30s"

[features.file_mb]
kind = "cap"
name = "Max file size"

[features.git_export]
kind = "flag"
name = "Git export"

[features.export_formats]
kind = "value"
name = "Export formats"
value_type = "string_set"

[plans.free]
name = "Free"
tier = 0
base_price = "0"

[plans.free.entitlements]
api_calls = 100
minutes = "10.5"
seats = 2
snapshots = 1
jobs = 1
file_mb = 50
git_export = false
export_formats = ["txt"]

[plans.pro]
name = "Pro"
tier = 1
base_price = "20"

[plans.pro.entitlements]
api_calls = { limit = 1000, emergency_allowance = 100 }
minutes = { limit = 100, enforcement = "soft" }
seats = 10
snapshots = 10
jobs = 3
file_mb = 200
git_export = true
export_formats = ["txt", "srt", "json"]

[plans.business]
name = "Business"
tier = 2
base_price = "100"

[plans.business.entitlements]
api_calls = 100000
minutes = "unlimited"
seats = "unlimited"
snapshots = 100
jobs = 10
file_mb = 500
git_export = true
export_formats = ["txt", "srt", "json", "vtt"]
"#;

pub fn catalog() -> Catalog {
    load_catalog("test.toml", CATALOG).unwrap()
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// 2025-01-15 12:00 UTC: the start of most tests.
pub fn t0() -> Timestamp {
    ts("2025-01-15T12:00:00Z")
}

/// Where a backend's data lives, so a test can reopen it (a restart).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

pub struct Backend {
    pub name: &'static str,
    pub place: Place,
}

impl Backend {
    pub async fn store(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Sqlite(dir) => {
                Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap())
            }
            Place::Postgres { url, schema } => Arc::new(
                PgStore::connect_with_schema(url, schema)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("TOLLGATE_TEST_POSTGRES_URL is set but unusable: {e}")
                    }),
            ),
        }
    }

    pub async fn cleanup(&self) {
        if let Place::Postgres { url, schema } = &self.place {
            if let Ok(s) = PgStore::connect_with_schema(url, schema).await {
                let _ = s.drop_schema().await;
                s.close().await;
            }
        }
    }
}

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "eng_{test}_{}_{:x}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

/// SQLite always; PostgreSQL when the env var is set.
pub fn backends(test: &str) -> Vec<Backend> {
    let mut v = vec![Backend {
        name: "sqlite",
        place: Place::Sqlite(tempfile::tempdir().unwrap()),
    }];
    match std::env::var("TOLLGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => v.push(Backend {
            name: "postgres",
            place: Place::Postgres {
                url,
                schema: unique(test),
            },
        }),
        _ => eprintln!(
            "{test}: TOLLGATE_TEST_POSTGRES_URL not set, PostgreSQL skipped (SQLite only)"
        ),
    }
    v
}

pub fn config() -> EngineConfig {
    EngineConfig::default()
}

pub async fn open(b: &Backend, clock: &TestClock) -> Engine {
    Engine::open(
        b.store().await,
        catalog(),
        Arc::new(clock.clone()),
        config(),
    )
    .await
    .unwrap()
}

/// A customer subscribed (active) to `plan`, anchored at the clock's now.
pub async fn customer(engine: &Engine, id: &str, plan: &str) {
    engine.create_customer(NewCustomer::new(id)).await.unwrap();
    subscribe_to(engine, id, plan).await;
}

/// Subscribes a customer (active) to `plan`; a plan change keeps the anchor.
pub async fn subscribe_to(engine: &Engine, id: &str, plan: &str) {
    engine
        .subscribe(
            id,
            plan,
            SubscribeOptions {
                status: Some(tollgate_store::SubscriptionStatus::Active),
                ..SubscribeOptions::default()
            },
        )
        .await
        .unwrap();
}

/// 64 tasks consuming `api_calls` of `customer` at once, 5 times each (1, 0.5,
/// 2, 1.5, 1 in turn: 384 units asked in all), each with its own idempotency
/// key. Returns every answer.
pub async fn race_64(engine: &Engine, customer: &str) -> Vec<tollgate_engine::Decision> {
    use rust_decimal_macros::dec;
    let mut tasks = Vec::new();
    for t in 0..64 {
        let e = engine.clone();
        let c = customer.to_string();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..5 {
                let q = [dec!(1), dec!(0.5), dec!(2), dec!(1.5), dec!(1)][(t + i) % 5];
                let req = tollgate_engine::UsageRequest::new(c.as_str(), "api_calls", q)
                    .key(format!("t{t}-{i}"));
                answers.push(e.consume(req).await.unwrap());
            }
            answers
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// The quantity allowed by these answers.
pub fn allowed_total(answers: &[tollgate_engine::Decision]) -> rust_decimal::Decimal {
    answers
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.quantity)
        .sum()
}
