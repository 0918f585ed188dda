//! `POST /v1/events`: batch ingestion of usage that happened elsewhere.
//!
//! Ingested events are never denied (they already happened): each is
//! validated on its own — a bad event is `rejected` with a reason and the
//! others go through —, checked against the idempotency window (`duplicate`),
//! and the accepted ones are committed to the ledger together before the
//! answer. At most 100,000 events per call.
//!
//! Three body formats, chosen by `Content-Type`:
//!
//! - `application/json` (or anything else): Tollgate's shape,
//!   `{"events": [{"customer", "feature", "quantity", "timestamp"?,
//!   "idempotency_key"?, "properties"?, "billable"?}]}`;
//! - `application/cloudevents+json`: one CloudEvents 1.0 event (structured mode);
//! - `application/cloudevents-batch+json`: a JSON array of CloudEvents.
//!
//! CloudEvents mapping: `subject` → the customer (required); the feature is
//! `data.feature` when present, else `type` without a leading
//! `tollgate.usage.` (so `type: "tollgate.usage.api_calls"` meters
//! `api_calls`), else `type` itself; `id` → the idempotency key; `time` → the
//! timestamp (default: now); `data.quantity` → the quantity (a number or a
//! decimal string; default 1); every other `data` field → the event's
//! properties. `specversion` must be `1.0`; `data` must be a JSON object
//! (`data_base64` is refused). Other attributes (`source`, extensions) are
//! accepted and not stored.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tollgate_engine::{IngestEvent, IngestResult};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, parse_json};
use crate::routes::enforcement::{Quantity, decimal_from_raw};
use crate::state::AppState;

/// Most events per call.
pub const MAX_EVENTS: usize = 100_000;

/// The `type` prefix of CloudEvents that name their feature.
pub const CLOUDEVENT_TYPE_PREFIX: &str = "tollgate.usage.";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest))
}

/// One usage event (Tollgate's shape).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    pub customer: String,
    /// A metered feature.
    pub feature: String,
    /// Greater than zero.
    pub quantity: Quantity,
    /// When it happened (RFC 3339); default now. At most 48 h in the past and
    /// 5 min in the future.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub timestamp: Option<Timestamp>,
    /// Unique per customer: a second event with the same key is a `duplicate`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
    /// Default `true`.
    #[serde(default)]
    pub billable: Option<bool>,
}

/// `POST /v1/events` in Tollgate's shape.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// At most 100,000.
    #[schema(value_type = Vec<EventIn>)]
    pub events: Vec<Box<RawValue>>,
}

/// A CloudEvents 1.0 event (structured mode, JSON), as documented in the
/// module: `subject` = customer, `type` = `tollgate.usage.<feature>`, `id` =
/// idempotency key, `time`, `data.quantity`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub time: Option<Timestamp>,
    #[serde(default)]
    pub datacontenttype: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub data_base64: Option<String>,
}

/// The outcome of one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResult {
    /// The event's position in the request (0-based).
    pub index: usize,
    /// `accepted`, `duplicate` or `rejected`.
    pub status: String,
    /// Rejected: `invalid_event`, `unknown_customer`, `unknown_feature`,
    /// `wrong_feature_kind`, `invalid_quantity`, `invalid_idempotency_key`,
    /// `too_old`, `in_the_future`, `customer_deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong, for `invalid_event`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The field at fault, for `invalid_event`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Accepted: whether it counted against the current window (its timestamp
    /// falls in it); otherwise it is only in the ledger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted: Option<bool>,
    /// Accepted: usage is above the limit after this event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_limit: Option<bool>,
}

/// The answer to an ingestion.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestOut {
    pub accepted: usize,
    pub duplicate: usize,
    pub rejected: usize,
    /// One per event, in request order.
    pub results: Vec<EventResult>,
}

fn invalid(index: usize, field: Option<String>, message: String) -> EventResult {
    EventResult {
        index,
        status: "rejected".into(),
        reason: Some("invalid_event".into()),
        message: Some(message),
        field,
        counted: None,
        over_limit: None,
    }
}

