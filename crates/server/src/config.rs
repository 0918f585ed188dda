//! The server's configuration, in layers (later ones win):
//!
//! 1. built-in defaults;
//! 2. a TOML file: `--config FILE`, or `tollgate.toml` in the working directory
//!    when present;
//! 3. environment variables `TOLLGATE_*` (`TOLLGATE_LISTEN`,
//!    `TOLLGATE_DATA_DIR`, `TOLLGATE_STORAGE_URL`, `TOLLGATE_CATALOG`,
//!    `TOLLGATE_LOG_FORMAT`, `TOLLGATE_BODY_LIMIT_BYTES`; nested settings with a
//!    double underscore: `TOLLGATE_RATE_LIMIT__PER_SECOND`,
//!    `TOLLGATE_ENGINE__GROUP_COMMIT_MAX_WAIT_MS`, …);
//! 4. command-line flags (`--listen`, `--data-dir`, `--storage-url`, `--catalog`).
//!
//! [`Config::resolve`] then checks the whole and reports every problem at once,
//! each naming its setting, so a bad start says exactly what to fix.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "./data"
//! storage_url = "sqlite://./data/tollgate.db"   # or postgres://user@host/db
//! catalog = "catalog.toml"
//! log_format = "text"                           # or "json"
//! body_limit_bytes = 16777216
//! worker_threads = 2                           # async runtime threads; default: one per core
//!
//! [rate_limit]
//! per_second = 2000
//! burst = 4000
//!
//! [engine]
//! group_commit_max_batch = 2000
//! group_commit_pipeline_batch = 32   # SQLite: batch cap, see docs/engine.md
//! group_commit_max_wait_ms = 0      # 0 = commit whatever is queued at once
//! snapshot_interval_secs = 30
//! idempotency_window_hours = 24
//!
//! [notify]                      # alert delivery; every setting in docs/webhooks.md
//! allow_private_networks = false
//! allowed_networks = ["10.1.0.0/16"]
//! admin_emails = ["ops@example.com"]
//! [notify.smtp]
//! url = "smtp://127.0.0.1:25"
//! from = "Tollgate <alerts@example.com>"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use tollgate_engine::{EngineConfig, WriterConfig};

/// The file read from the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "tollgate.toml";

/// Environment variables read (after the `TOLLGATE_` prefix, `__` = nesting).
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "storage_url",
    "catalog",
    "log_format",
    "body_limit_bytes",
    "worker_threads",
    "rate_limit.per_second",
    "rate_limit.burst",
    "engine.group_commit_max_batch",
    "engine.group_commit_pipeline_batch",
    "engine.group_commit_max_wait_ms",
    "engine.snapshot_interval_secs",
    "engine.idempotency_window_hours",
    "notify.enabled",
    "notify.allow_private_networks",
    // Payment provider secrets belong in the environment, not in a file.
    "billing.stripe.secret_key",
    "billing.stripe.webhook_secret",
    "billing.stripe.base_url",
];

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Per-key request rate limit (a token bucket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key.
    pub per_second: u32,
    /// Requests a key may make at once before the sustained rate applies.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 2_000,
            burst: 4_000,
        }
    }
}

/// Engine tuning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Most writes per group commit.
    pub group_commit_max_batch: usize,
    /// Most writes per group commit when the store syncs in a thread of its
    /// own (SQLite), so that several batches are in flight.
    pub group_commit_pipeline_batch: usize,
    /// Longest a write waits for companions before its batch commits.
    pub group_commit_max_wait_ms: u64,
    /// How often the counter snapshot is saved.
    pub snapshot_interval_secs: u64,
    /// How long idempotency keys are remembered.
    pub idempotency_window_hours: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        let d = EngineConfig::default();
        EngineSettings {
            group_commit_max_batch: d.writer.max_batch,
            group_commit_pipeline_batch: d.writer.pipeline_batch,
            group_commit_max_wait_ms: u64::try_from(d.writer.max_wait.as_millis()).unwrap_or(0),
            snapshot_interval_secs: d.writer.snapshot_interval.as_secs(),
            idempotency_window_hours: 24,
        }
    }
}

