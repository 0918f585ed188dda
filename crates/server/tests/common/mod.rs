//! Shared test harness: the real server on 127.0.0.1:0 over a real backend
//! (SQLite in a temp dir always; PostgreSQL in a fresh schema when
//! `TOLLGATE_TEST_POSTGRES_URL` is set — set but unreachable fails the test),
//! driven over HTTP with reqwest, on a [`TestClock`].
//!
//! ```ignore
//! for backend in backends("my_test") {
//!     let srv = TestServer::start(backend, CATALOG).await;
//!     srv.customer("acme", Some("pro")).await;
//!     let key = srv.mint_key(Scope::Server, None).await;
//!     let r = srv.call(Method::POST, "/v1/…", &key, Some(json!({…}))).await;
//!     assert_eq!(r.status, 200, "{}", r.body);
//!     srv.clock.advance(SignedDuration::from_hours(1));
//!     srv.stop().await;
//! }
//! ```
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::sync::Arc;

use jiff::Timestamp;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_core::catalog::load_catalog;
use tollgate_engine::{Engine, NewCustomer, SubscribeOptions, TestClock};
use tollgate_server::app::{self, StartError};
use tollgate_server::auth::create_key;
use tollgate_server::config::Settings;
use tollgate_server::state::AppState;
use tollgate_store::Store;
use tollgate_store::postgres::PgStore;
use tollgate_store::sqlite::SqliteStore;

pub use reqwest::Method as M;
pub use tollgate_server::auth::Scope;

/// A catalog with one feature of every kind and three plans (free < pro <
/// business), like the engine's test catalog.
pub const CATALOG: &str = r#"
[catalog]
name = "Test"
currency = "USD"

[features.api_calls]
kind = "metered"
name = "API calls"
reset = "billing_period"

[features.minutes]
kind = "metered"
name = "Minutes"
reset = "day"

[features.seats]
kind = "gauge"
name = "Seats"

[features.snapshots]
kind = "rate"
name = "Snapshots"
window = "1m"

[features.jobs]
kind = "concurrency"
name = "Concurrent jobs"
lease_ttl = "30s"

[features.file_mb]
kind = "cap"
name = "Max file size"

[features.git_export]
kind = "flag"
name = "Git export"

[features.export_formats]
kind = "value"
name = "Export formats"
value_type = "string_set"

[plans.free]
name = "Free"
tier = 0
base_price = "0"

[plans.free.entitlements]
api_calls = 100
minutes = "10.5"
seats = 2
snapshots = 1
jobs = 1
file_mb = 50
git_export = false
export_formats = ["txt"]

[plans.pro]
name = "Pro"
tier = 1
base_price = "20"
trial_days = 14

[plans.pro.entitlements]
api_calls = { limit = 1000, emergency_allowance = 100 }
minutes = { limit = 100, enforcement = "soft" }
seats = 10
snapshots = 10
jobs = 3
file_mb = 200
git_export = true
export_formats = ["txt", "srt", "json"]

[plans.business]
name = "Business"
tier = 2
base_price = "100"

[plans.business.entitlements]
api_calls = 100000
minutes = "unlimited"
seats = "unlimited"
snapshots = 100
jobs = 10
file_mb = 500
git_export = true
export_formats = ["txt", "srt", "json", "vtt"]
"#;

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// 2025-01-15 12:00 UTC: where every test clock starts.
pub fn t0() -> Timestamp {
    ts("2025-01-15T12:00:00Z")
}

/// Where a backend's data lives (kept across a [`TestServer::restart`]).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

pub struct Backend {
    pub name: &'static str,
    pub place: Place,
}

impl Backend {
    pub async fn store(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Sqlite(dir) => Arc::new(
                SqliteStore::open(dir.path().join("tollgate.db"))
                    .await
                    .unwrap(),
            ),
            Place::Postgres { url, schema } => Arc::new(
                PgStore::connect_with_schema(url, schema)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("TOLLGATE_TEST_POSTGRES_URL is set but unusable: {e}")
                    }),
            ),
        }
    }

    /// Drops the PostgreSQL schema (the SQLite temp dir goes with the value).
    pub async fn cleanup(&self) {
        if let Place::Postgres { url, schema } = &self.place {
            if let Ok(s) = PgStore::connect_with_schema(url, schema).await {
                let _ = s.drop_schema().await;
            }
        }
    }
}

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "srv_{test}_{}_{:x}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

/// SQLite always; PostgreSQL when `TOLLGATE_TEST_POSTGRES_URL` is set.
pub fn backends(test: &str) -> Vec<Backend> {
    let mut v = vec![Backend {
        name: "sqlite",
        place: Place::Sqlite(tempfile::tempdir().unwrap()),
    }];
    match std::env::var("TOLLGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => v.push(Backend {
            name: "postgres",
            place: Place::Postgres {
                url,
                schema: unique(test),
            },
        }),
        _ => eprintln!(
            "{test}: TOLLGATE_TEST_POSTGRES_URL not set, PostgreSQL skipped (SQLite only)"
        ),
    }
    v
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (`Value::Null` when empty; a string when not JSON).
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// The `field` of each entry of a problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|es| {
                es.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// A running server.