/// Parses one event of Tollgate's shape.
fn parse_event(raw: &RawValue, now: Timestamp) -> Result<IngestEvent, (Option<String>, String)> {
    let e: EventIn = parse_json(raw.get().as_bytes()).map_err(|err| match err {
        ApiError::Validation(mut errs) if !errs.is_empty() => {
            let f = errs.swap_remove(0);
            (Some(f.field.clone()), format!("{}: {}", f.field, f.message))
        }
        other => (None, other.to_string()),
    })?;
    Ok(IngestEvent {
        customer: e.customer,
        feature: e.feature,
        quantity: e.quantity.0,
        timestamp: e.timestamp.unwrap_or(now),
        idempotency_key: e.idempotency_key,
        properties: e.properties.unwrap_or_default(),
        billable: e.billable.unwrap_or(true),
    })
}

/// Parses one CloudEvent and maps it (see the module).
fn parse_cloudevent(
    raw: &RawValue,
    now: Timestamp,
) -> Result<IngestEvent, (Option<String>, String)> {
    let ce: CloudEvent = parse_json(raw.get().as_bytes()).map_err(|err| match err {
        ApiError::Validation(mut errs) if !errs.is_empty() => {
            let f = errs.swap_remove(0);
            (Some(f.field.clone()), format!("{}: {}", f.field, f.message))
        }
        other => (None, other.to_string()),
    })?;
    let fail =
        |field: &str, message: String| (Some(field.to_string()), format!("{field}: {message}"));
    if ce.specversion != "1.0" {
        return Err(fail(
            "specversion",
            format!("{:?} is not supported (only \"1.0\")", ce.specversion),
        ));
    }
    if ce.data_base64.is_some() {
        return Err(fail(
            "data_base64",
            "binary data is not supported; send `data` as a JSON object".into(),
        ));
    }
    if let Some(ct) = &ce.datacontenttype {
        if !ct.starts_with("application/json") && !ct.ends_with("+json") {
            return Err(fail(
                "datacontenttype",
                format!("{ct:?}: `data` must be JSON (application/json)"),
            ));
        }
    }
    let customer = ce.subject.filter(|s| !s.is_empty()).ok_or_else(|| {
        fail(
            "subject",
            "missing: the subject is the customer's id".into(),
        )
    })?;
    let data: BTreeMap<String, Box<RawValue>> = match &ce.data {
        None => BTreeMap::new(),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| fail("data", "must be a JSON object".into()))?,
    };
    let mut feature = None;
    let mut quantity = Decimal::ONE;
    let mut properties = BTreeMap::new();
    for (k, v) in data {
        match k.as_str() {
            "quantity" => {
                quantity = decimal_from_raw(v.get()).map_err(|m| fail("data.quantity", m))?;
            }
            "feature" => {
                let f: String = serde_json::from_str(v.get())
                    .map_err(|_| fail("data.feature", "must be a string".into()))?;
                feature = Some(f);
            }
            _ => {
                let value: serde_json::Value = serde_json::from_str(v.get())
                    .map_err(|e| fail(&format!("data.{k}"), e.to_string()))?;
                properties.insert(k, value);
            }
        }
    }
    let feature = feature.unwrap_or_else(|| {
        ce.kind
            .strip_prefix(CLOUDEVENT_TYPE_PREFIX)
            .unwrap_or(&ce.kind)
            .to_string()
    });
    Ok(IngestEvent {
        customer,
        feature,
        quantity,
        timestamp: ce.time.unwrap_or(now),
        idempotency_key: Some(ce.id),
        properties,
        billable: true,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Tollgate,
    CloudEvent,
    CloudEventBatch,
}

fn format_of(headers: &HeaderMap) -> Format {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/cloudevents+json" => Format::CloudEvent,
        "application/cloudevents-batch+json" => Format::CloudEventBatch,
        _ => Format::Tollgate,
    }
}

fn too_many(count: usize) -> ApiError {
    ApiError::field(
        "events",
        format!("{count} events in one call; at most {MAX_EVENTS}"),
    )
}

