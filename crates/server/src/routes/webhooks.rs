//! Webhook endpoints and the delivery log (admin only). The rules (signing,
//! retries, failure state, SSRF guard) live in `tollgate_notify` and
//! docs/webhooks.md.
//!
//! - `POST/GET /v1/webhooks/endpoints`, `GET/PATCH/DELETE /v1/webhooks/endpoints/{id}`;
//! - `POST /v1/webhooks/endpoints/{id}/rotate-secret`, `POST …/{id}/test`;
//! - `GET /v1/webhooks/deliveries`, `GET /v1/webhooks/deliveries/{id}` (with attempts),
//!   `POST /v1/webhooks/deliveries/{id}/retry`;
//! - `POST /v1/webhooks/replay`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use tollgate_notify::signing::SigningSecret;
use tollgate_notify::{EndpointChange, NewEndpoint, NotifyError, Target};
use tollgate_store::notify::{AttemptRecord, DeliveryRecord, EndpointRecord};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::keys::page_limit;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(send_test))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(retry_delivery))
        .routes(routes!(replay))
}

fn api(e: NotifyError) -> ApiError {
    match e {
        NotifyError::Invalid { field, message } => ApiError::field(field, message),
        NotifyError::NotFound { what, id } => ApiError::NotFound { what, id },
        other => ApiError::Internal(other.to_string()),
    }
}

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointOut {
    /// `whe_…`
    pub id: String,
    pub url: String,
    /// Event types delivered (`usage.threshold_reached`, or a prefix `usage.*`); empty = all,
    /// except the opt-in `usage.daily_summary`, delivered only when listed.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// `healthy`, `failing` (since `failing_since`) or `disabled` (after failing too long).
    pub state: String,
    pub failing_since: Option<Timestamp>,
    pub description: Option<String>,
    /// The signing secret (`whsec_…`): verify `webhook-signature` with it.
    pub secret: String,
    /// After a rotation: until when the previous secret also signs.
    pub previous_secret_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<EndpointRecord> for EndpointOut {
    fn from(e: EndpointRecord) -> EndpointOut {
        let previous = e
            .secrets
            .iter()
            .skip(1)
            .filter_map(|s| SigningSecret::parse(s).ok())
            .filter_map(|s| s.until)
            .max();
        EndpointOut {
            secret: e
                .secrets
                .first()
                .and_then(|s| SigningSecret::parse(s).ok())
                .map(|s| s.secret)
                .unwrap_or_default(),
            previous_secret_expires_at: previous,
            id: e.id,
            url: e.url,
            event_types: e.event_types,
            enabled: e.enabled,
            state: e.state,
            failing_since: e.failing_since,
            description: e.description,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpointIn {
    /// An http or https URL; private, loopback and link-local addresses
    /// are refused unless allowed in `[notify]`.
    pub url: String,
    /// Event types delivered; empty or absent = all but the opt-in
    /// `usage.daily_summary` (delivered only when listed).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
    /// A `whsec_…` secret to use; minted when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

/// Changes to an endpoint; absent fields are unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Enabling an endpoint also clears its failure state.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

/// A field that is present (possibly `null`) → `Some(value)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A page of endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub data: Vec<EndpointOut>,
    pub has_more: bool,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EndpointListQuery {
    /// At most this many (1–100, default 100).
    pub limit: Option<u32>,
    /// The id of the last endpoint of the previous page.
    pub starting_after: Option<String>,
}

/// Creates a webhook endpoint; its signing secret is in the answer.
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    request_body = NewEndpointIn,
    responses(
        (status = 201, description = "The endpoint, with its secret", body = EndpointOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (a refused address names `url`)", content_type = "application/problem+json")
    )
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewEndpointIn>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    principal.require_admin()?;
    let e = state
        .notifier
        .create_endpoint(NewEndpoint {
            url: body.url,
            event_types: body.event_types,
            enabled: body.enabled.unwrap_or(true),
            description: body.description,
            secret: body.secret,
        })
        .await
        .map_err(api)?;
    Ok((StatusCode::CREATED, Json(e.into())))
}

/// Lists webhook endpoints, by id.
#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    params(EndpointListQuery),
    responses(
        (status = 200, description = "Endpoints by id", body = EndpointList),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameter", content_type = "application/problem+json")
    )
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<EndpointListQuery>,
) -> Result<Json<EndpointList>, ApiError> {
    principal.require_admin()?;
    let limit = page_limit(q.limit, 100)?;
    let mut all = state.store.notify().endpoints().await?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut page: Vec<EndpointRecord> = all
        .into_iter()
        .filter(|e| q.starting_after.as_ref().is_none_or(|after| e.id > *after))
        .take(limit + 1)
        .collect();
    let has_more = page.len() > limit;
    page.truncate(limit);
    Ok(Json(EndpointList {
        data: page.into_iter().map(EndpointOut::from).collect(),
        has_more,
    }))
}

/// One webhook endpoint.
#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", content_type = "application/problem+json")
    )
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<EndpointOut>, ApiError> {
    principal.require_admin()?;
    let e = state.notifier.endpoint(&id).await.map_err(api)?;
    Ok(Json(e.into()))
}

/// Changes an endpoint (URL, event types, enabled, description).
#[utoipa::path(
    patch,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    request_body = EndpointPatch,
    responses(
        (status = 200, description = "The endpoint as changed", body = EndpointOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", content_type = "application/problem+json")
    )
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EndpointPatch>,
) -> Result<Json<EndpointOut>, ApiError> {
    principal.require_admin()?;
    let e = state
        .notifier
        .update_endpoint(
            &id,
            EndpointChange {
                url: body.url,
                event_types: body.event_types,
                enabled: body.enabled,
                description: body.description,
            },
        )
        .await
        .map_err(api)?;
    Ok(Json(e.into()))
}

/// Deletes an endpoint; its pending deliveries are canceled.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", content_type = "application/problem+json")
    )
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    state.notifier.delete_endpoint(&id).await.map_err(api)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mints a new signing secret. The previous one keeps signing (a second
/// signature in `webhook-signature`) for `notify.rotation_grace_hours`
/// (default 24 h), so receivers switch without losing a delivery.
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = EndpointOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", content_type = "application/problem+json")
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<EndpointOut>, ApiError> {
    principal.require_admin()?;
    let (e, _) = state.notifier.rotate_secret(&id).await.map_err(api)?;
    Ok(Json(e.into()))
}

/// Sends a `webhook.test` event to this endpoint now (whatever its event
/// types); the answer is its delivery, to follow in the log.
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/test",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses(
        (status = 202, description = "The test delivery, queued", body = DeliveryOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", content_type = "application/problem+json")
    )
)]
pub async fn send_test(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryOut>), ApiError> {
    principal.require_admin()?;
    let d = state.notifier.send_test(&id).await.map_err(api)?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryOut::new(d, None))))
}

