//! Assembling and running the server: open the store, load the catalog, open
//! the engine, load the keys (minting the first admin key on a first start),
//! build the router with its layers, serve until told to stop, then close the
//! engine (which commits what is pending and writes a snapshot).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tollgate_core::catalog::{Catalog, CatalogErrors, load_catalog};
use tollgate_engine::{Clock, Engine, EngineError, SystemClock};
use tollgate_store::{Store, StoreError};
use tower_http::trace::TraceLayer;

use crate::auth::{ApiKey, KeyLimiter, KeyRing, Scope, create_key};
use crate::config::Settings;
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the store {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("cannot migrate the store: {0}")]
    Migrate(StoreError),
    #[error("cannot read the catalog {path}: {source}")]
    CatalogRead {
        path: String,
        source: std::io::Error,
    },
    #[error("the catalog {path} is invalid:\n{errors}")]
    Catalog { path: String, errors: CatalogErrors },
    #[error("cannot read or record the served catalog documents: {0}")]
    CatalogDocuments(StoreError),
    #[error("cannot open the engine: {0}")]
    Engine(EngineError),
    #[error("cannot read the API keys: {0}")]
    Keys(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("the engine did not shut down cleanly: {0}")]
    Close(EngineError),
    #[error("cannot start alert delivery: {0}")]
    Notify(tollgate_notify::NotifyError),
    #[error("invalid payment provider settings: {0}")]
    Payments(tollgate_billing::providers::ProviderError),
}

/// A started application, not yet serving.
#[derive(Debug)]
pub struct App {
    pub router: Router,
    pub state: AppState,
    /// On a first start (no key in the store), the admin key minted now. It is
    /// stored only as a digest: show it once.
    pub first_admin_key: Option<String>,
    pub body_limit: usize,
}

/// Reads and validates a catalog file, with every error at its path.
pub fn read_catalog(path: &std::path::Path) -> Result<Catalog, StartError> {
    let (name, text) = read_catalog_text(path)?;
    load_catalog(&name, &text).map_err(|errors| StartError::Catalog {
        path: path.display().to_string(),
        errors,
    })
}

/// A catalog file's name (for messages) and text.
pub fn read_catalog_text(path: &std::path::Path) -> Result<(String, String), StartError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartError::CatalogRead {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    Ok((name, text))
}

/// Opens the engine on `store` with the catalog a start serves (the file at
/// `path`, or the one applied last through the API: [`crate::catalog`]), and
/// records the file when it is served for the first time since it changed.
pub async fn open_engine(
    store: Arc<dyn Store>,
    path: &std::path::Path,
    clock: Arc<dyn Clock>,
    config: tollgate_engine::EngineConfig,
) -> Result<Engine, StartError> {
    open_engine_with(store, path, clock, config, true).await
}

/// [`open_engine`] for a command working on a server's data
/// (`tollgate invoices`): the same catalog a start would serve, but nothing
/// is recorded, so such a command never changes which catalog the server's
/// next start serves (an edited file not yet deployed would otherwise count as
/// served, and a restart with the deployed file would undo an apply).
pub async fn open_engine_unrecorded(
    store: Arc<dyn Store>,
    path: &std::path::Path,
    clock: Arc<dyn Clock>,
    config: tollgate_engine::EngineConfig,
) -> Result<Engine, StartError> {
    open_engine_with(store, path, clock, config, false).await
}

async fn open_engine_with(
    store: Arc<dyn Store>,
    path: &std::path::Path,
    clock: Arc<dyn Clock>,
    config: tollgate_engine::EngineConfig,
    record: bool,
) -> Result<Engine, StartError> {
    let (name, text) = read_catalog_text(path)?;
    store.migrate().await.map_err(StartError::Migrate)?;
    let chosen = crate::catalog::to_serve(store.as_ref(), &name, &text, clock.now()).await?;
    let engine = Engine::open(store.clone(), chosen.catalog, clock, config)
        .await
        .map_err(StartError::Engine)?;
    if record {
        crate::catalog::record(store.as_ref(), chosen.record.as_ref()).await?;
    }
    Ok(engine)
}

/// Opens the configured store and migrates it.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    let store = tollgate_store::connect(&settings.storage_url)
        .await
        .map_err(|source| StartError::Store {
            url: redact(&settings.storage_url),
            source,
        })?;
    store.migrate().await.map_err(StartError::Migrate)?;
    Ok(store)
}

/// A storage URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Builds the application from the configuration: the configured store, the
/// catalog it serves (the catalog file, or the one applied last through the
/// API: [`crate::catalog`]) and the system clock.
pub async fn build(settings: &Settings) -> Result<App, StartError> {
    // The file must read and validate even when an applied catalog is served.
    read_catalog(&settings.catalog)?;
    let store = open_store(settings).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = open_engine(
        store.clone(),
        &settings.catalog,
        clock.clone(),
        settings.engine.clone(),
    )
    .await?;
    assemble(store, engine, clock, settings).await
}