/// Ingest usage events (Tollgate's shape or CloudEvents).
///
/// Up to 100,000 events. Each is validated on its own: a bad one is `rejected`
/// with a reason (the others go through), a repeated idempotency key is a
/// `duplicate`; accepted events are committed before the answer. Never denied:
/// an event that takes usage above a hard limit is recorded and flagged
/// `over_limit`.
///
/// `Content-Type: application/json`: `{"events": [...]}`.
/// `application/cloudevents+json`: one CloudEvent; `application/cloudevents-batch+json`:
/// an array of them. CloudEvents mapping: `subject` → customer; `data.feature`,
/// else `type` without the `tollgate.usage.` prefix → feature; `id` →
/// idempotency key; `time` → timestamp; `data.quantity` (default 1) →
/// quantity; other `data` fields → properties.
///
/// A body that is not JSON is a `400`; more than 100,000 events a `422` naming
/// `events`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(
        description = "`{\"events\": [...]}` (application/json), one CloudEvent (application/cloudevents+json) or an array of CloudEvents (application/cloudevents-batch+json)",
        content(
            (EventBatch = "application/json"),
            (CloudEvent = "application/cloudevents+json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json"),
        )
    ),
    responses(
        (status = 200, description = "One result per event", body = IngestOut),
        (status = 400, description = "The body is not JSON", content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", content_type = "application/problem+json"),
        (status = 422, description = "Not the expected shape, or more than 100,000 events", content_type = "application/problem+json"),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Box<RawValue>>,
) -> Result<Json<IngestOut>, ApiError> {
    principal.require_server()?;
    let engine = &*state.engine;
    let now = engine.now();
    let format = format_of(&headers);
    let raws: Vec<Box<RawValue>> = match format {
        Format::Tollgate => parse_json::<EventBatch>(body.get().as_bytes())?.events,
        Format::CloudEvent => vec![body],
        Format::CloudEventBatch => parse_json::<Vec<Box<RawValue>>>(body.get().as_bytes())?,
    };
    if raws.len() > MAX_EVENTS {
        return Err(too_many(raws.len()));
    }
    let mut results: Vec<Option<EventResult>> = Vec::with_capacity(raws.len());
    let mut events = Vec::with_capacity(raws.len());
    let mut positions = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let parsed = match format {
            Format::Tollgate => parse_event(raw, now),
            Format::CloudEvent | Format::CloudEventBatch => parse_cloudevent(raw, now),
        };
        match parsed {
            Ok(e) => {
                results.push(None);
                positions.push(i);
                events.push(e);
            }
            Err((field, message)) => results.push(Some(invalid(i, field, message))),
        }
    }
    drop(raws);
    let outcomes = if events.is_empty() {
        Vec::new()
    } else {
        engine.ingest(events).await?
    };
    for (pos, outcome) in positions.into_iter().zip(outcomes) {
        let r = match outcome {
            IngestResult::Accepted {
                counted,
                over_limit,
            } => EventResult {
                index: pos,
                status: "accepted".into(),
                reason: None,
                message: None,
                field: None,
                counted: Some(counted),
                over_limit: Some(over_limit),
            },
            IngestResult::Duplicate => EventResult {
                index: pos,
                status: "duplicate".into(),
                reason: None,
                message: None,
                field: None,
                counted: None,
                over_limit: None,
            },
            IngestResult::Rejected { reason } => EventResult {
                index: pos,
                status: "rejected".into(),
                message: Some(reason_message(&reason).to_string()),
                reason: Some(reason),
                field: None,
                counted: None,
                over_limit: None,
            },
        };
        if let Some(slot) = results.get_mut(pos) {
            *slot = Some(r);
        }
    }
    let results: Vec<EventResult> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| invalid(i, None, "the event was not processed".into())))
        .collect();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    Ok(Json(IngestOut {
        accepted: count("accepted"),
        duplicate: count("duplicate"),
        rejected: count("rejected"),
        results,
    }))
}

fn reason_message(reason: &str) -> &'static str {
    match reason {
        "unknown_customer" => "no customer has this id",
        "customer_deleted" => "the customer is deleted",
        "unknown_feature" => "no feature has this key",
        "wrong_feature_kind" => "only metered features take events",
        "invalid_quantity" => "the quantity must be greater than zero",
        "invalid_idempotency_key" => {
            "the idempotency key must be 1 to 255 bytes without control characters"
        }
        "too_old" => "the timestamp is older than the backdate window (48 hours by default)",
        "in_the_future" => {
            "the timestamp is further ahead than the allowed clock skew (5 minutes by default)"
        }
        _ => "rejected",
    }
}
