//! Alert delivery, measured on loopback (bench/README.md, "Webhooks"):
//!
//! 1. latency: a real server (SQLite, system clock) and a webhook receiver on
//!    127.0.0.1; one customer after another consumes 80 of 100 units over
//!    HTTP, which crosses the 80 % threshold; measured from the start of the
//!    consume request to the signed webhook's arrival (p50, p99, max);
//! 2. throughput: N events already in the outbox, one endpoint; the worker's
//!    time from start to the last delivery accepted.
//!
//! ```sh
//! cargo run --release -p tollgate-server --example webhook_bench -- [CUSTOMERS] [EVENTS] [POLL_MS]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use serde_json::json;
use tokio::sync::mpsc;
use tollgate_core::catalog::load_catalog;
use tollgate_engine::{NewCustomer, SubscribeOptions, SystemClock};
use tollgate_notify::{NewEndpoint, Notifier, NotifyConfig};
use tollgate_server::config::Settings;
use tollgate_store::Store;
use tollgate_store::notify::OutboxEvent;

const CATALOG: &str = r#"
[catalog]
name = "Bench"
currency = "USD"

[features.api_calls]
kind = "metered"
name = "API calls"
reset = "billing_period"

[plans.free]
name = "Free"
tier = 0
base_price = "0"

[plans.free.entitlements]
api_calls = 100
"#;

type Arrivals = mpsc::UnboundedSender<(String, Instant)>;

async fn receive(State(tx): State<Arrivals>, body: String) -> &'static str {
    let at = Instant::now();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let customer = v["customer_id"].as_str().unwrap_or_default().to_string();
    let _ = tx.send((customer, at));
    "ok"
}

async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

fn notify_config(poll_ms: u64) -> NotifyConfig {
    NotifyConfig {
        allowed_networks: vec!["127.0.0.1/32".parse().unwrap()],
        poll_interval_ms: poll_ms,
        ..NotifyConfig::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency(customers: usize, poll_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        tollgate_store::sqlite::SqliteStore::open(dir.path().join("bench.db"))
            .await
            .unwrap(),
    );
    let mut settings = Settings::embedded();
    settings.notify = notify_config(poll_ms);
    let catalog = load_catalog("bench.toml", CATALOG).unwrap();
    let app = tollgate_server::app::start(store, catalog, Arc::new(SystemClock), &settings)
        .await
        .unwrap();
    let key = app.first_admin_key.clone().unwrap();
    let state = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_server::app::run(app, listener, async move {
        let _ = stopped.await;
    }));
    let (url, mut arrivals) = receiver().await;
    state
        .notifier
        .create_endpoint(NewEndpoint {
            url,
            enabled: true,
            ..NewEndpoint::default()
        })
        .await
        .unwrap();
    for i in 0..customers {
        let id = format!("c{i}");
        state
            .engine
            .create_customer(NewCustomer::new(&id))
            .await
            .unwrap();
        state
            .engine
            .subscribe(&id, "free", SubscribeOptions::default())
            .await
            .unwrap();
    }
    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(customers);
    for i in 0..customers {
        let id = format!("c{i}");
        let started = Instant::now();
        let r = http
            .post(format!("{base}/v1/check"))
            .bearer_auth(&key)
            .json(&json!({"customer": id, "feature": "api_calls", "quantity": 80, "consume": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        loop {
            let (who, at) = arrivals.recv().await.unwrap();
            if who == id {
                samples.push(at - started);
                break;
            }
        }
    }
    samples.sort();
    println!(
        "latency, crossing consume -> webhook received ({customers} alerts, poll {poll_ms} ms): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&samples, 0.50).as_secs_f64() * 1e3,
        pct(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

async fn throughput(events: usize, poll_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        tollgate_store::sqlite::SqliteStore::open(dir.path().join("bench.db"))
            .await
            .unwrap(),
    );
    store.migrate().await.unwrap();
    let notifier = Arc::new(
        Notifier::new(store.clone(), Arc::new(SystemClock), notify_config(poll_ms)).unwrap(),
    );
    let (url, mut arrivals) = receiver().await;
    notifier
        .create_endpoint(NewEndpoint {
            url,
            enabled: true,
            ..NewEndpoint::default()
        })
        .await
        .unwrap();
    let now = jiff::Timestamp::now();
    let batch: Vec<OutboxEvent> = (0..events)
        .map(|i| OutboxEvent {
            id: format!("evt_bench_{i}"),
            event_type: "usage.threshold_reached".into(),
            customer_id: Some(format!("c{i}")),
            object_key: format!("customer:c{i}"),
            object_seq: 0,
            dedup_key: None,
            payload: json!({"feature": "api_calls", "threshold": {"type": "percent", "value": "80"}, "used": "80", "limit": "100"}),
            created_at: now,
            seq: 0,
        })
        .collect();
    for chunk in batch.chunks(1000) {
        store.notify().insert_events(chunk).await.unwrap();
    }
    let (tx, shutdown) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let worker = tokio::spawn(notifier.clone().run(shutdown));
    for _ in 0..events {
        arrivals.recv().await.unwrap();
    }
    let took = started.elapsed();
    let _ = tx.send(true);
    worker.await.unwrap();
    println!(
        "throughput: {events} deliveries (fan-out, signed POST, logged) in {:.2} s = {:.0} deliveries/s (max_in_flight {})",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        notifier.config().max_in_flight,
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let customers = args.first().copied().unwrap_or(300);
    let events = args.get(1).copied().unwrap_or(5_000);
    let poll_ms = args.get(2).copied().unwrap_or(50) as u64;
    latency(customers, poll_ms).await;
    throughput(events, poll_ms).await;
}