/// Builds the application on a given store, catalog and clock (tests run it on
/// a test clock).
pub async fn start(
    store: Arc<dyn Store>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    settings: &Settings,
) -> Result<App, StartError> {
    store.migrate().await.map_err(StartError::Migrate)?;
    let engine = Engine::open(
        store.clone(),
        catalog,
        clock.clone(),
        settings.engine.clone(),
    )
    .await
    .map_err(StartError::Engine)?;
    assemble(store, engine, clock, settings).await
}

/// The application around an open engine.
async fn assemble(
    store: Arc<dyn Store>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    settings: &Settings,
) -> Result<App, StartError> {
    let keys = load_keys(store.as_ref())
        .await
        .map_err(|e| StartError::Keys(e.to_string()))?;
    let ring = Arc::new(KeyRing::new(keys));
    let first_admin_key = if ring.is_empty() {
        let minted = create_key(
            store.as_ref(),
            &ring,
            "initial admin key",
            Scope::Admin,
            None,
            jiff::Timestamp::now(),
        )
        .await
        .map_err(|e| StartError::Keys(e.to_string()))?;
        Some(minted.secret)
    } else {
        None
    };
    crate::metrics::install();
    crate::metrics::active_keys(ring.list().iter().filter(|k| !k.revoked()).count());
    let engine = Arc::new(engine);
    let mut billing =
        tollgate_billing::Billing::new(engine.clone(), store.clone(), settings.billing.clone());
    billing.daily_summary_by_email = settings.notify.enabled
        && settings
            .notify
            .emails(tollgate_billing::notices::DAILY_SUMMARY);
    let billing = Arc::new(billing);
    let notifier = Arc::new(
        tollgate_notify::Notifier::new(store.clone(), clock, settings.notify.clone())
            .map_err(StartError::Notify)?,
    );
    // Alerts written by the engine's group commit (consumes, ingestion) wake
    // the delivery worker through the writer's signal, not through every
    // answered request (see `edge`).
    {
        let (engine, notifier) = (engine.clone(), notifier.clone());
        tokio::spawn(async move {
            loop {
                engine.outbox_written().await;
                notifier.wake();
            }
        });
    }
    let payments = Arc::new(
        tollgate_billing::providers::Providers::new(settings.billing.stripe.as_ref())
            .map_err(StartError::Payments)?,
    );
    let state = AppState::new(crate::state::Shared {
        engine,
        store,
        billing,
        notifier,
        payments,
        keys: ring,
        limiter: Arc::new(KeyLimiter::new(
            settings.rate_limit.per_second,
            settings.rate_limit.burst,
        )),
    });
    let router = router(state.clone(), settings.body_limit);
    Ok(App {
        router,
        state,
        first_admin_key,
        body_limit: settings.body_limit,
    })
}

/// The keys in the store (keys of an unknown scope are skipped with a warning).
pub async fn load_keys(store: &dyn Store) -> Result<Vec<ApiKey>, StoreError> {
    let records = store.api_keys().await?;
    let mut keys = Vec::with_capacity(records.len());
    for r in records {
        let id = r.id.clone();
        match ApiKey::from_record(r) {
            Some(k) => keys.push(k),
            None => tracing::warn!(key = %id, "an API key with an unknown scope is ignored"),
        }
    }
    Ok(keys)
}

