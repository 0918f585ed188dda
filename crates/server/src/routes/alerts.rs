//! A customer's alerts: the outbox events the engine wrote in the decisions
//! that crossed a threshold, went beyond a limit, were first denied at a hard
//! limit, drew an emergency pool or exhausted a grant (see `docs/alerts.md`).
//!
//! - `GET /v1/customers/{id}/alerts`: newest first; admin and server keys, and
//!   a customer key for its own customer.
//! - `GET /v1/customers/{id}/alert-settings` (read) and
//!   `PUT /v1/customers/{id}/alert-settings` (admin and server keys): the
//!   amount above which the projected upcoming invoice fires
//!   `invoice.upcoming_above` (the billing worker's tick checks it).
//!
//! The helpers here also feed the usage dashboard (the alerts of each
//! feature's current window) and the admin "customers near a limit" view.

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::money::{Currency, Money};
use tollgate_store::notify::{AlertSettingsRecord, OutboxEvent};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::enforcement::{Quantity, norm};
use crate::routes::keys::page_limit;
use crate::routes::usage::live_customer;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(customer_alerts))
        .routes(routes!(get_alert_settings, put_alert_settings))
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
        .map_err(ApiError::from)
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

// ---- alert settings ------------------------------------------------------------------

/// A customer's alert settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertSettingsOut {
    pub customer_id: String,
    /// The customer's currency (the amount's).
    pub currency: String,
    /// `invoice.upcoming_above` fires (once per period and amount) when the
    /// projected upcoming invoice's total is above this amount; `null` = never.
    #[schema(value_type = Option<String>, example = "500")]
    pub upcoming_invoice_above: Option<Decimal>,
    /// When the settings were last changed; `null` = never set.
    pub updated_at: Option<Timestamp>,
}

/// New alert settings (the whole settings: an absent field is cleared).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSettingsIn {
    /// A non-negative amount in the customer's currency, with at most the
    /// currency's minor units (2 for EUR); `null` or absent: no alert.
    #[serde(default)]
    pub upcoming_invoice_above: Option<Quantity>,
}

fn settings_out(
    customer: &tollgate_store::CustomerRecord,
    s: Option<AlertSettingsRecord>,
) -> AlertSettingsOut {
    AlertSettingsOut {
        customer_id: customer.id.clone(),
        currency: customer.currency.clone(),
        upcoming_invoice_above: s.as_ref().and_then(|s| s.upcoming_invoice_above.map(norm)),
        updated_at: s.map(|s| s.updated_at),
    }
}

/// A customer's alert settings.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/alert-settings",
    tag = "usage",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The settings", body = AlertSettingsOut),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
    )
)]
pub async fn get_alert_settings(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<AlertSettingsOut>, ApiError> {
    principal.require_read(&id)?;
    let customer = live_customer(&state, &id)?;
    let settings = state.store.notify().get_alert_settings(&id).await?;
    Ok(Json(settings_out(&customer, settings)))
}

/// Sets a customer's alert settings.
///
/// `upcoming_invoice_above`: the billing worker's tick projects the
/// customer's upcoming invoice (the total of `GET
/// /v1/customers/{id}/upcoming-invoice`) and writes `invoice.upcoming_above`
/// when it is above this amount, once per billing period and amount (raising
/// the amount arms it again). Admin and server keys.
#[utoipa::path(
    put,
    path = "/v1/customers/{id}/alert-settings",
    tag = "usage",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = AlertSettingsIn,
    responses(
        (status = 200, description = "The settings", body = AlertSettingsOut),
        (status = 403, description = "A customer key", content_type = "application/problem+json"),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "A bad amount (named)", content_type = "application/problem+json"),
    )
)]
pub async fn put_alert_settings(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AlertSettingsIn>,
) -> Result<Json<AlertSettingsOut>, ApiError> {
    principal.require_server()?;
    let customer = live_customer(&state, &id)?;
    let amount = body.upcoming_invoice_above.map(|Quantity(a)| a);
    if let Some(a) = amount {
        let currency = Currency::from_code(&customer.currency)
            .map_err(|e| ApiError::Internal(format!("customer {id:?}: {e}")))?;
        if !Money::new(a, currency).is_minor_exact() {
            return Err(ApiError::field(
                "upcoming_invoice_above",
                format!(
                    "{a} has more decimals than {} allows ({})",
                    currency.code(),
                    currency.minor_units()
                ),
            ));
        }
    }
    let record = AlertSettingsRecord {
        customer_id: id.clone(),
        upcoming_invoice_above: amount.map(norm),
        updated_at: state.engine.now(),
    };
    state.store.notify().put_alert_settings(&record).await?;
    Ok(Json(settings_out(&customer, Some(record))))
}
