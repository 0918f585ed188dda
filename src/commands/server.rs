//! `tollgate serve`, `tollgate migrate` and `tollgate keys`: the commands that
//! work on a store.

use std::process::ExitCode;
use std::sync::Arc;

use tollgate_server::app;
use tollgate_server::auth::{ApiKey, Scope, mint_key};
use tollgate_server::config::{Config, ConfigFile, LogFormat, Overrides};
use tollgate_store::Store;

use super::CliError;
use crate::cli::{ConfigArgs, KeyScopeArg, KeysCommand, ServeArgs, StoreArgs};

pub(super) fn config(args: &ConfigArgs, serve: Option<&ServeArgs>) -> Result<Config, CliError> {
    let file = match &args.config {
        Some(path) => ConfigFile::Explicit(path.clone()),
        None => match std::env::current_dir() {
            Ok(dir) => ConfigFile::Discover(dir),
            Err(_) => ConfigFile::None,
        },
    };
    let overrides = Overrides {
        listen: serve.and_then(|s| s.listen.clone()),
        data_dir: args.data_dir.clone(),
        storage_url: args.storage_url.clone(),
        catalog: serve.and_then(|s| s.catalog.clone()),
    };
    Config::load(&file, &overrides).map_err(|e| CliError::Server(e.to_string()))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    runtime_with(None)
}

/// The async runtime with `worker_threads` threads (`None`: one per core).
fn runtime_with(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, CliError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| CliError::Server(format!("cannot start the async runtime: {e}")))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `tollgate serve`.
pub fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let cfg = config(&args.config, Some(&args))?;
    let settings = cfg.resolve().map_err(|e| CliError::Server(e.to_string()))?;
    init_logging(settings.log_format);
    let rt = runtime_with(settings.worker_threads)?;
    rt.block_on(app::serve(settings, app::shutdown_signal()))
        .map_err(|e| CliError::Server(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, CliError> {
    let url = cfg
        .storage_url()
        .map_err(|e| CliError::Server(e.to_string()))?;
    let store = tollgate_store::connect(&url).await.map_err(|e| {
        CliError::Server(format!("cannot open the store {}: {e}", app::redact(&url)))
    })?;
    store
        .migrate()
        .await
        .map_err(|e| CliError::Server(format!("cannot migrate the store: {e}")))?;
    Ok(store)
}

/// `tollgate migrate`.
pub fn migrate(args: &StoreArgs) -> Result<ExitCode, CliError> {
    let cfg = config(&args.config, None)?;
    let url = cfg
        .storage_url()
        .map_err(|e| CliError::Server(e.to_string()))?;
    let rt = runtime()?;
    let backend = rt.block_on(async {
        let store = open_store(&cfg).await?;
        Ok::<_, CliError>(store.backend())
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"migrated": true, "backend": backend, "storage_url": app::redact(&url)})
        );
    } else {
        println!("store {} ({backend}) is up to date", app::redact(&url));
    }
    Ok(ExitCode::SUCCESS)
}

fn scope(s: KeyScopeArg) -> Scope {
    match s {
        KeyScopeArg::Admin => Scope::Admin,
        KeyScopeArg::Server => Scope::Server,
        KeyScopeArg::Customer => Scope::Customer,
    }
}

fn key_json(k: &ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "name": k.name,
        "scope": k.scope.as_str(),
        "customer_id": k.customer_id,
        "prefix": k.prefix,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    })
}

