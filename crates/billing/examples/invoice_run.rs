//! Invoice run benchmark: N customers with 5 metered features each, one
//! closed month, a full run (one ledger pass, chunked drafts and issuing).
//!
//! cargo run --release -p tollgate-billing --example invoice_run -- 10000 50000 100000
//!
//! For each N: a fresh SQLite file (synchronous=FULL, the default), N
//! customers on `pro` (calendar months, $49 in arrears, five per-unit
//! charges), two ledger records per customer and feature in November 2026
//! (10 per customer), then the run for November. Prints the seeding time,
//! the run time and the run time per customer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_billing::run::{RunOptions, parse_month};
use tollgate_billing::{Billing, BillingConfig};
use tollgate_core::catalog::load_catalog;
use tollgate_engine::{Engine, EngineConfig, TestClock};
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{
    CustomerRecord, NewUsageRecord, Store, SubscriptionRecord, SubscriptionStatus, UsageSource,
    WriteOp,
};

const CATALOG: &str = r#"
[catalog]
name = "bench"
currency = "USD"

[features.f1]
kind = "metered"
name = "F1"
reset = "billing_period"
[features.f2]
kind = "metered"
name = "F2"
reset = "billing_period"
[features.f3]
kind = "metered"
name = "F3"
reset = "billing_period"
[features.f4]
kind = "metered"
name = "F4"
reset = "billing_period"
[features.f5]
kind = "metered"
name = "F5"
reset = "billing_period"

[plans.pro]
name = "Pro"
tier = 1
base_price = "49.00"
anchoring = "calendar"
billing = "in_arrears"

[plans.pro.entitlements]
f1 = "unlimited"
f2 = "unlimited"
f3 = "unlimited"
f4 = "unlimited"
f5 = "unlimited"

[[plans.pro.charges]]
metric = "f1"
name = "F1"
price = { model = "per_unit", unit_price = "0.001" }
[[plans.pro.charges]]
metric = "f2"
name = "F2"
price = { model = "per_unit", unit_price = "0.004" }
[[plans.pro.charges]]
metric = "f3"
name = "F3"
price = { model = "per_unit", unit_price = "0.10" }
[[plans.pro.charges]]
metric = "f4"
name = "F4"
price = { model = "per_unit", unit_price = "0.05" }
[[plans.pro.charges]]
metric = "f5"
name = "F5"
included = 100
price = { model = "graduated", tiers = [ { up_to = 1000, unit_price = "0.01" }, { unit_price = "0.005" } ] }
"#;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn ts(s: &str) -> Res<Timestamp> {
    Ok(s.parse()?)
}

async fn seed(store: &Arc<dyn Store>, n: usize) -> Res<()> {
    let start = ts("2026-11-01T00:00:00Z")?;
    let mut ops = Vec::with_capacity(20_000);
    for i in 0..n {
        let id = format!("cus_{i:07}");
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
            .await?;
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
            .await?;
        for f in 1..=5 {
            for day in [3, 17] {
                let at = ts(&format!("2026-11-{day:02}T12:00:00Z"))?;
                let q = Decimal::from((i % 97 + 1) * f * 10);
                ops.push(WriteOp::AppendUsage(NewUsageRecord {
                    customer_id: id.clone(),
                    feature: format!("f{f}"),
                    quantity: q,
                    timestamp: at,
                    recorded_at: at,
                    source: UsageSource::Event,
                    properties: BTreeMap::new(),
                    billable: true,
                    idempotency_key: None,
                    allocation: BTreeMap::from([("plan".to_string(), q)]),
                    answer: json!({}),
                }));
            }
        }
        if ops.len() >= 20_000 {
            store.append_batch(&ops).await?;
            ops.clear();
        }
    }
    store.append_batch(&ops).await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![10_000]
    } else {
        sizes
    };
    println!("customers  seed_s  run_s  per_customer_us  ledger_rows  phases_ms");
    for n in sizes {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db")).await?);
        store.migrate().await?;
        let t = Instant::now();
        seed(&store, n).await?;
        let seed_s = t.elapsed().as_secs_f64();
        let clock = TestClock::new(ts("2026-12-01T00:00:00Z")?);
        let engine = Engine::open(
            store.clone(),
            load_catalog("bench.toml", CATALOG)?,
            Arc::new(clock),
            EngineConfig::default(),
        )
        .await?;
        let billing = Billing::new(Arc::new(engine), store.clone(), BillingConfig::default());
        let opts = RunOptions {
            month: Some(parse_month("2026-11")?),
            ..RunOptions::default()
        };
        let t = Instant::now();
        let report = billing.run_invoices(&opts, &|_| {}).await?;
        let run = t.elapsed();
        assert_eq!(report.issued, n, "{report:?}");
        let t = &report.timings;
        println!(
            "{n:>9}  {seed_s:>6.1}  {:>5.1}  {:>15.0}  {:>11}  load {} prepare {} ledger {} compute {} write {}",
            run.as_secs_f64(),
            run.as_secs_f64() * 1e6 / n as f64,
            n * 10,
            t.load_ms,
            t.prepare_ms,
            t.ledger_ms,
            t.compute_ms,
            t.write_ms
        );
    }
    Ok(())
}
