//! Prometheus metrics: the recorder (installed once per process), the request
//! middleware, and small helpers handlers call to count what they decide.
//!
//! Exposed at `GET /metrics`:
//! - `tollgate_http_requests_total{method, route, status}`
//! - `tollgate_http_request_duration_seconds{method, route, status}` (histogram)
//! - `tollgate_decisions_total{feature, allowed}` and
//!   `tollgate_denials_total{feature, reason}`
//! - `tollgate_events_ingested_total{status}`
//! - `tollgate_api_keys_active`

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds): the hot path answers in well under a millisecond
/// before its group commit.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder as the process's global recorder (once;
/// later calls return the same handle). `None` if another recorder was
/// installed first by the embedding program.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "tollgate_http_requests_total",
        "HTTP requests answered, by method, route and status"
    );
    metrics::describe_histogram!(
        "tollgate_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency, by method, route and status"
    );
    metrics::describe_counter!(
        "tollgate_decisions_total",
        "Enforcement decisions, by feature and outcome"
    );
    metrics::describe_counter!(
        "tollgate_denials_total",
        "Enforcement denials, by feature and reason"
    );
    metrics::describe_counter!(
        "tollgate_events_ingested_total",
        "Ingested usage events, by outcome (accepted, duplicate, rejected)"
    );
    metrics::describe_gauge!("tollgate_api_keys_active", "API keys in force");
    metrics::describe_counter!(
        "tollgate_group_commit_batches_total",
        "Group commits (one transaction each)"
    );
    metrics::describe_counter!(
        "tollgate_group_commit_writes_total",
        "Ledger writes committed by group commits (÷ batches = mean batch size)"
    );
    metrics::describe_counter!(
        "tollgate_group_commit_failures_total",
        "Group commits that failed (their decisions were undone)"
    );
    metrics::describe_gauge!(
        "tollgate_group_commit_seconds_total",
        "Time spent committing group commits"
    );
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    match install() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

/// Counts one enforcement decision (call it for every decision a route makes,
/// allowed or not; denials are also counted by reason when an
/// [`crate::error::ApiError::Denied`] is rendered, so do not call [`denial`]
/// for those).
pub fn decision(feature: &str, allowed: bool) {
    let i = usize::from(allowed);
    if let Some(c) = DECISION_HANDLES.read().get(feature) {
        c[i].increment(1);
        return;
    }
    let counter = |allowed: &'static str| {
        metrics::counter!(
            "tollgate_decisions_total",
            "feature" => feature.to_string(),
            "allowed" => allowed
        )
    };
    let handles = [counter("false"), counter("true")];
    handles[i].increment(1);
    if matches!(HANDLE.get(), Some(Some(_))) {
        DECISION_HANDLES.write().insert(feature.into(), handles);
    }
}

/// `tollgate_decisions_total` handles by feature (`[denied, allowed]`), as
/// for [`REQUEST_HANDLES`].
static DECISION_HANDLES: LazyLock<RwLock<HashMap<Box<str>, [Counter; 2]>>> =
    LazyLock::new(Default::default);

/// Counts one denial with its reason (`limit_reached`, `rate_limited`, …).
/// Called by the rendering of `ApiError::Denied`; call it directly only for a
/// denial answered with 200 (a dry-run check).
pub fn denial(feature: &str, reason: &str) {
    metrics::counter!(
        "tollgate_denials_total",
        "feature" => feature.to_string(),
        "reason" => reason.to_string()
    )
    .increment(1);
}

/// Counts ingested events by outcome (`accepted`, `duplicate`, `rejected`).
pub fn events_ingested(status: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!("tollgate_events_ingested_total", "status" => status).increment(count);
    }
}

/// Publishes the group-commit writer's totals: batches (commits), writes
/// committed (mean batch size = writes / batches), time spent committing, and
/// failed batches.
pub fn group_commit(stats: &tollgate_engine::WriterStats) {
    use std::sync::atomic::Ordering::Relaxed;
    metrics::counter!("tollgate_group_commit_batches_total").absolute(stats.batches.load(Relaxed));
    metrics::counter!("tollgate_group_commit_writes_total").absolute(stats.writes.load(Relaxed));
    metrics::counter!("tollgate_group_commit_failures_total")
        .absolute(stats.failures.load(Relaxed));
    metrics::gauge!("tollgate_group_commit_seconds_total")
        .set(stats.commit_micros.load(Relaxed) as f64 / 1e6);
}

/// Sets the number of keys in force.
pub fn active_keys(count: usize) {
    metrics::gauge!("tollgate_api_keys_active").set(count as f64);
}

/// Counts and times one request by matched route (`/v1/customers/{id}`,
/// never the raw path, so labels stay few): [`Track::start`] when it comes in,
/// [`Track::finish`] with its status (the server's edge middleware does both).
#[derive(Debug)]
pub struct Track {
    start: Instant,
    method: Method,
    route: Route,
}

/// The route a request is counted under.
#[derive(Debug)]
enum Route {
    Matched(MatchedPath),
    Named(&'static str),
    Unmatched,
}

impl Track {
    /// `route`: the route's name when the router did not match the request
    /// (the fast way of `POST /v1/check`, [`crate::dispatch`]).
    pub fn start(req: &Request, route: Option<&'static str>) -> Track {
        let route = match (route, req.extensions().get::<MatchedPath>()) {
            (Some(name), _) => Route::Named(name),
            (None, Some(matched)) => Route::Matched(matched.clone()),
            (None, None) => Route::Unmatched,
        };
        Track {
            start: Instant::now(),
            method: req.method().clone(),
            route,
        }
    }

    pub fn finish(self, status: StatusCode) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let route = match &self.route {
            Route::Matched(m) => m.as_str(),
            Route::Named(name) => name,
            Route::Unmatched => "unmatched",
        };
        let (count, latency) = request_handles(&self.method, route, status);
        count.increment(1);
        latency.record(elapsed);
    }
}

/// The counter and histogram of one (method, route, status).
type RequestHandles = (Counter, Histogram);

/// Handles already registered, by route then (method, status): looking a
/// handle up here allocates nothing, where `metrics::counter!` with owned
/// labels allocates them and hashes the whole key on every request.
static REQUEST_HANDLES: LazyLock<RwLock<HashMap<Box<str>, Vec<PerStatus>>>> =
    LazyLock::new(Default::default);

/// One route's handles for one method and status code.
type PerStatus = (Method, u16, RequestHandles);

fn request_handles(method: &Method, route: &str, status: StatusCode) -> RequestHandles {
    let code = status.as_u16();
    let find = |per: &Vec<PerStatus>| {
        per.iter()
            .find(|(m, c, _)| m == method && *c == code)
            .map(|(_, _, h)| h.clone())
    };
    if let Some(h) = REQUEST_HANDLES.read().get(route).and_then(find) {
        return h;
    }
    let labels = [
        ("method", method.as_str().to_string()),
        ("route", route.to_string()),
        ("status", code.to_string()),
    ];
    let handles = (
        metrics::counter!("tollgate_http_requests_total", &labels),
        metrics::histogram!("tollgate_http_request_duration_seconds", &labels),
    );
    // Cache only once the Prometheus recorder is in force (a handle taken
    // earlier would belong to the no-op recorder for good).
    if matches!(HANDLE.get(), Some(Some(_))) {
        let mut all = REQUEST_HANDLES.write();
        let per = all.entry(route.into()).or_default();
        if find(per).is_none() {
            per.push((method.clone(), code, handles.clone()));
        }
    }
    handles
}
