//! The ceiling of the HTTP benchmark (`bench/http/run.sh`): the least a JSON
//! API endpoint can do on this machine with the same stack as the server
//! (tokio, hyper, axum, serde_json). `POST /v1/check` parses a small JSON body
//! shaped like Tollgate's check request, adds its quantity to an atomic
//! counter, and answers a small JSON decision.
//!
//! Usage: `bench-ceiling [ADDR]` (default `127.0.0.1:8099`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// The same allocator as `tollgate serve`, so the ratio compares the work done,
/// not the allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Deserialize)]
struct CheckIn {
    customer: String,
    feature: String,
    quantity: u64,
    #[serde(default)]
    consume: bool,
}

#[derive(Debug, Serialize)]
struct DecisionOut {
    allowed: bool,
    customer: String,
    feature: String,
    used: String,
}

async fn check(State(total): State<Arc<AtomicU64>>, Json(req): Json<CheckIn>) -> Json<DecisionOut> {
    let used = if req.consume {
        total.fetch_add(req.quantity, Ordering::Relaxed) + req.quantity
    } else {
        total.load(Ordering::Relaxed)
    };
    Json(DecisionOut {
        allowed: true,
        customer: req.customer,
        feature: req.feature,
        used: used.to_string(),
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".to_string());
    let app = Router::new()
        .route("/v1/check", post(check))
        .with_state(Arc::new(AtomicU64::new(0)));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bench-ceiling listening on {addr}");
    axum::serve(listener, app).await
}