/// The configuration as written (every layer merged), before checking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (`IP:PORT`; port 0 picks a free one).
    pub listen: String,
    /// Where the SQLite database (and by default the catalog) live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default `sqlite://<data_dir>/tollgate.db`.
    pub storage_url: Option<String>,
    /// The catalog file; default `<data_dir>/catalog.toml`.
    pub catalog: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Largest request body accepted.
    pub body_limit_bytes: u64,
    /// Threads of the async runtime (HTTP and the engine); `None` = one per
    /// core. Measured on 2 cores (bench/README.md, session 6): one thread
    /// served consumes at about the same rate as two (+3 % median, within the
    /// machine's noise), the store's ledger and fsync threads using the other
    /// core.
    pub worker_threads: Option<usize>,
    pub rate_limit: RateLimitConfig,
    pub engine: EngineSettings,
    /// Invoices: issuer, numbering, payment terms, tax.
    pub billing: tollgate_billing::BillingConfig,
    /// Alert delivery: webhooks, e-mail, retries, the SSRF guard (docs/webhooks.md).
    pub notify: tollgate_notify::NotifyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            storage_url: None,
            catalog: None,
            log_format: LogFormat::Text,
            body_limit_bytes: 16 * 1024 * 1024,
            worker_threads: None,
            rate_limit: RateLimitConfig::default(),
            engine: EngineSettings::default(),
            billing: tollgate_billing::BillingConfig::default(),
            notify: tollgate_notify::NotifyConfig::default(),
        }
    }
}

/// Settings given on the command line (the last layer); `None` = not given.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<PathBuf>,
}

/// What is wrong with the configuration: every problem, each naming its setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(p: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![p.into()],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Where the configuration file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    /// `--config FILE`: it must exist.
    Explicit(PathBuf),
    /// `tollgate.toml` in this directory if present.
    Discover(PathBuf),
    /// No file (tests, or `--no-config`).
    None,
}