/// `tollgate keys create|list|revoke`.
pub fn keys(cmd: KeysCommand) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    match cmd {
        KeysCommand::Create {
            store,
            name,
            scope: s,
            customer,
        } => {
            let cfg = config(&store.config, None)?;
            let scope = scope(s);
            match (scope, &customer) {
                (Scope::Customer, None) => {
                    return Err(CliError::Server(
                        "--customer: a customer key needs the customer it may read".into(),
                    ));
                }
                (Scope::Admin | Scope::Server, Some(_)) => {
                    return Err(CliError::Server(
                        "--customer: only customer keys belong to a customer".into(),
                    ));
                }
                _ => {}
            }
            let name = name.trim().to_string();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(CliError::Server(
                    "--name: a key's name is 1 to 200 characters".into(),
                ));
            }
            let minted = rt.block_on(async {
                let st = open_store(&cfg).await?;
                if let Some(id) = &customer {
                    let found = st
                        .get_customer(id)
                        .await
                        .map_err(|e| CliError::Server(e.to_string()))?;
                    if found.is_none_or(|c| c.deleted_at.is_some()) {
                        return Err(CliError::Server(format!("--customer: no customer {id:?}")));
                    }
                }
                let minted = mint_key(&name, scope, customer.clone(), jiff::Timestamp::now())
                    .map_err(|e| CliError::Server(e.to_string()))?;
                st.insert_api_key(&minted.key.to_record())
                    .await
                    .map_err(|e| CliError::Server(format!("cannot store the key: {e}")))?;
                Ok(minted)
            })?;
            if store.json {
                let mut v = key_json(&minted.key);
                v["secret"] = serde_json::Value::String(minted.secret);
                println!("{v}");
            } else {
                println!(
                    "created {} key {} ({:?})",
                    minted.key.scope.as_str(),
                    minted.key.id,
                    minted.key.name
                );
                println!("API key (shown once, store it now): {}", minted.secret);
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { store, all } => {
            let cfg = config(&store.config, None)?;
            let keys = rt.block_on(async {
                let st = open_store(&cfg).await?;
                app::load_keys(st.as_ref())
                    .await
                    .map_err(|e| CliError::Server(e.to_string()))
            })?;
            let keys: Vec<ApiKey> = keys.into_iter().filter(|k| all || !k.revoked()).collect();
            if store.json {
                let v: Vec<serde_json::Value> = keys.iter().map(key_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if keys.is_empty() {
                println!("no keys (a first `tollgate serve` mints an admin key)");
            } else {
                let mut rows = vec![vec![
                    "ID".to_string(),
                    "SCOPE".into(),
                    "CUSTOMER".into(),
                    "PREFIX".into(),
                    "CREATED".into(),
                    "STATUS".into(),
                    "NAME".into(),
                ]];
                for k in &keys {
                    rows.push(vec![
                        k.id.clone(),
                        k.scope.as_str().into(),
                        k.customer_id.clone().unwrap_or_else(|| "-".into()),
                        format!("{}…", k.prefix),
                        k.created_at.strftime("%Y-%m-%d %H:%M").to_string(),
                        match k.revoked_at {
                            Some(at) => format!("revoked {}", at.strftime("%Y-%m-%d %H:%M")),
                            None => "active".into(),
                        },
                        k.name.clone(),
                    ]);
                }
                print!("{}", table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { store, id } => {
            let cfg = config(&store.config, None)?;
            let key = rt.block_on(async {
                let st = open_store(&cfg).await?;
                st.revoke_api_key(&id, jiff::Timestamp::now())
                    .await
                    .map_err(|e| match e {
                        tollgate_store::StoreError::NotFound { .. } => CliError::Server(format!(
                            "no key {id:?} (see `tollgate keys list --all`)"
                        )),
                        other => CliError::Server(other.to_string()),
                    })?;
                let keys = app::load_keys(st.as_ref())
                    .await
                    .map_err(|e| CliError::Server(e.to_string()))?;
                Ok::<_, CliError>(keys.into_iter().find(|k| k.id == id))
            })?;
            match (store.json, key) {
                (true, Some(k)) => println!("{}", key_json(&k)),
                (false, Some(k)) => println!(
                    "revoked {} key {} ({:?}); a running server refuses it within seconds",
                    k.scope.as_str(),
                    k.id,
                    k.name
                ),
                (_, None) => return Err(CliError::Server(format!("no key {id:?}"))),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
