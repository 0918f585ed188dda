//! An invoice run killed with SIGKILL in the middle, then run again: exactly
//! one invoice per customer and period, numbers gapless.
//!
//! The test binary re-executes itself (`child_entry`, ignored unless
//! TOLLGATE_INVOICE_CRASH_DB is set) as a child that runs the invoice run for
//! 10,000 customers on a SQLite file and prints `PROGRESS n` after each chunk.
//! The parent kills it with SIGKILL once some chunks are done, checks that the
//! run was cut off, then runs the child again to the end.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_billing::run::{RunOptions, parse_month};
use tollgate_billing::{Billing, BillingConfig};
use tollgate_core::billing::InvoiceStatus;
use tollgate_engine::{Engine, EngineConfig, TestClock};
use tollgate_store::billing::InvoiceFilter;
use tollgate_store::sqlite::{Durability, SqliteStore};
use tollgate_store::{
    CustomerRecord, NewUsageRecord, Store, SubscriptionRecord, SubscriptionStatus, UsageSource,
    WriteOp,
};

const DB_VAR: &str = "TOLLGATE_INVOICE_CRASH_DB";
const CUSTOMERS: usize = 10_000;

async fn open(db: &str) -> Arc<dyn Store> {
    let store = SqliteStore::open_with(db, Durability::Process)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

/// 10,000 customers on `pro` since 2026-11-01, each with `i % 100` calls.
async fn seed(store: &Arc<dyn Store>) {
    let start = common::ts("2026-11-01T00:00:00Z");
    let mut ops = Vec::new();
    for i in 0..CUSTOMERS {
        let id = format!("cus_{i:05}");
        store
            .insert_customer(&CustomerRecord {
                id: id.clone(),
                name: Some(format!("Customer {i}")),
                email: None,
                currency: "USD".into(),
                time_zone: "UTC".into(),
                metadata: json!({}),
                admin_bypass: false,
                created_at: start,
                updated_at: start,
                deleted_at: None,
            })
            .await
            .unwrap();
        store
            .put_subscription(&SubscriptionRecord {
                customer_id: id.clone(),
                plan_key: "pro".into(),
                plan_version: 1,
                status: SubscriptionStatus::Active,
                anchor: start,
                trial_ends_at: None,
                canceled_at: None,
                created_at: start,
                updated_at: start,
            })
            .await
            .unwrap();
        let q = Decimal::from(i % 100);
        ops.push(WriteOp::AppendUsage(NewUsageRecord {
            customer_id: id,
            feature: "calls".into(),
            quantity: q,
            timestamp: common::ts("2026-11-15T00:00:00Z"),
            recorded_at: common::ts("2026-11-15T00:00:00Z"),
            source: UsageSource::Consume,
            properties: BTreeMap::new(),
            billable: true,
            idempotency_key: None,
            allocation: BTreeMap::from([("plan".to_string(), q)]),
            answer: json!({}),
        }));
    }
    store.append_batch(&ops).await.unwrap();
}

#[test]
#[ignore = "child process of an_invoice_run_killed_mid_way_then_rerun_gives_one_invoice_each"]
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
        let store = open(&db).await;
        let clock = TestClock::new(common::ts("2026-12-01T00:00:00Z"));
        let engine = Engine::open(
            store.clone(),
            common::catalog(),
            Arc::new(clock),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        let billing = Billing::new(Arc::new(engine), store, BillingConfig::default());
        let opts = RunOptions {
            month: Some(parse_month("2026-11").unwrap()),
            chunk: 250,
        };
        let report = billing
            .run_invoices(&opts, &|p| println!("PROGRESS {}", p.done))
            .await
            .unwrap();
        println!(
            "DONE created={} resumed={} issued={} already={}",
            report.created, report.resumed, report.issued, report.already_invoiced
        );
    });
}

/// Runs the child; kills it after the first progress line at or past
/// `kill_at` periods done, if given. Returns the child's lines.
fn run_child(db: &std::path::Path, kill_at: Option<usize>) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--ignored", "--nocapture"])
        .env(DB_VAR, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let done: Option<usize> = line
            .strip_prefix("PROGRESS ")
            .and_then(|n| n.trim().parse().ok());
        lines.push(line);
        if let (Some(n), Some(k)) = (done, kill_at) {
            if n >= k {
                child.kill().unwrap(); // SIGKILL on Unix
                break;
            }
        }
    }
    let _ = child.wait();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_run_killed_mid_way_then_rerun_gives_one_invoice_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    {
        let store = open(db.to_str().unwrap()).await;
        seed(&store).await;
    }

    let first = run_child(&db, Some(2_000));
    assert!(
        !first.iter().any(|l| l.starts_with("DONE")),
        "the run finished before the kill: {:?}",
        first.last()
    );
    let store = open(db.to_str().unwrap()).await;
    let after_kill = store
        .billing()
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap();
    assert!(
        !after_kill.is_empty() && after_kill.len() < CUSTOMERS,
        "the kill should land mid-run: {} invoices",
        after_kill.len()
    );

    let second = run_child(&db, None);
    let done = second
        .iter()
        .find(|l| l.starts_with("DONE"))
        .unwrap_or_else(|| panic!("the rerun did not finish: {second:?}"));
    assert!(done.contains("created="), "{done}");

    let all = store
        .billing()
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap();
    // Exactly one invoice per customer, every one issued.
    assert_eq!(all.len(), CUSTOMERS);
    let mut per_customer: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &all {
        *per_customer.entry(i.customer_id.as_str()).or_default() += 1;
        assert_eq!(i.status, InvoiceStatus::Open, "{}", i.id);
    }
    assert_eq!(per_customer.len(), CUSTOMERS);
    assert!(per_customer.values().all(|n| *n == 1));
    // Numbers 1..=10,000, no gap, no repeat.
    let mut numbers: Vec<&str> = all.iter().filter_map(|i| i.number.as_deref()).collect();
    numbers.sort_unstable();
    let expected: Vec<String> = (1..=CUSTOMERS).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected);
    // And the amounts: 49.00 + (i % 100) calls × 0.001.
    let c = all.iter().find(|i| i.customer_id == "cus_00099").unwrap();
    assert_eq!(c.totals.total, dec!(49.10));

    // A third run changes nothing.
    let third = run_child(&db, None);
    let done = third.iter().find(|l| l.starts_with("DONE")).unwrap();
    assert_eq!(
        done.as_str(),
        "DONE created=0 resumed=0 issued=0 already=10000"
    );
}
