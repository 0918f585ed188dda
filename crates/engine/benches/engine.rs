//! Engine throughput benchmarks (criterion). See bench/README.md for the
//! commands and the figures measured.
//!
//! - `in_memory_decisions`: consume decisions on a hard-limited metered
//!   feature over 100,000 customers, 2 threads, no durability;
//! - `durable_consume_sqlite`: consumes acknowledged after the group commit
//!   into SQLite, 256 concurrent tasks;
//! - `ingest_sqlite` / `ingest_postgres`: batch ingestion with idempotency
//!   keys (PostgreSQL only when TOLLGATE_TEST_POSTGRES_URL is set).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal::Decimal;
use tollgate_engine::{Engine, EngineConfig, IngestEvent, SystemClock, UsageRequest};
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{CustomerRecord, Store, SubscriptionRecord, SubscriptionStatus};

/// Whether a group is selected by the command line's filter (criterion runs
/// every group function; this skips their expensive setup when filtered out).
fn wanted(group: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| group.contains(f.as_str()))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn id(i: usize) -> String {
    format!("cust-{i:06}")
}

/// Creates `n` customers on the business plan directly in the store (bulk
/// setup; the engine loads them at open).
async fn populate(store: &Arc<dyn Store>, n: usize) {
    store.migrate().await.unwrap();
    let now = jiff::Timestamp::now();
    // Publish the plans first so the subscriptions can pin version 1.
    let engine = Engine::open(
        store.clone(),
        common::catalog(),
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .await
    .unwrap();
    engine.close().await.unwrap();
    for i in 0..n {
        let c = CustomerRecord {
            id: id(i),
            name: None,
            email: None,
            currency: "USD".into(),
            time_zone: "UTC".into(),
            metadata: serde_json::json!({}),
            admin_bypass: false,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        store.insert_customer(&c).await.unwrap();
        store
            .put_subscription(&SubscriptionRecord {
                customer_id: c.id.clone(),
                plan_key: "business".into(),
                plan_version: 1,
                status: SubscriptionStatus::Active,
                anchor: now,
                trial_ends_at: None,
                canceled_at: None,
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
    }
}

async fn open(store: Arc<dyn Store>) -> Engine {
    Engine::open(
        store,
        common::catalog(),
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .await
    .unwrap()
}

/// A cheap per-thread pseudo-random sequence (no allocation, no locking).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn in_memory_decisions(c: &mut Criterion) {
    if !wanted("in_memory_decisions") {
        return;
    }
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 100_000;
    let engine = rt.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("b.db")).await.unwrap());
        populate(&store, N).await;
        open(store).await
    });
    // The ids as a request parser holds them: bytes in a buffer already in
    // cache (one contiguous table), not a heap string per id.
    let ids: Arc<Vec<[u8; 11]>> = Arc::new(
        (0..N)
            .map(|i| {
                let mut b = [0u8; 11];
                b.copy_from_slice(id(i).as_bytes());
                b
            })
            .collect(),
    );
    let mut g = c.benchmark_group("in_memory_decisions");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(8));
    // 2 threads, each deciding `iters / 2` consumes of 1 unit of a hard
    // limit (100,000 per customer) on random customers.
    g.bench_function("consume_2_threads_100k_customers", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let engine = engine.clone();
                    let ids = ids.clone();
                    s.spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                        for _ in 0..iters / 2 {
                            let i = (next(&mut x) % N as u64) as usize;
                            let id = std::str::from_utf8(&ids[i]).unwrap();
                            let d = engine
                                .consume_in_memory(id, "api_calls", Decimal::ONE)
                                .unwrap();
                            std::hint::black_box(d);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.bench_function("consume_1_thread_100k_customers", |b| {
        let mut x = 0x1234_5678_9abc_def1u64;
        b.iter(|| {
            let i = (next(&mut x) % N as u64) as usize;
            let id = std::str::from_utf8(&ids[i]).unwrap();
            std::hint::black_box(
                engine
                    .consume_in_memory(id, "api_calls", Decimal::ONE)
                    .unwrap(),
            )
        })
    });
    g.finish();
    rt.block_on(async { engine.close().await.unwrap() });
}

fn durable_consume_sqlite(c: &mut Criterion) {
    if !wanted("durable_consume_sqlite") {
        return;
    }
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 10_000;
    let engine = rt.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("d.db")).await.unwrap());
        populate(&store, N).await;
        open(store).await
    });
    let seq = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("durable_consume_sqlite");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    for (label, with_keys) in [("256_tasks_with_keys", true), ("256_tasks_no_keys", false)] {
        g.bench_function(label, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let engine = engine.clone();
                let seq = seq.clone();
                async move {
                    let tasks = 256u64;
                    let per = (iters / tasks).max(1);
                    let start = Instant::now();
                    let mut hs = Vec::new();
                    for t in 0..tasks {
                        let engine = engine.clone();
                        let seq = seq.clone();
                        hs.push(tokio::spawn(async move {
                            let mut x = 0x2545_f491_4f6c_dd1d ^ (t + 1);
                            for _ in 0..per {
                                let i = (next(&mut x) % N as u64) as usize;
                                let mut r = UsageRequest::new(id(i), "api_calls", Decimal::ONE);
                                if with_keys {
                                    r = r.key(format!("k{}", seq.fetch_add(1, Ordering::Relaxed)));
                                }
                                let d = engine.consume(r).await.unwrap();
                                std::hint::black_box(d);
                            }
                        }));
                    }
                    for h in hs {
                        h.await.unwrap();
                    }
                    start.elapsed().mul_f64(iters as f64 / (per * tasks) as f64)
                }
            })
        });
    }
    g.finish();
    rt.block_on(async { engine.close().await.unwrap() });
}