impl Config {
    /// Merges defaults, the file, `TOLLGATE_*` environment variables and the
    /// command-line overrides.
    pub fn load(file: &ConfigFile, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            ConfigFile::Explicit(path) => {
                if !path.is_file() {
                    return Err(ConfigError::one(format!(
                        "--config: the file {} does not exist",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            ConfigFile::Discover(dir) => {
                let path = dir.join(DEFAULT_CONFIG_FILE);
                if path.is_file() {
                    figment = figment.merge(Toml::file_exact(path));
                }
            }
            ConfigFile::None => {}
        }
        figment = figment
            .merge(Env::prefixed("TOLLGATE_").split("__").only(ENV_KEYS))
            .merge(Serialized::globals(overrides));
        figment.extract().map_err(|e| ConfigError {
            problems: e.into_iter().map(describe_figment_error).collect(),
        })
    }

    /// The same layers without the environment (for tests and embedding).
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .merge(Serialized::globals(overrides))
            .extract()
            .map_err(|e| ConfigError {
                problems: e.into_iter().map(describe_figment_error).collect(),
            })
    }

    /// Checks the whole configuration and resolves defaults that depend on
    /// other settings. Every problem is reported, not just the first.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let listen = match self.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "listen: {:?} is not an address such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    self.listen
                ));
                None
            }
        };
        let storage_url = match self.storage_url() {
            Ok(url) => url,
            Err(e) => {
                problems.extend(e.problems);
                String::new()
            }
        };
        let catalog = match &self.catalog {
            Some(path) => {
                if !path.is_file() {
                    problems.push(format!(
                        "catalog: the file {} does not exist",
                        path.display()
                    ));
                }
                Some(path.clone())
            }
            None => {
                let path = self.data_dir.join("catalog.toml");
                if path.is_file() {
                    Some(path)
                } else {
                    problems.push(format!(
                        "catalog: no catalog given and {} does not exist; pass --catalog FILE \
                         (e.g. --catalog examples/catalogs/voca.toml), set TOLLGATE_CATALOG, or put \
                         `catalog = \"FILE\"` in tollgate.toml",
                        path.display()
                    ));
                    None
                }
            }
        };
        if self.body_limit_bytes < 1024 {
            problems.push(format!(
                "body_limit_bytes: {} is too small (at least 1024)",
                self.body_limit_bytes
            ));
        }
        let body_limit = usize::try_from(self.body_limit_bytes).unwrap_or(usize::MAX);
        if self.worker_threads == Some(0) {
            problems.push("worker_threads: must be at least 1".into());
        }
        if self.rate_limit.per_second == 0 {
            problems.push("rate_limit.per_second: must be at least 1".into());
        }
        if self.rate_limit.burst == 0 {
            problems.push("rate_limit.burst: must be at least 1".into());
        }
        if self.engine.group_commit_max_batch == 0 {
            problems.push("engine.group_commit_max_batch: must be at least 1".into());
        }
        if self.engine.group_commit_pipeline_batch == 0 {
            problems.push("engine.group_commit_pipeline_batch: must be at least 1".into());
        }
        if self.engine.group_commit_max_wait_ms > 10_000 {
            problems.push(format!(
                "engine.group_commit_max_wait_ms: {} ms is too long (at most 10000)",
                self.engine.group_commit_max_wait_ms
            ));
        }
        if self.engine.snapshot_interval_secs == 0 {
            problems.push("engine.snapshot_interval_secs: must be at least 1".into());
        }
        if self.engine.idempotency_window_hours == 0 {
            problems.push("engine.idempotency_window_hours: must be at least 1".into());
        }
        problems.extend(self.notify.problems());
        match (listen, catalog, problems.is_empty()) {
            (Some(listen), Some(catalog), true) => Ok(Settings {
                listen,
                data_dir: self.data_dir.clone(),
                storage_url,
                catalog,
                log_format: self.log_format,
                body_limit,
                worker_threads: self.worker_threads,
                rate_limit: self.rate_limit.clone(),
                engine: self.engine_config(),
                billing: self.billing.clone(),
                notify: self.notify.clone(),
            }),
            _ => Err(ConfigError { problems }),
        }
    }

    /// The storage URL (checked), for commands that need only the store
    /// (`tollgate migrate`, `tollgate keys`).
    pub fn storage_url(&self) -> Result<String, ConfigError> {
        match &self.storage_url {
            Some(url) => {
                let url = url.trim().to_string();
                if let Some(path) = url.strip_prefix("sqlite://") {
                    if path.is_empty() {
                        return Err(ConfigError::one(
                            "storage_url: \"sqlite://\" needs a file path, e.g. sqlite://./data/tollgate.db",
                        ));
                    }
                } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    let scheme = url.split("://").next().unwrap_or_default();
                    return Err(ConfigError::one(format!(
                        "storage_url: unknown storage scheme {scheme:?} in {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                        crate::app::redact(&url)
                    )));
                }
                Ok(url)
            }
            None => Ok(format!(
                "sqlite://{}",
                self.data_dir.join("tollgate.db").to_string_lossy()
            )),
        }
    }

    /// The engine settings this configuration asks for.
    pub fn engine_config(&self) -> EngineConfig {
        let e = &self.engine;
        EngineConfig {
            writer: WriterConfig {
                max_batch: e.group_commit_max_batch.max(1),
                pipeline_batch: e.group_commit_pipeline_batch.max(1),
                max_wait: Duration::from_millis(e.group_commit_max_wait_ms),
                snapshot_interval: Duration::from_secs(e.snapshot_interval_secs.max(1)),
                ..WriterConfig::default()
            },
            idempotency_window: SignedDuration::from_hours(i64::from(
                e.idempotency_window_hours.max(1),
            )),
            ..EngineConfig::default()
        }
    }
}

/// The checked configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub storage_url: String,
    pub catalog: PathBuf,
    pub log_format: LogFormat,
    pub body_limit: usize,
    /// Threads of the async runtime; `None` = one per core.
    pub worker_threads: Option<usize>,
    pub rate_limit: RateLimitConfig,
    pub engine: EngineConfig,
    pub billing: tollgate_billing::BillingConfig,
    pub notify: tollgate_notify::NotifyConfig,
}

