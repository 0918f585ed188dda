//! Ledger ingest speed: appends 200,000 usage records in batches of 5,000 and
//! prints rows per second, for SQLite (a temp file) and, when
//! `TOLLGATE_TEST_POSTGRES_URL` is set, PostgreSQL (a throwaway schema).
//!
//! ```text
//! cargo run --release -p tollgate-store --example ingest_speed [-- ROWS BATCH]
//! ```
//!
//! The timed part is `Store::append_batch` only (what the engine's group-commit
//! writer calls): serialization of the records, the transaction, the fsync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_store::postgres::PgStore;
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{NewUsageRecord, Store, UsageQuery, UsageSource, WriteOp};

/// Realistic records: 1,000 customers, 4 features, fractional quantities,
/// properties, a unique idempotency key and an answer on every record.
fn records(n: usize) -> Vec<WriteOp> {
    let start = 1_709_251_200_000_000i64;
    let features = ["api_calls", "llm_tokens", "storage_gb", "gpu_seconds"];
    (0..n)
        .map(|i| {
            let i64_i = i as i64;
            let qty = Decimal::new(1 + (i64_i * 7919) % 100_000, 3);
            let at =
                Timestamp::from_microsecond(start + i64_i * 37).unwrap_or(Timestamp::UNIX_EPOCH);
            WriteOp::AppendUsage(NewUsageRecord {
                customer_id: format!("cus_{:04}", (i * 7) % 1_000),
                feature: features[i % features.len()].to_string(),
                quantity: qty,
                timestamp: at,
                recorded_at: at,
                source: UsageSource::Consume,
                properties: BTreeMap::from([
                    ("model".to_string(), json!("large-2")),
                    ("region".to_string(), json!("eu-west-3")),
                ]),
                billable: true,
                idempotency_key: Some(format!(
                    "req_{:016x}",
                    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                )),
                allocation: BTreeMap::from([("plan".to_string(), qty)]),
                answer: json!({"allowed": true, "remaining": "4821.125", "limit": "10000"}),
            })
        })
        .collect()
}

async fn run(
    store: &Arc<dyn Store>,
    rows: &[WriteOp],
    batch: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut appended = 0usize;
    for chunk in rows.chunks(batch) {
        appended += store.append_batch(chunk).await?.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = appended as f64 / secs;
    println!(
        "{:>8}: {appended} rows in batches of {batch}: {secs:.3} s, {rate:.0} rows/s",
        store.backend()
    );

    // Read paths over the ledger just written (one customer has 1/1,000 of it).
    let (from, to) = (Timestamp::UNIX_EPOCH, Timestamp::MAX);
    let started = Instant::now();
    let sums = store.sum_usage("cus_0007", "llm_tokens", from, to).await?;
    let sum_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let page = store
        .usage(&UsageQuery {
            customer_id: Some("cus_0007".to_string()),
            limit: 100,
            ..UsageQuery::default()
        })
        .await?;
    let page_ms = started.elapsed().as_secs_f64() * 1e3;
    let last = store.usage_after(store.max_seq().await? - 1, 1).await?;
    let since = last.first().map(|u| u.record.recorded_at).unwrap_or(from);
    let started = Instant::now();
    let window = store.usage_recorded_since(since).await?;
    let since_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "{:>8}: sum_usage(one customer, feature, all time) {sum_ms:.1} ms ({} buckets); \
         usage(one customer, limit 100) {page_ms:.1} ms ({} rows); \
         usage_recorded_since(last row) {since_ms:.1} ms ({} rows)",
        store.backend(),
        sums.len(),
        page.len(),
        window.len()
    );
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let batch: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5_000);
    let rows = records(total);

    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path().join("ingest.db")).await?;
    sqlite.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    run(&store, &rows, batch).await?;
    sqlite.close().await;

    match std::env::var("TOLLGATE_TEST_POSTGRES_URL") {
        Ok(url) => {
            let schema = format!("tg_ingest_{}", std::process::id());
            let pg = PgStore::connect_with_schema(&url, &schema).await?;
            pg.migrate().await?;
            let store: Arc<dyn Store> = Arc::new(pg.clone());
            let result = run(&store, &rows, batch).await;
            pg.drop_schema().await?;
            result?;
        }
        Err(_) => println!("postgres: skipped (TOLLGATE_TEST_POSTGRES_URL not set)"),
    }
    Ok(())
}
