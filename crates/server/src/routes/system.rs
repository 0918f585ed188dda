//! System routes: liveness, readiness, metrics, the OpenAPI document and the
//! API reference page. None needs a key.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
}

/// Liveness and readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The storage backend (`sqlite` or `postgres`), on readiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    security(()),
    responses((status = 200, description = "The process is up", body = Health))
)]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        backend: None,
    })
}

/// The store answers and the engine accepts work.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store is unreachable or the engine is shut down", content_type = "application/problem+json")
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    let probe = async {
        state
            .store
            .max_seq()
            .await
            .map_err(|e| format!("the store is unreachable: {e}"))?;
        state
            .engine
            .flush()
            .await
            .map_err(|e| format!("the engine is not accepting work: {e}"))
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(())) => Ok(axum::Json(Health {
            status: "ok".into(),
            backend: Some(state.store.backend().to_string()),
        })),
        Ok(Err(detail)) => Err(ApiError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail,
        }),
        Err(_) => Err(ApiError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: "the store did not answer within 5 s".into(),
        }),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::group_commit(state.engine.writer_stats());
    let mut r = crate::metrics::render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub async fn openapi_json() -> Response {
    let mut r = crate::openapi::document_json().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The API reference, as a page.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "system",
    security(()),
    responses((status = 200, description = "The API reference (HTML)", body = String, content_type = "text/html"))
)]
pub async fn docs() -> Html<&'static str> {
    Html(crate::openapi::docs_html())
}
