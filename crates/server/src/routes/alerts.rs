//! A customer's alerts: the outbox events the engine wrote in the decisions
//! that crossed a threshold, went beyond a limit, were first denied at a hard
//! limit, drew an emergency pool or exhausted a grant (see `docs/alerts.md`).
//!
//! - `GET /v1/customers/{id}/alerts`: newest first; admin and server keys, and
//!   a customer key for its own customer.
//!
//! The helpers here also feed the usage dashboard (the alerts of each
//! feature's current window) and the admin "customers near a limit" view.

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tollgate_store::notify::OutboxEvent;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::keys::page_limit;
use crate::routes::usage::live_customer;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(customer_alerts))
}

/// Events about usage limits (the ones the dashboard and the admin views show).
pub(crate) const USAGE_ALERTS: [&str; 3] = [
    "usage.threshold_reached",
    "usage.limit_exceeded",
    "usage.denied",
];

/// How many of a customer's latest events the dashboard and admin views scan
/// for the alerts of the current windows.
pub(crate) const RECENT_EVENTS: u32 = 500;

/// One alert, as written to the outbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertOut {
    /// `evt_…`: stable, the `webhook-id` of its webhook deliveries.
    pub id: String,
    /// `usage.threshold_reached`, `usage.limit_exceeded`, `usage.denied`,
    /// `emergency.drawn`, `grant.exhausted`, …
    #[serde(rename = "type")]
    pub event_type: String,
    pub customer: Option<String>,
    /// The feature the alert is about, if any.
    pub feature: Option<String>,
    pub created_at: Timestamp,
    /// Position among this customer's events (1, 2, …): receivers order by it.
    pub sequence: i64,
    /// The event's data (customer, feature, period, threshold, used, limit,
    /// percent, enforcement, recommended_action, …).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl From<OutboxEvent> for AlertOut {
    fn from(e: OutboxEvent) -> Self {
        AlertOut {
            feature: e.payload["feature"].as_str().map(str::to_string),
            id: e.id,
            event_type: e.event_type,
            customer: e.customer_id,
            created_at: e.created_at,
            sequence: e.object_seq,
            data: e.payload,
        }
    }
}

/// A page of alerts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub data: Vec<AlertOut>,
    pub has_more: bool,
}

/// Paging of a customer's alerts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// At most this many (1–100, default 20).
    pub limit: Option<u32>,
}

/// A customer's latest events (newest first).
pub(crate) async fn recent_events(
    state: &AppState,
    customer: &str,
    limit: u32,
) -> Result<Vec<OutboxEvent>, ApiError> {
    state
        .store
        .notify()
        .customer_events(customer, limit)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The start of the period an event is about (`data.period.start`).
fn period_start(e: &OutboxEvent) -> Option<Timestamp> {
    e.payload["period"]["start"].as_str()?.parse().ok()
}

/// The usage alerts of `feature` in the window that starts at `window_start`,
/// newest first.
pub(crate) fn usage_alerts_in<'a>(
    events: &'a [OutboxEvent],
    feature: &'a str,
    window_start: Timestamp,
) -> impl Iterator<Item = &'a OutboxEvent> + 'a {
    events.iter().filter(move |e| {
        USAGE_ALERTS.contains(&e.event_type.as_str())
            && e.payload["feature"].as_str() == Some(feature)
            && period_start(e) == Some(window_start)
    })
}

/// The latest usage alert of `feature` whose period contains `now`.
pub(crate) fn current_usage_alert<'a>(
    events: &'a [OutboxEvent],
    feature: &str,
    now: Timestamp,
) -> Option<&'a OutboxEvent> {
    events.iter().find(|e| {
        let end = e.payload["period"]["end"]
            .as_str()
            .and_then(|s| s.parse::<Timestamp>().ok());
        USAGE_ALERTS.contains(&e.event_type.as_str())
            && e.payload["feature"].as_str() == Some(feature)
            && period_start(e).is_some_and(|s| s <= now)
            && end.is_none_or(|end| now < end)
    })
}

/// A customer's alerts.
///
/// The events Tollgate wrote for this customer, newest first: thresholds
/// reached (80 %, 95 %, 100 % by default, once per feature, period and
/// threshold), the first usage beyond a limit and the first denial at a hard
/// limit in each period, emergency pools drawn and grants exhausted. Each was
/// written in the same transaction as the usage that caused it.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/alerts",
    tag = "usage",
    params(("id" = String, Path, description = "The customer's id"), AlertQuery),
    responses(
        (status = 200, description = "The alerts, newest first", body = AlertList),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameter", content_type = "application/problem+json"),
    )
)]
pub async fn customer_alerts(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    principal.require_read(&id)?;
    let limit = page_limit(q.limit, 20)?;
    live_customer(&state, &id)?;
    let mut rows = recent_events(&state, &id, u32::try_from(limit + 1).unwrap_or(u32::MAX)).await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok(Json(AlertList {
        data: rows.into_iter().map(AlertOut::from).collect(),
        has_more,
    }))
}
