//! Memory per counter and per idempotency key, and restart time with one
//! million counters in the snapshot.
//!
//! `cargo run --release -p tollgate-engine --example restart_time -- [DIR] [CUSTOMERS]`
//!
//! With the default 100,000 customers × 10 metered features = 1,000,000
//! counters. Steps: create the customers (directly in the store), open the
//! engine, count one event per (customer, feature) through `ingest` (with an
//! idempotency key each), close (which saves the snapshot), then reopen and
//! time it: once at the same instant (the 1M ledger rows are inside the 24 h
//! idempotency window and are read back as keys) and once 25 h later (only the
//! snapshot). Memory is the process's resident set (Linux /proc), so it
//! includes allocator slack: read the figures as "about".
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use tollgate_core::catalog::load_catalog;
use tollgate_engine::{Engine, EngineConfig, IngestEvent, TestClock};
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{CustomerRecord, Store, SubscriptionRecord, SubscriptionStatus};

const FEATURES: usize = 10;

fn catalog() -> tollgate_core::catalog::Catalog {
    let mut t = String::from("[catalog]\nname = \"Restart\"\ncurrency = \"USD\"\n");
    for f in 0..FEATURES {
        t.push_str(&format!(
            "[features.m{f}]\nkind = \"metered\"\nname = \"M{f}\"\nreset = \"billing_period\"\n"
        ));
    }
    t.push_str(
        "[plans.big]\nname = \"Big\"\ntier = 0\nbase_price = \"0\"\n[plans.big.entitlements]\n",
    );
    for f in 0..FEATURES {
        t.push_str(&format!("m{f} = 1000000\n"));
    }
    load_catalog("restart.toml", &t).unwrap()
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn id(i: usize) -> String {
    format!("cust-{i:06}")
}

async fn open(db: &std::path::Path, clock: &TestClock) -> (Engine, tollgate_engine::OpenStats) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).await.unwrap());
    Engine::open_with_stats(
        store,
        catalog(),
        Arc::new(clock.clone()),
        EngineConfig::default(),
    )
    .await
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "/tmp/tollgate-restart".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = std::path::Path::new(&dir).join("restart.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t0: Timestamp = "2025-01-15T12:00:00Z".parse().unwrap();
    let clock = TestClock::new(t0);
    rt.block_on(async {
        // ---- setup -------------------------------------------------------------------
        let t = Instant::now();
        let (engine, _) = open(&db, &clock).await; // publishes the plan
        engine.close().await.unwrap();
        drop(engine);
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        for i in 0..n {
            let c = CustomerRecord {
                id: id(i),
                name: None,
                email: None,
                currency: "USD".into(),
                time_zone: "UTC".into(),
                metadata: serde_json::json!({}),
                admin_bypass: false,
                created_at: t0,
                updated_at: t0,
                deleted_at: None,
            };
            store.insert_customer(&c).await.unwrap();
            store
                .put_subscription(&SubscriptionRecord {
                    customer_id: c.id,
                    plan_key: "big".into(),
                    plan_version: 1,
                    status: SubscriptionStatus::Active,
                    anchor: t0,
                    trial_ends_at: None,
                    canceled_at: None,
                    created_at: t0,
                    updated_at: t0,
                })
                .await
                .unwrap();
        }
        drop(store);
        println!("setup: {n} customers written in {:.1} s", t.elapsed().as_secs_f64());

        // ---- memory: customers only, then counters, then keys ---------------------------
        let base = rss_bytes();
        let (engine, _) = open(&db, &clock).await;
        let with_customers = rss_bytes();
        println!(
            "memory: {n} customers loaded: {:.0} MB, {:.0} bytes per customer (record, subscription, 2 inline counter slots)",
            (with_customers - base) as f64 / 1e6,
            (with_customers - base) as f64 / n as f64
        );
        // Counters without keys, in memory only (measures the counters alone).
        for f in 0..FEATURES {
            let feature = format!("m{f}");
            for i in 0..n {
                engine
                    .consume_in_memory(&id(i), &feature, Decimal::ONE)
                    .unwrap();
            }
        }
        let with_counters = rss_bytes();
        let counters = n * FEATURES;
        println!(
            "memory: {counters} counters: +{:.0} MB, {:.0} bytes per counter beyond the 2 inline slots of each customer ({} of the {counters} live outside them)",
            (with_counters.saturating_sub(with_customers)) as f64 / 1e6,
            (with_counters.saturating_sub(with_customers)) as f64 / (n * (FEATURES - 2)) as f64,
            n * (FEATURES - 2),
        );
        drop(engine);

        // ---- the ledger: 1M events with keys through ingest, then a snapshot --------------
        let (engine, _) = open(&db, &clock).await;
        let before_keys = rss_bytes();
        let t = Instant::now();
        let mut k = 0u64;
        for f in 0..FEATURES {
            let events: Vec<IngestEvent> = (0..n)
                .map(|i| {
                    k += 1;
                    IngestEvent {
                        customer: id(i),
                        feature: format!("m{f}"),
                        quantity: Decimal::new(25, 1),
                        timestamp: t0,
                        idempotency_key: Some(format!("evt-{k:012}")),
                        properties: BTreeMap::new(),
                        billable: true,
                    }
                })
                .collect();
            engine.ingest(events).await.unwrap();
        }
        let ingest_s = t.elapsed().as_secs_f64();
        let after_keys = rss_bytes();
        println!(
            "ingest: {counters} events with keys in {ingest_s:.1} s = {:.0} events/s",
            counters as f64 / ingest_s
        );
        println!(
            "memory after ingesting in 100,000-event calls: +{:.0} MB (mostly the calls' transient buffers, kept by the allocator)",
            (after_keys.saturating_sub(before_keys)) as f64 / 1e6,
        );
        // Keys alone: 200,000 more keyed events in calls of 1,000 (small
        // transient buffers), to counters that already exist.
        let extra = 200_000usize;
        let before = rss_bytes();
        let mut sent = 0usize;
        while sent < extra {
            let events: Vec<IngestEvent> = (0..1_000)
                .map(|j| {
                    k += 1;
                    IngestEvent {
                        customer: id((sent + j) % n),
                        feature: "m0".into(),
                        quantity: Decimal::ONE,
                        timestamp: t0,
                        idempotency_key: Some(format!("evt-{k:012}")),
                        properties: BTreeMap::new(),
                        billable: true,
                    }
                })
                .collect();
            engine.ingest(events).await.unwrap();
            sent += 1_000;
        }
        let after = rss_bytes();
        println!(
            "resident size after {extra} more keyed events in calls of 1,000: +{:.1} MB (includes SQLite's page cache, 64 MB per connection)",
            (after.saturating_sub(before)) as f64 / 1e6,
        );
        let fp = engine.idempotency_footprint();
        println!(
            "memory: {} idempotency keys (16-char keys) take {:.1} MB = {:.0} bytes per key (computed from the structures)",
            fp.keys,
            fp.bytes as f64 / 1e6,
            fp.bytes as f64 / fp.keys.max(1) as f64
        );
        let t = Instant::now();
        engine.close().await.unwrap();
        println!(
            "close (commit + snapshot of {counters} counters): {:.1} s",
            t.elapsed().as_secs_f64()
        );
        drop(engine);

        // ---- restarts ----------------------------------------------------------------------
        let t = Instant::now();
        let (engine, stats) = open(&db, &clock).await;
        println!(
            "restart at the same instant: {:.1} s ({} snapshot counters, {} ledger records replayed, {} keys rebuilt)",
            t.elapsed().as_secs_f64(),
            stats.snapshot_counters,
            stats.replayed_records,
            stats.idempotency_keys
        );
        let v = engine.verify("cust-000000", "m0").await.unwrap();
        assert!(v.consistent);
        drop(engine);
        clock.advance(SignedDuration::from_hours(25));
        let t = Instant::now();
        let (engine, stats) = open(&db, &clock).await;
        println!(
            "restart 25 h later (keys outside the window): {:.1} s ({} snapshot counters, {} keys)",
            t.elapsed().as_secs_f64(),
            stats.snapshot_counters,
            stats.idempotency_keys
        );
        drop(engine);
    });
}