/// How often the key ring is refreshed from the store.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Every route with its layers: tracing → one edge middleware ([`edge`]:
/// problem+json for every error, metrics, the body limit) → routes.
///
/// The edge concerns are one middleware, not three: axum clones a route's
/// whole layer stack on every request (and `from_fn` clones its inner service
/// once more), so each extra `from_fn` layer cost every request a few boxed
/// clones.
pub fn router(state: AppState, body_limit: usize) -> Router {
    let (routes, _doc) = crate::routes::router().split_for_parts();
    let notifier = state.notifier.clone();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            edge(body_limit, notifier.clone(), req, next)
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The edge of every request, outermost first: error responses become
/// problem+json ([`problem_errors`]); the request is counted and timed by
/// matched route ([`crate::metrics::Track`]); a body announced larger than
/// the limit is refused before it is read ([`limit_body`]); after a
/// successful write request outside the engine's hot path (which signals its
/// own alerts, [`engine_only`]) the delivery worker is woken, so an event it
/// wrote leaves at once instead of at the next poll (waking is a flag; the
/// worker spaces its passes, docs/webhooks.md).
async fn edge(
    body_limit: usize,
    notifier: Arc<tollgate_notify::Notifier>,
    req: Request,
    next: Next,
) -> Response {
    edge_with(body_limit, &notifier, None, req, |req| next.run(req)).await
}

/// The edge around `run` (the router's remaining stack, or the fast way's
/// handler, [`crate::dispatch`]). `route` names the route for the metrics when
/// the router did not match it (its `MatchedPath`).
pub(crate) async fn edge_with<F, Fut>(
    body_limit: usize,
    notifier: &tollgate_notify::Notifier,
    route: Option<&'static str>,
    req: Request,
    run: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let track = crate::metrics::Track::start(&req, route);
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !engine_only(req.uri().path());
    let response = match limit_body(body_limit, req) {
        Ok(req) => run(req).await,
        Err(too_large) => too_large.into_response(),
    };
    if write && response.status().is_success() {
        notifier.wake();
    }
    track.finish(response.status());
    problem_errors(response).await
}

/// Routes whose writes all go through the engine's group commit: the writer
/// itself wakes the delivery worker when one of its commits wrote an alert
/// ([`tollgate_engine::Engine::outbox_written`]), so these (the hot path) do
/// not wake it on every answer.
fn engine_only(path: &str) -> bool {
    matches!(path, "/v1/check" | "/v1/events")
}

async fn not_found(req: Request) -> ApiError {
    ApiError::Status {
        status: StatusCode::NOT_FOUND,
        detail: format!("no route {} {}", req.method(), req.uri().path()),
    }
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::Status {
        status: StatusCode::METHOD_NOT_ALLOWED,
        detail: format!(
            "{} is not allowed on {} (see the Allow header)",
            req.method(),
            req.uri().path()
        ),
    }
}

/// Refuses a body announced larger than the limit before reading it, and
/// tells extractors the limit (so their 413 names it).
fn limit_body(limit: usize, mut req: Request) -> Result<Request, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    req.extensions_mut().insert(BodyLimit(limit));
    Ok(req)
}

/// Turns every error response that is not already problem+json (axum's
/// rejections of a path or query, 405s, 415s) into one, keeping its headers.
async fn problem_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let problem = ApiError::Status { status, detail }.into_response();
    let (mut new_parts, new_body) = problem.into_parts();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new_parts.headers.insert(name.clone(), value.clone());
        }
    }
    new_parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Response::from_parts(new_parts, Body::new(new_body))
}

/// Serves the application on a bound listener until `shutdown` completes, then
/// stops accepting, lets requests in flight finish, and closes the engine
/// (committing what is pending and writing a snapshot).
pub async fn run(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = app.state.clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
        tick.tick().await;
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            // Keys minted or revoked by `tollgate keys` (or another node).
            match load_keys(state.store.as_ref()).await {
                Ok(keys) => {
                    state.keys.merge(keys);
                    crate::metrics::active_keys(
                        state.keys.list().iter().filter(|k| !k.revoked()).count(),
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot reload the API keys"),
            }
            if n % 12 == 0 {
                state.limiter.shrink();
            }
        }
    });
    let billing_worker = match app.state.billing.config.worker_interval_secs {
        0 => None,
        secs => Some(tollgate_billing::worker::start_worker(
            app.state.billing.clone(),
            Duration::from_secs(secs),
        )),
    };
    // Alert delivery in the background, stopped after the last request.
    let (stop_notify, notify_stopped) = tokio::sync::watch::channel(false);
    let notify_worker = app
        .state
        .notifier
        .config()
        .enabled
        .then(|| tokio::spawn(app.state.notifier.clone().run(notify_stopped)));
    let dispatch = crate::dispatch::Dispatch::new(app.router, app.state.clone(), app.body_limit);
    let served = axum::serve(crate::linger::LingeringListener::new(listener), dispatch)
        .with_graceful_shutdown(shutdown)
        .await;
    housekeeping.abort();
    if let Some(w) = billing_worker {
        w.abort();
    }
    let _ = stop_notify.send(true);
    if let Some(worker) = notify_worker {
        if tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .is_err()
        {
            tracing::warn!("the alert delivery worker did not stop within 5 s");
        }
    }
    let closed = app.state.engine.close().await;
    served.map_err(StartError::Serve)?;
    closed.map_err(StartError::Close)?;
    Ok(())
}

/// `tollgate serve`: builds the application, prints the first admin key if
/// one was minted, listens, and serves until `shutdown` (see
/// [`shutdown_signal`]).
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Bind first: a first start must not mint (and lose) an admin key when
    // the address is taken.
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.listen.to_string(),
        source,
    })?;
    let app = build(&settings).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Some(secret) = &app.first_admin_key {
            let _ = writeln!(out, "admin API key (shown once, store it now): {secret}");
        }
        let _ = writeln!(out, "tollgate listening on http://{addr}");
        let _ = out.flush();
    }
    tracing::info!(%addr, backend = app.state.store.backend(), "listening");
    run(app, listener, shutdown).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
