//! No loss and no double count across a real SIGKILL.
//!
//! The test binary re-executes itself (`child_entry`, ignored unless
//! TOLLGATE_CRASH_DB is set) as a child process that reads `key qty` lines on
//! stdin, consumes them concurrently and prints `ACK key` after each durable
//! acknowledgement. The parent kills it with SIGKILL mid-stream, restarts it
//! on the same SQLite file and retries every unacknowledged request plus some
//! acknowledged ones with the same keys. In the end every acknowledged unit
//! is counted exactly once and every key is in the ledger at most once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_engine::{Engine, NewCustomer, SubscribeOptions, TestClock, UsageRequest};
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{Store, SubscriptionStatus, UsageQuery};

const DB_VAR: &str = "TOLLGATE_CRASH_DB";

#[test]
#[ignore = "child process of semantics_sigkill_no_loss_no_double_count"]
fn child_entry() {
    let Ok(db) = std::env::var(DB_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        let clock = TestClock::new(common::t0());
        let engine = Engine::open(store, common::catalog(), Arc::new(clock), common::config())
            .await
            .unwrap();
        if engine.customer("acme").is_none() {
            engine
                .create_customer(NewCustomer::new("acme"))
                .await
                .unwrap();
            engine
                .subscribe(
                    "acme",
                    "business",
                    SubscribeOptions {
                        status: Some(SubscriptionStatus::Active),
                        ..SubscribeOptions::default()
                    },
                )
                .await
                .unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut tasks = Vec::new();
        while let Some(line) = rx.recv().await {
            let mut parts = line.split_whitespace();
            let (Some(key), Some(qty)) = (parts.next(), parts.next()) else {
                continue;
            };
            let key = key.to_string();
            let qty: Decimal = qty.parse().unwrap();
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                let d = e
                    .consume(UsageRequest::new("acme", "api_calls", qty).key(key.clone()))
                    .await
                    .unwrap();
                assert!(d.allowed);
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {key}").unwrap();
                out.flush().unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        engine.close().await.unwrap();
    });
}

fn qty_of(i: usize) -> Decimal {
    [dec!(1), dec!(0.5), dec!(2), dec!(1.25)][i % 4]
}

struct Run {
    acked: BTreeSet<String>,
}

/// Starts the child, feeds it `lines` (slowly, so the kill lands mid-stream),
/// and kills it with SIGKILL after `kill_after` acks (if given).
fn run_child(db: &std::path::Path, lines: Vec<String>, kill_after: Option<usize>) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--ignored", "--nocapture"])
        .env(DB_VAR, db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for (n, l) in lines.iter().enumerate() {
            if writeln!(stdin, "{l}").is_err() {
                return; // killed
            }
            if n % 20 == 19 {
                let _ = stdin.flush();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Dropping stdin closes it: the child finishes and exits.
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("ACK ") {
                if tx.send(k.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = false;
    while let Ok(k) = rx.recv_timeout(Duration::from_secs(60)) {
        acked.insert(k);
        if !killed && kill_after.is_some_and(|n| acked.len() >= n) {
            child.kill().unwrap(); // SIGKILL on Unix
            killed = true;
        }
        assert!(Instant::now() < deadline, "child too slow");
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let _ = feeder.join();
    if kill_after.is_some() {
        assert!(killed, "the child finished before it could be killed");
    } else {
        assert!(status.success(), "child failed: {status}");
    }
    Run { acked }
}

#[test]
fn semantics_sigkill_no_loss_no_double_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let n = 3_000;
    let all: Vec<(String, Decimal)> = (0..n).map(|i| (format!("req-{i}"), qty_of(i))).collect();
    let lines: Vec<String> = all.iter().map(|(k, q)| format!("{k} {q}")).collect();

    let first = run_child(&db, lines, Some(400));
    assert!(
        first.acked.len() >= 400 && first.acked.len() < n,
        "{}",
        first.acked.len()
    );

    // The client retries everything it has no ack for, and every 7th
    // acknowledged request too, with the same keys.
    let retry: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| !first.acked.contains(k) || i % 7 == 0)
        .map(|(_, (k, q))| format!("{k} {q}"))
        .collect();
    let retried = retry.len();
    let second = run_child(&db, retry, None);
    eprintln!(
        "first run: {} acked before SIGKILL; second run: {retried} sent, {} acked",
        first.acked.len(),
        second.acked.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        let recs = store
            .usage(&UsageQuery {
                customer_id: Some("acme".into()),
                feature: Some("api_calls".into()),
                limit: 100_000,
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        let mut per_key: BTreeMap<String, (usize, Decimal)> = BTreeMap::new();
        for r in &recs {
            let k = r.record.idempotency_key.clone().unwrap();
            let e = per_key.entry(k).or_insert((0, Decimal::ZERO));
            e.0 += 1;
            e.1 += r.record.quantity;
        }
        // Every key at most once in the ledger.
        let dups: Vec<_> = per_key.iter().filter(|(_, (c, _))| *c > 1).collect();
        assert!(dups.is_empty(), "keys counted twice: {dups:?}");
        // Every acknowledged request (in either run) counted exactly once.
        let qty: BTreeMap<&String, Decimal> = all.iter().map(|(k, q)| (k, *q)).collect();
        for k in first.acked.iter().chain(second.acked.iter()) {
            assert_eq!(per_key.get(k).map(|e| e.1), Some(qty[k]), "{k}");
        }
        // The retries covered everything: all 3,000 requests, once each.
        assert_eq!(per_key.len(), n);
        let expected: Decimal = all.iter().map(|(_, q)| *q).sum();
        let total: Decimal = recs.iter().map(|r| r.record.quantity).sum();
        assert_eq!(total, expected);

        // And the counters rebuilt on start agree with the ledger.
        let engine = Engine::open(
            store,
            common::catalog(),
            Arc::new(TestClock::new(common::t0())),
            common::config(),
        )
        .await
        .unwrap();
        let v = engine.verify("acme", "api_calls").await.unwrap();
        assert!(v.consistent, "{v:?}");
        assert_eq!(v.memory["plan"], expected);
        engine.close().await.unwrap();
    });
}