pub struct TestServer {
    pub backend: Backend,
    pub base_url: String,
    /// The admin key minted at first start.
    pub admin_key: String,
    pub clock: TestClock,
    pub engine: Arc<Engine>,
    pub state: AppState,
    pub client: reqwest::Client,
    pub catalog_toml: String,
    settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartError>>>,
}

impl TestServer {
    /// Starts the server over `backend` with this catalog, clock at [`t0`].
    pub async fn start(backend: Backend, catalog_toml: &str) -> TestServer {
        Self::start_with(backend, catalog_toml, Settings::embedded()).await
    }

    /// Same, with settings (rate limit, body limit, engine config).
    pub async fn start_with(
        backend: Backend,
        catalog_toml: &str,
        settings: Settings,
    ) -> TestServer {
        let clock = TestClock::new(t0());
        let (srv, key) = Self::boot(backend, catalog_toml, settings, clock).await;
        let mut srv = srv;
        srv.admin_key = key.expect("a fresh store mints an admin key at first start");
        srv
    }

    async fn boot(
        backend: Backend,
        catalog_toml: &str,
        mut settings: Settings,
        clock: TestClock,
    ) -> (TestServer, Option<String>) {
        // No background billing tick: tests close periods by hand
        // (`POST /v1/admin/invoices/run`), and a tick started late on a
        // heavily loaded machine would run on the clock the test just moved,
        // racing the test's own run (seen: `runs.rs` under a full workspace run).
        settings.billing.worker_interval_secs = 0;
        let catalog = load_catalog("test.toml", catalog_toml).unwrap();
        let store = backend.store().await;
        let app = app::start(store, catalog, Arc::new(clock.clone()), &settings)
            .await
            .unwrap_or_else(|e| panic!("the server did not start on {}: {e}", backend.name));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = app.state.clone();
        let first = app.first_admin_key.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(app, listener, async move {
            let _ = rx.await;
        }));
        let srv = TestServer {
            backend,
            base_url: format!("http://{addr}"),
            admin_key: String::new(),
            clock,
            engine: state.engine.clone(),
            state,
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
            catalog_toml: catalog_toml.to_string(),
            settings,
            shutdown: Some(tx),
            task: Some(task),
        };
        (srv, first)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Mints a key directly (as `POST /v1/keys` would) and returns its secret.
    pub async fn mint_key(&self, scope: Scope, customer: Option<&str>) -> String {
        create_key(
            self.state.store.as_ref(),
            &self.state.keys,
            "test key",
            scope,
            customer.map(str::to_string),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .secret
    }

    /// A server key (the host application's backend).
    pub async fn server_key(&self) -> String {
        self.mint_key(Scope::Server, None).await
    }

    /// A customer key for one customer.
    pub async fn customer_key(&self, customer: &str) -> String {
        self.mint_key(Scope::Customer, Some(customer)).await
    }

    /// Creates a customer through the engine (fast setup), subscribed to
    /// `plan` (status active, anchored now) when given.
    pub async fn customer(&self, id: &str, plan: Option<&str>) {
        self.engine
            .create_customer(NewCustomer::new(id))
            .await
            .unwrap();
        if let Some(plan) = plan {
            self.engine
                .subscribe(
                    id,
                    plan,
                    SubscribeOptions {
                        status: Some(tollgate_store::SubscriptionStatus::Active),
                        ..SubscribeOptions::default()
                    },
                )
                .await
                .unwrap();
        }
    }

    /// Sends a request with `key` (`""` = no Authorization header) and an
    /// optional JSON body.
    pub async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    /// Sends a raw body with a content type.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        key: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body);
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    /// Turns a response into a [`Reply`].
    pub async fn reply(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.call(Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::POST, path, key, Some(body)).await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, key, Some(body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, key, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.call(Method::DELETE, path, key, None).await
    }

    /// Graceful stop (the engine commits and snapshots), keeping the data.
    async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .unwrap()
                .unwrap_or_else(|e| panic!("the server did not stop cleanly: {e}"));
        }
    }

    /// Stops the server and starts it again on the same data (same clock;
    /// the admin key stays valid).
    pub async fn restart(mut self) -> TestServer {
        self.halt().await;
        let admin = std::mem::take(&mut self.admin_key);
        let backend = self.take_backend();
        let (mut srv, first) = Self::boot(
            backend,
            &self.catalog_toml,
            self.settings.clone(),
            self.clock.clone(),
        )
        .await;
        assert!(first.is_none(), "a restart must not mint a new admin key");
        srv.admin_key = admin;
        srv
    }

    fn take_backend(&mut self) -> Backend {
        std::mem::replace(
            &mut self.backend,
            Backend {
                name: "moved",
                place: Place::Postgres {
                    url: String::new(),
                    schema: String::new(),
                },
            },
        )
    }

    /// Stops the server and removes its data (PostgreSQL schema).
    pub async fn stop(mut self) {
        self.halt().await;
        self.backend.cleanup().await;
    }
}
