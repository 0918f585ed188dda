//! In-memory decision throughput over many customers, without criterion:
//! `cargo run --release -p tollgate-engine --example decisions -- [DB] [CUSTOMERS] [SECONDS]`.
//! The database is populated on the first run and reused afterwards (the
//! setup writes one row per customer and subscription).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tollgate_engine::{Engine, EngineConfig, NewCustomer, SubscribeOptions, SystemClock};
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{Store, SubscriptionStatus};

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let db = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "/tmp/tollgate-decisions.db".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        let engine = Engine::open(
            store,
            common::catalog(),
            Arc::new(SystemClock),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let have = (0..n)
            .filter(|i| engine.customer(&format!("cust-{i:06}")).is_some())
            .count();
        if have < n {
            let t = Instant::now();
            for i in 0..n {
                let id = format!("cust-{i:06}");
                if engine.customer(&id).is_some() {
                    continue;
                }
                engine.create_customer(NewCustomer::new(&id)).await.unwrap();
                engine
                    .subscribe(
                        &id,
                        "business",
                        SubscribeOptions {
                            status: Some(SubscriptionStatus::Active),
                            ..SubscribeOptions::default()
                        },
                    )
                    .await
                    .unwrap();
            }
            eprintln!("populated {n} customers in {:?}", t.elapsed());
        }
        engine
    });
    // The ids as a request parser would hold them: bytes in a buffer already in
    // cache (a contiguous table here), not a separate heap string per id.
    let ids: Arc<Vec<[u8; 11]>> = Arc::new(
        (0..n)
            .map(|i| {
                let mut b = [0u8; 11];
                b.copy_from_slice(format!("cust-{i:06}").as_bytes());
                b
            })
            .collect(),
    );
    for threads in [1u64, 2] {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let engine = engine.clone();
                    let ids = ids.clone();
                    s.spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                        let mut done = 0u64;
                        let until = Instant::now() + Duration::from_secs(secs);
                        while Instant::now() < until {
                            for _ in 0..1000 {
                                let i = (next(&mut x) % n as u64) as usize;
                                let id = std::str::from_utf8(&ids[i]).unwrap();
                                let d = engine
                                    .consume_in_memory(id, "api_calls", Decimal::ONE)
                                    .unwrap();
                                std::hint::black_box(d);
                            }
                            done += 1000;
                        }
                        done
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let el = start.elapsed().as_secs_f64();
        println!(
            "{threads} thread(s): {total} decisions in {el:.2} s = {:.0} decisions/s",
            total as f64 / el
        );
    }
}