impl Settings {
    /// Settings for embedding and tests: no catalog file or listen address
    /// needed (the caller supplies the store, catalog and listener).
    pub fn embedded() -> Settings {
        let c = Config::default();
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: c.data_dir.clone(),
            storage_url: String::new(),
            catalog: PathBuf::new(),
            log_format: c.log_format,
            body_limit: usize::try_from(c.body_limit_bytes).unwrap_or(usize::MAX),
            worker_threads: c.worker_threads,
            rate_limit: c.rate_limit.clone(),
            engine: c.engine_config(),
            billing: c.billing.clone(),
            notify: c.notify.clone(),
        }
    }
}

/// One figment error as `setting: problem`.
fn describe_figment_error(e: figment::Error) -> String {
    use figment::error::Kind;
    let path = e.path.join(".");
    let source = e
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(s) => format!(" (from {} {s})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    let msg = match &e.kind {
        Kind::UnknownField(field, expected) => {
            let at = if path.is_empty() {
                field.clone()
            } else {
                format!("{path}.{field}")
            };
            return format!(
                "{at}: unknown setting{source}; known settings here: {}",
                expected.join(", ")
            );
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    if path.is_empty() {
        format!("{msg}{source}")
    } else {
        format!("{path}: {msg}{source}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("c.toml");
        std::fs::write(&catalog, "").unwrap();
        let c = Config::from_toml(
            "listen = \"127.0.0.1:9000\"\n[rate_limit]\nper_second = 5\n",
            &Overrides {
                catalog: Some(catalog.clone()),
                data_dir: Some(dir.path().to_path_buf()),
                ..Overrides::default()
            },
        )
        .unwrap();
        let s = c.resolve().unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.rate_limit.per_second, 5);
        assert_eq!(s.rate_limit.burst, 4000);
        assert_eq!(s.catalog, catalog);
        assert!(s.storage_url.starts_with("sqlite://"));
        assert!(s.storage_url.ends_with("tollgate.db"));
        assert_eq!(s.body_limit, 16 * 1024 * 1024);
    }

    #[test]
    fn stripe_settings_are_read_from_billing_stripe() {
        let c = Config::from_toml(
            "[billing.stripe]\nsecret_key = \"sk_test_1\"\nwebhook_secret = \"whsec_1\"\n",
            &Overrides::default(),
        )
        .unwrap();
        let stripe = c.billing.stripe.unwrap();
        assert_eq!(stripe.base_url, "https://api.stripe.com");
        assert_eq!(stripe.webhook_tolerance_secs, 300);
        assert!(
            !format!("{stripe:?}").contains("sk_test_1"),
            "secrets are not logged"
        );
        let e = Config::from_toml(
            "[billing.stripe]\nsecret_key = \"sk_test_1\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("webhook_secret"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_setting() {
        let c = Config::from_toml(
            "listen = \"localhost\"\nstorage_url = \"mysql://x\"\ncatalog = \"/nope/c.toml\"\n",
            &Overrides::default(),
        )
        .unwrap();
        let e = c.resolve().unwrap_err();
        let text = e.to_string();
        assert!(text.contains("listen: \"localhost\""), "{text}");
        assert!(text.contains("unknown storage scheme \"mysql\""), "{text}");
        assert!(
            text.contains("catalog: the file /nope/c.toml does not exist"),
            "{text}"
        );
    }

    #[test]
    fn unknown_and_mistyped_settings_are_named() {
        let e = Config::from_toml("lisen = \"x\"\n", &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("lisen: unknown setting"), "{e}");
        let e = Config::from_toml("[rate_limit]\nburst = \"lots\"\n", &Overrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("rate_limit.burst"), "{e}");
    }

    #[test]
    fn missing_catalog_says_how_to_pass_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let e = c.resolve().unwrap_err();
        assert!(e.to_string().contains("--catalog"), "{e}");
    }
}