/// One event to one target, with its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    /// `dlv_…`
    pub id: String,
    /// The event (`evt_…`): the `webhook-id` of every attempt.
    pub event_id: String,
    /// `webhook:<endpoint id>` or `email:<address>`.
    pub target: String,
    /// The endpoint, for a webhook delivery.
    pub endpoint_id: Option<String>,
    /// `pending`, `succeeded`, `failed` (gave up) or `canceled`.
    pub state: String,
    /// Entries of the delivery log (sends, requeues).
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    /// The last HTTP status (or SMTP reply code).
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The last attempt's response time.
    pub last_duration_ms: Option<u64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The delivery log (on `GET /v1/webhooks/deliveries/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<AttemptOut>>,
}

/// One entry of the delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: u32,
    pub at: Timestamp,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl DeliveryOut {
    fn new(d: DeliveryRecord, log: Option<Vec<AttemptRecord>>) -> DeliveryOut {
        DeliveryOut {
            endpoint_id: match Target::parse(&d.target) {
                Some(Target::Webhook(id)) => Some(id),
                _ => None,
            },
            id: d.id,
            event_id: d.event_id,
            target: d.target,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
            last_duration_ms: d.last_duration_ms,
            created_at: d.created_at,
            updated_at: d.updated_at,
            log: log.map(|l| {
                l.into_iter()
                    .map(|a| AttemptOut {
                        attempt: a.attempt,
                        at: a.at,
                        status: a.status,
                        error: a.error,
                        duration_ms: a.duration_ms,
                    })
                    .collect()
            }),
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryOut>,
    pub has_more: bool,
}

/// Filters of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListQuery {
    /// Deliveries to this endpoint.
    pub endpoint_id: Option<String>,
    /// Deliveries to this e-mail address.
    pub email: Option<String>,
    /// Deliveries of this event.
    pub event_id: Option<String>,
    /// At most this many (1–100, default 50).
    pub limit: Option<u32>,
}

/// The delivery log: deliveries, newest first, filtered by endpoint, e-mail
/// address or event.
#[utoipa::path(
    get,
    path = "/v1/webhooks/deliveries",
    tag = "webhooks",
    params(DeliveryListQuery),
    responses(
        (status = 200, description = "Deliveries, newest first", body = DeliveryList),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameter", content_type = "application/problem+json")
    )
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<DeliveryListQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.require_admin()?;
    let limit = page_limit(q.limit, 50)?;
    let target = match (q.endpoint_id, q.email) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "email",
                "filter by endpoint_id or by email, not both",
            ));
        }
        (Some(id), None) => Some(Target::webhook(&id)),
        (None, Some(a)) => Some(Target::email(&a)),
        (None, None) => None,
    };
    let mut rows = state
        .store
        .notify()
        .deliveries(
            target.as_deref(),
            q.event_id.as_deref(),
            u32::try_from(limit + 1).unwrap_or(u32::MAX),
        )
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok(Json(DeliveryList {
        data: rows
            .into_iter()
            .map(|d| DeliveryOut::new(d, None))
            .collect(),
        has_more,
    }))
}

/// One delivery with its log (every attempt: time, status, error, response time).
#[utoipa::path(
    get,
    path = "/v1/webhooks/deliveries/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The delivery's id (`dlv_…`)")),
    responses(
        (status = 200, description = "The delivery and its log", body = DeliveryOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such delivery", content_type = "application/problem+json")
    )
)]
pub async fn get_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeliveryOut>, ApiError> {
    principal.require_admin()?;
    let notify = state.store.notify();
    let d = notify
        .get_delivery(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "delivery",
            id: id.clone(),
        })?;
    let log = notify.attempts(&id).await?;
    Ok(Json(DeliveryOut::new(d, Some(log))))
}

/// Sends a delivery again now (also one that gave up or was canceled), with
/// a fresh retry schedule.
#[utoipa::path(
    post,
    path = "/v1/webhooks/deliveries/{id}/retry",
    tag = "webhooks",
    params(("id" = String, Path, description = "The delivery's id (`dlv_…`)")),
    responses(
        (status = 202, description = "The delivery, due now", body = DeliveryOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such delivery", content_type = "application/problem+json")
    )
)]
pub async fn retry_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryOut>), ApiError> {
    principal.require_admin()?;
    let d = state.notifier.retry(&id).await.map_err(api)?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryOut::new(d, None))))
}

/// A time range to send again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// Events created at or after this instant…
    pub from: Timestamp,
    /// …and before this one.
    pub to: Timestamp,
    /// Only to this endpoint (default: every endpoint and e-mail recipient
    /// the events go to now).
    #[serde(default)]
    pub endpoint_id: Option<String>,
}

/// What a replay queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOut {
    /// Deliveries queued (created or requeued), due now.
    pub queued: usize,
    pub delivery_ids: Vec<String>,
}

/// Sends the events of a time range again (each keeps its id, so receivers
/// that already have it drop it).
#[utoipa::path(
    post,
    path = "/v1/webhooks/replay",
    tag = "webhooks",
    request_body = ReplayIn,
    responses(
        (status = 202, description = "The deliveries queued", body = ReplayOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (`to` not after `from`)", content_type = "application/problem+json")
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ReplayIn>,
) -> Result<(StatusCode, Json<ReplayOut>), ApiError> {
    principal.require_admin()?;
    let queued = state
        .notifier
        .replay(body.from, body.to, body.endpoint_id.as_deref())
        .await
        .map_err(api)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayOut {
            queued: queued.len(),
            delivery_ids: queued.into_iter().map(|d| d.id).collect(),
        }),
    ))
}
