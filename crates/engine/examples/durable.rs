//! Durable consume throughput through the group commit, without criterion:
//! `cargo run --release -p tollgate-engine --example durable -- [sqlite|postgres] [TASKS] [SECONDS] [MAX_WAIT_US] [IDLE_GAP_US]`
//! (postgres reads TOLLGATE_TEST_POSTGRES_URL). Prints acknowledged consumes/s
//! and the writer's batch figures.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tollgate_engine::{
    Engine, EngineConfig, NewCustomer, SubscribeOptions, SystemClock, UsageRequest,
};
use tollgate_store::{Store, SubscriptionStatus};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).cloned().unwrap_or_else(|| "sqlite".into());
    let tasks: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    // Optional: max wait and idle gap of the group commit, in microseconds.
    let mut config = EngineConfig::default();
    if let Some(w) = args.get(4).and_then(|s| s.parse().ok()) {
        config.writer.max_wait = Duration::from_micros(w);
    }
    if let Some(g) = args.get(5).and_then(|s| s.parse().ok()) {
        config.writer.idle_gap = Duration::from_micros(g);
    }
    let customers = 1_000usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async move {
        let mut pg = None;
        let store: Arc<dyn Store> = match backend.as_str() {
            "postgres" => {
                let url = std::env::var("TOLLGATE_TEST_POSTGRES_URL").unwrap();
                let s = Arc::new(
                    tollgate_store::postgres::PgStore::connect_with_schema(
                        &url,
                        &format!("bench_durable_{}", std::process::id()),
                    )
                    .await
                    .unwrap(),
                );
                pg = Some(s.clone());
                s
            }
            _ => Arc::new(
                tollgate_store::sqlite::SqliteStore::open(dir.path().join("d.db"))
                    .await
                    .unwrap(),
            ),
        };
        let engine = Engine::open(store, common::catalog(), Arc::new(SystemClock), config)
            .await
            .unwrap();
        for i in 0..customers {
            let id = format!("cust-{i:06}");
            engine.create_customer(NewCustomer::new(&id)).await.unwrap();
            engine
                .subscribe(&id, "business", SubscribeOptions {
                    status: Some(SubscriptionStatus::Active),
                    ..SubscribeOptions::default()
                })
                .await
                .unwrap();
        }
        let done = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU64::new(0));
        let b0 = engine.writer_stats().batches.load(Ordering::Relaxed);
        let w0 = engine.writer_stats().writes.load(Ordering::Relaxed);
        let c0 = engine.writer_stats().commit_micros.load(Ordering::Relaxed);
        let start = Instant::now();
        let until = start + Duration::from_secs(secs);
        let mut hs = Vec::new();
        for t in 0..tasks {
            let engine = engine.clone();
            let done = done.clone();
            let seq = seq.clone();
            hs.push(tokio::spawn(async move {
                let mut i = t as usize;
                while Instant::now() < until {
                    i = (i * 7 + 13) % customers;
                    let k = seq.fetch_add(1, Ordering::Relaxed);
                    let r = UsageRequest::new(format!("cust-{i:06}"), "api_calls", Decimal::ONE)
                        .key(format!("k{k}"));
                    let d = engine.consume(r).await.unwrap();
                    assert!(d.allowed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
        let el = start.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        let s = engine.writer_stats();
        let b = s.batches.load(Ordering::Relaxed) - b0;
        let w = s.writes.load(Ordering::Relaxed) - w0;
        let c = s.commit_micros.load(Ordering::Relaxed) - c0;
        println!(
            "{tasks} tasks: {n} acknowledged consumes in {el:.1} s = {:.0}/s; {b} commits, {:.0} writes per commit, {:.2} ms per commit, commit time {:.0} % of wall time",
            n as f64 / el,
            w as f64 / b.max(1) as f64,
            c as f64 / 1000.0 / b.max(1) as f64,
            c as f64 / 1e4 / el
        );
        engine.close().await.unwrap();
        if let Some(pg) = pg {
            let _ = pg.drop_schema().await;
        }
    });
}
