//! Peers for the delivery tests: the Python venv with the third-party tools
//! (installed by `.ci/notify-venv.sh`), a real SMTP server (aiosmtpd), the
//! Standard Webhooks verifier, and a webhook receiver (an axum app on
//! 127.0.0.1) whose answers the test controls.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The workspace root (this file is also included by the server's tests).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, installing aiosmtpd and standardwebhooks on first use.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(workspace().join(".ci/notify-venv.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/notify-venv.sh");
        assert!(out.status.success(), ".ci/notify-venv.sh failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

pub fn script(name: &str) -> PathBuf {
    workspace().join("crates/notify/tests/py").join(name)
}

/// One delivery as received, for the verifier.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Verifies each delivery with the `standardwebhooks` library from PyPI;
/// returns, per delivery, `Ok(payload id)` or the verifier's error.
pub fn verify_with_standardwebhooks(
    secret: &str,
    received: &[Received],
) -> Vec<Result<String, String>> {
    let input: Vec<Value> = received
        .iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({"secret": secret, "headers": headers, "body": r.body})
        })
        .collect();
    let mut child = Command::new(python())
        .arg(script("verify_webhooks.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the verifier");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the verifier failed");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| match r["ok"].as_bool() {
            Some(true) => Ok(r["id"].as_str().unwrap_or_default().to_string()),
            _ => Err(r["error"].as_str().unwrap_or_default().to_string()),
        })
        .collect()
}

/// The signature the `standardwebhooks` library computes.
pub fn standardwebhooks_sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let out = Command::new(python())
        .arg(script("sign_vector.py"))
        .args([secret, id, &timestamp.to_string(), body])
        .output()
        .unwrap();
    assert!(out.status.success(), "sign_vector.py failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A real SMTP server (aiosmtpd) on 127.0.0.1, writing what it receives to a
/// temporary directory.
pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// One received e-mail.
#[derive(Clone, Debug)]
pub struct Mail {
    pub rcpt: Vec<String>,
    pub raw: String,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(python())
            .arg(script("smtp_sink.py"))
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start aiosmtpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("aiosmtpd printed its port");
        SmtpSink { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| Mail {
                raw: std::fs::read_to_string(&p).unwrap(),
                rcpt: std::fs::read_to_string(p.with_extension("rcpt"))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect(),
            })
            .collect()
    }

    /// Waits (real time: the SMTP server is another process) until `n`
    /// messages arrived, at most 20 s.
    pub fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the receiver answers next.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
}

#[derive(Clone, Default)]
struct ReceiverState {
    received: Arc<Mutex<Vec<(Received, u16)>>>,
    answer: Arc<Mutex<Option<Answer>>>,
}

/// A webhook receiver on 127.0.0.1: records every request and answers 200,
/// or what [`Receiver::answer`] set.
pub struct Receiver {
    pub url: String,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(s): State<ReceiverState>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let answer = s.answer.lock().unwrap().clone().unwrap_or(Answer {
        status: 200,
        retry_after: None,
    });
    let r = Received {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body,
    };
    s.received.lock().unwrap().push((r, answer.status));
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut out = HeaderMap::new();
    if let Some(ra) = answer.retry_after {
        out.insert("retry-after", ra.parse().unwrap());
    }
    (status, out, "ok")
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = ReceiverState::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
            task,
        }
    }

    /// Answers `status` (with an optional `Retry-After`) from now on.
    pub fn answer(&self, status: u16, retry_after: Option<&str>) {
        *self.state.answer.lock().unwrap() = Some(Answer {
            status,
            retry_after: retry_after.map(str::to_string),
        });
    }

    /// Every request, with the status it was answered.
    pub fn all(&self) -> Vec<(Received, u16)> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|(_, s)| (200..300).contains(s))
            .map(|(r, _)| r)
            .collect()
    }

    /// Waits (real time, bounded) until `n` requests were accepted.
    pub async fn wait_accepted(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let a = self.accepted();
            if a.len() >= n || Instant::now() > deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a test's data lives: a SQLite file (always) or a fresh PostgreSQL
/// schema (when `TOLLGATE_TEST_POSTGRES_URL` is set; set but unusable fails).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Place {
    pub fn name(&self) -> &'static str {
        match self {
            Place::Sqlite(_) => "sqlite",
            Place::Postgres { .. } => "postgres",
        }
    }

    /// Opens (again) the store of this place, migrated.
    pub async fn open(&self) -> Arc<dyn tollgate_store::Store> {
        use tollgate_store::Store;
        let store: Arc<dyn Store> = match self {
            Place::Sqlite(dir) => Arc::new(
                tollgate_store::sqlite::SqliteStore::open(dir.path().join("tollgate.db"))
                    .await
                    .unwrap(),
            ),
            Place::Postgres { url, schema } => Arc::new(
                tollgate_store::postgres::PgStore::connect_with_schema(url, schema)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("TOLLGATE_TEST_POSTGRES_URL is set but unusable: {e}")
                    }),
            ),
        };
        store.migrate().await.unwrap();
        store
    }

    pub async fn cleanup(&self) {
        if let Place::Postgres { url, schema } = self {
            if let Ok(s) = tollgate_store::postgres::PgStore::connect_with_schema(url, schema).await
            {
                let _ = s.drop_schema().await;
            }
        }
    }
}

/// SQLite always; PostgreSQL when `TOLLGATE_TEST_POSTGRES_URL` is set.
pub fn places(test: &str) -> Vec<Place> {
    let mut v = vec![Place::Sqlite(tempfile::tempdir().unwrap())];
    match std::env::var("TOLLGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            v.push(Place::Postgres {
                url,
                schema: format!(
                    "ntf_{test}_{}_{:x}",
                    std::process::id(),
                    nanos % 0xffff_ffff
                ),
            });
        }
        _ => eprintln!(
            "{test}: TOLLGATE_TEST_POSTGRES_URL not set, PostgreSQL skipped (SQLite only)"
        ),
    }
    v
}