fn ingest(c: &mut Criterion, name: &str, store: Arc<dyn Store>, rt: &tokio::runtime::Runtime) {
    const N: usize = 1_000;
    const BATCH: usize = 10_000;
    let engine = rt.block_on(async {
        populate(&store, N).await;
        open(store).await
    });
    let seq = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("batches_of_10000_with_keys", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let engine = engine.clone();
            let seq = seq.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let now = jiff::Timestamp::now();
                    let events: Vec<IngestEvent> = (0..BATCH)
                        .map(|j| {
                            let k = seq.fetch_add(1, Ordering::Relaxed);
                            IngestEvent {
                                customer: id(j % N),
                                feature: "minutes".into(),
                                quantity: Decimal::new(15, 1),
                                timestamp: now,
                                idempotency_key: Some(format!("evt-{k}")),
                                properties: BTreeMap::new(),
                                billable: true,
                            }
                        })
                        .collect();
                    let start = Instant::now();
                    let r = engine.ingest(events).await.unwrap();
                    total += start.elapsed();
                    std::hint::black_box(r);
                }
                total
            }
        })
    });
    g.finish();
    rt.block_on(async { engine.close().await.unwrap() });
}

fn ingest_sqlite(c: &mut Criterion) {
    if !wanted("ingest_sqlite") {
        return;
    }
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        rt.block_on(async { Arc::new(SqliteStore::open(dir.path().join("i.db")).await.unwrap()) });
    ingest(c, "ingest_sqlite", store, &rt);
}

fn ingest_postgres(c: &mut Criterion) {
    if !wanted("ingest_postgres") {
        return;
    }
    let Ok(url) = std::env::var("TOLLGATE_TEST_POSTGRES_URL") else {
        eprintln!("ingest_postgres: TOLLGATE_TEST_POSTGRES_URL not set, skipped");
        return;
    };
    let rt = rt();
    let schema = format!("bench_ingest_{}", std::process::id());
    let pg = rt.block_on(async {
        tollgate_store::postgres::PgStore::connect_with_schema(&url, &schema)
            .await
            .unwrap()
    });
    let pg = Arc::new(pg);
    ingest(c, "ingest_postgres", pg.clone(), &rt);
    rt.block_on(async {
        let _ = pg.drop_schema().await;
    });
}

criterion_group!(
    benches,
    in_memory_decisions,
    durable_consume_sqlite,
    ingest_sqlite,
    ingest_postgres
);
criterion_main!(benches);
