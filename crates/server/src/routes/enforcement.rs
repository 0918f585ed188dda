//! Enforcement: "may this customer do this now?", and doing it.
//!
//! - `POST /v1/check`: a dry run (`consume: false`, the default) or an atomic
//!   check-and-consume (`consume: true`) on a metered feature; a hit on a rate
//!   feature; the answer for a flag or a cap (dry run only).
//! - `POST /v1/reservations`, `…/{id}/commit`, `…/{id}/release`: hold a quantity
//!   until the real size of the work is known.
//! - `POST /v1/leases`, `…/{id}/heartbeat`, `DELETE /v1/leases/{id}`: concurrency.
//! - `PUT /v1/customers/{id}/gauges/{feature}`, `…/adjust`: gauge levels.
//! - `GET /v1/customers/{id}/features/{feature}`: one feature's entitlement
//!   (flag on?, value, cap maximum), with `?value=` for caps and `?contains=`
//!   for value sets.
//!
//! A denied *action* (consume, reserve, commit, lease, gauge up) is an HTTP
//! error: `429` (`limit_reached`, `rate_limited`, `concurrency_limit_reached`)
//! with `Retry-After`, or `403` (`feature_not_in_plan`, `subscription_inactive`,
//! `trial_expired`, `no_subscription`, `above_cap`) with `upgrade_to`; the
//! problem body carries the decision (`limit`, `used`, `remaining`,
//! `resets_at`, `upgrade_to`). A dry-run *question* that would be denied is a
//! `200` with `allowed: false`.
//!
//! Quantities in requests are JSON numbers or decimal strings, parsed from their
//! literal text (never through a float); in responses they are decimal strings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use tollgate_core::catalog::{Entitlement, FeatureKind};
use tollgate_engine::{
    CommitRequest, Decision, DenyReason, Engine, FeatureSummary, LeaseDecision, UsageRequest,
};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, IdempotencyHeader};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check))
        .routes(routes!(reserve))
        .routes(routes!(commit_reservation))
        .routes(routes!(release_reservation))
        .routes(routes!(acquire_lease))
        .routes(routes!(heartbeat_lease))
        .routes(routes!(release_lease))
        .routes(routes!(release_lease_post))
        .routes(routes!(set_gauge))
        .routes(routes!(adjust_gauge))
        .routes(routes!(feature_entitlement))
}

// ---------------------------------------------------------------------------
// Quantities: JSON numbers or strings, exact
// ---------------------------------------------------------------------------

/// The largest quantity (in absolute value) one request may carry: the engine's
/// bound (10^15), checked here too so the answer names the request field.
pub use tollgate_engine::MAX_QUANTITY as MAX_MAGNITUDE;

/// Parses a decimal from a JSON number's literal text or a string's content:
/// digits, one optional sign, one optional point and an optional exponent.
/// `NaN`, `Infinity`, hex, underscores and blanks are refused, and so is a
/// magnitude above [`MAX_MAGNITUDE`].
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let ok_chars = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if !ok_chars || !text.bytes().any(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a decimal number"));
    }
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    let value = parsed.map_err(|_| {
        format!("{text:?} is not a decimal number within range (at most 28 decimal places)")
    })?;
    if value.abs() > MAX_MAGNITUDE {
        return Err(format!(
            "{text} is too large: at most {MAX_MAGNITUDE} in one request"
        ));
    }
    Ok(value)
}

/// Reads a decimal from the raw JSON text of a value (a number or a string).
pub fn decimal_from_raw(raw: &str) -> Result<Decimal, String> {
    let raw = raw.trim();
    if raw.starts_with('"') {
        let s: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        parse_decimal(&s)
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        parse_decimal(raw)
    } else {
        Err(format!(
            "expected a decimal number (a JSON number or a string such as \"1.5\"), got {raw}"
        ))
    }
}

/// A signed decimal in a request: a JSON number (read from its literal text,
/// never through a float) or a decimal string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount(pub Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Box<RawValue>>::deserialize(d)?;
        decimal_from_raw(raw.get())
            .map(Amount)
            .map_err(serde::de::Error::custom)
    }
}

/// A quantity in a request: like [`Amount`] but never negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(pub Decimal);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Amount(v) = Amount::deserialize(d)?;
        if v.is_sign_negative() && !v.is_zero() {
            return Err(serde::de::Error::custom(format!(
                "must not be negative (got {v})"
            )));
        }
        Ok(Quantity(v))
    }
}

fn decimal_schema(description: &str, pattern: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
                .examples([serde_json::json!("1.5")]),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .description(Some(description))
        .into()
}

impl utoipa::PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        decimal_schema(
            "A decimal: a JSON number (read exactly, never as a float) or a decimal string.",
            r"^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$",
        )
    }
}
impl ToSchema for Amount {}

impl utoipa::PartialSchema for Quantity {
    fn schema() -> RefOr<Schema> {
        decimal_schema(
            "A non-negative decimal: a JSON number (read exactly, never as a float) or a decimal string.",
            r"^\+?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$",
        )
    }
}
impl ToSchema for Quantity {}

/// Decimals are answered in their shortest form ("2", not "2.000").
pub(crate) fn norm(d: Decimal) -> Decimal {
    d.normalize()
}

// ---------------------------------------------------------------------------
// Shared answer types and helpers
// ---------------------------------------------------------------------------

/// The engine's answer to a check, consume, commit, gauge change or rate hit.
/// `limit` and `remaining` are `null` when unlimited.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DecisionOut {
    pub allowed: bool,
    /// `true` when nothing was recorded (`consume: false`).
    pub dry_run: bool,
    pub customer: String,
    pub feature: String,
    #[schema(value_type = String, example = "1")]
    pub quantity: Decimal,
    /// The limit of the current window (`null` = unlimited).
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    /// What is counted in the current window (after this request if it was
    /// recorded); gauges: the level; rates: hits in the window.
    #[schema(value_type = String)]
    pub used: Decimal,
    /// What can still be taken now (plan allowance + grants − holds; `null` =
    /// unlimited).
    #[schema(value_type = Option<String>)]
    pub remaining: Option<Decimal>,
    /// When the window resets (rates: when the oldest hit leaves the window).
    pub resets_at: Option<Timestamp>,
    /// Why it was denied: `limit_reached`, `rate_limited`,
    /// `concurrency_limit_reached`, `feature_not_in_plan`,
    /// `subscription_inactive`, `trial_expired`, `no_subscription`, `above_cap`.
    pub reason: Option<String>,
    /// The cheapest plan that would allow it (on denials).
    pub upgrade_to: Option<String>,
    /// The part of the quantity beyond the allowance (soft limits): allowed,
    /// flagged, recorded as overage.
    #[schema(value_type = String)]
    pub overage: Decimal,
    /// Usage is above the limit after this request (soft limit exceeded).
    pub over_limit: bool,
    /// The customer's admin bypass allowed what the plan would not.
    pub bypassed: bool,
    /// This is the first answer to an idempotent retry (nothing was counted again).
    pub replayed: bool,
    /// The reservation committed (commits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
}

impl DecisionOut {
    pub fn from_decision(
        customer: &str,
        feature: &str,
        d: &Decision,
        dry_run: bool,
    ) -> DecisionOut {
        crate::metrics::decision(feature, d.allowed);
        DecisionOut {
            allowed: d.allowed,
            dry_run,
            customer: customer.to_string(),
            feature: feature.to_string(),
            quantity: norm(d.quantity),
            limit: d.limit.map(norm),
            used: norm(d.used),
            remaining: d.remaining.map(norm),
            resets_at: d.resets_at,
            reason: d.reason.map(|r| r.as_str().to_string()),
            upgrade_to: d.upgrade_to.as_deref().map(str::to_string),
            overage: norm(d.overage),
            over_limit: d.over_limit,
            bypassed: d.bypassed,
            replayed: d.replayed,
            reservation_id: None,
        }
    }
}

impl DecisionOut {
    /// The answer's JSON, written by hand: the very document serde writes for
    /// this type (same fields, order and formats; the test
    /// `hand_written_json_is_serdes` compares the two), at a fraction of the
    /// cost, because every check and consume answers with one.
    pub fn to_json(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(384);
        let dec = |b: &mut Vec<u8>, d: &Decimal| json_decimal(b, d);
        b.extend_from_slice(b"{\"allowed\":");
        json_bool(&mut b, self.allowed);
        b.extend_from_slice(b",\"dry_run\":");
        json_bool(&mut b, self.dry_run);
        b.extend_from_slice(b",\"customer\":");
        json_str(&mut b, &self.customer);
        b.extend_from_slice(b",\"feature\":");
        json_str(&mut b, &self.feature);
        b.extend_from_slice(b",\"quantity\":");
        dec(&mut b, &self.quantity);
        b.extend_from_slice(b",\"limit\":");
        match &self.limit {
            Some(d) => dec(&mut b, d),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"used\":");
        dec(&mut b, &self.used);
        b.extend_from_slice(b",\"remaining\":");
        match &self.remaining {
            Some(d) => dec(&mut b, d),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"resets_at\":");
        match &self.resets_at {
            Some(t) => {
                use std::io::Write as _;
                // Writing into a Vec cannot fail.
                let _ = write!(b, "\"{t}\"");
            }
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"reason\":");
        json_opt_str(&mut b, self.reason.as_deref());
        b.extend_from_slice(b",\"upgrade_to\":");
        json_opt_str(&mut b, self.upgrade_to.as_deref());
        b.extend_from_slice(b",\"overage\":");
        dec(&mut b, &self.overage);
        b.extend_from_slice(b",\"over_limit\":");
        json_bool(&mut b, self.over_limit);
        b.extend_from_slice(b",\"bypassed\":");
        json_bool(&mut b, self.bypassed);
        b.extend_from_slice(b",\"replayed\":");
        json_bool(&mut b, self.replayed);
        if let Some(id) = &self.reservation_id {
            b.extend_from_slice(b",\"reservation_id\":");
            json_str(&mut b, id);
        }
        b.push(b'}');
        b
    }
}

/// A decimal as serde writes it (a string of its `Display`); whole
/// non-negative numbers, nearly every quantity, without the `fmt` machinery.
fn json_decimal(b: &mut Vec<u8>, d: &Decimal) {
    use std::io::Write as _;
    match u64::try_from(d.mantissa()) {
        Ok(whole) if d.scale() == 0 && !d.is_sign_negative() => {
            b.push(b'"');
            b.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
            b.push(b'"');
        }
        // Writing into a Vec cannot fail.
        _ => {
            let _ = write!(b, "\"{d}\"");
        }
    }
}

/// Answers with [`DecisionOut::to_json`].
impl IntoResponse for DecisionOut {
    fn into_response(self) -> Response {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            self.to_json(),
        )
            .into_response()
    }
}

fn json_bool(b: &mut Vec<u8>, v: bool) {
    b.extend_from_slice(if v { b"true" } else { b"false" });
}

/// A JSON string: copied as is when nothing in it needs escaping (ids and
/// feature keys), else escaped by serde_json.
fn json_str(b: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else if serde_json::to_writer(&mut *b, s).is_err() {
        // A string always serializes; keep the document valid regardless.
        b.extend_from_slice(b"null");
    }
}

fn json_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(b, s),
        None => b.extend_from_slice(b"null"),
    }
}

/// A denial as the API documents it: an RFC 9457 problem carrying the decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DenialProblem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The reason (`limit_reached`, `feature_not_in_plan`, …).
    pub code: String,
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub used: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub remaining: Option<Decimal>,
    pub resets_at: Option<Timestamp>,
    pub upgrade_to: Option<String>,
}

/// The status of a denial: 429 when waiting (or buying more) helps, 403 when
/// the plan or the subscription forbids it.
pub fn denial_status(reason: &str) -> StatusCode {
    match reason {
        "limit_reached" | "rate_limited" | "concurrency_limit_reached" => {
            StatusCode::TOO_MANY_REQUESTS
        }
        _ => StatusCode::FORBIDDEN,
    }
}

/// Whole seconds from `now` until `at` (rounded up), if `at` is ahead.
pub fn secs_until(now: Timestamp, at: Timestamp) -> Option<u64> {
    let d = at.duration_since(now);
    if d <= SignedDuration::ZERO {
        return None;
    }
    let secs = d.as_secs() + i64::from(d.subsec_nanos() > 0);
    u64::try_from(secs).ok()
}

fn describe(out: &DecisionOut, reason: &str) -> String {
    let upgrade = out
        .upgrade_to
        .as_deref()
        .map(|p| format!(" Upgrade to {p:?} to allow it."))
        .unwrap_or_default();
    let c = &out.customer;
    let f = &out.feature;
    match reason {
        "limit_reached" => {
            let limit = out.limit.map_or("unlimited".to_string(), |l| l.to_string());
            let remaining = out
                .remaining
                .map_or("unlimited".to_string(), |r| r.to_string());
            let resets = out
                .resets_at
                .map(|t| format!(" It resets at {t}."))
                .unwrap_or_default();
            format!(
                "customer {c:?} has used {} of {limit} {f} in this window and asked for {}; {remaining} remaining.{resets}{upgrade}",
                out.used, out.quantity
            )
        }
        "rate_limited" => {
            let limit = out.limit.map_or("unlimited".to_string(), |l| l.to_string());
            let retry = out
                .resets_at
                .map(|t| format!(" Retry after {t}."))
                .unwrap_or_default();
            format!(
                "customer {c:?} made {} of {limit} {f} allowed in the rate window.{retry}{upgrade}",
                out.used
            )
        }
        "concurrency_limit_reached" => {
            let limit = out.limit.map_or("unlimited".to_string(), |l| l.to_string());
            format!(
                "customer {c:?} holds {} of {limit} concurrent {f} leases.{upgrade}",
                out.used
            )
        }
        "feature_not_in_plan" => {
            format!("{f} is not included in the plan of customer {c:?}.{upgrade}")
        }
        "subscription_inactive" => {
            format!("the subscription of customer {c:?} is not active (canceled or not started).")
        }
        "trial_expired" => format!("the trial of customer {c:?} has ended.{upgrade}"),
        "no_subscription" => format!("customer {c:?} has no subscription."),
        "above_cap" => {
            let max = out.limit.map_or("unlimited".to_string(), |l| l.to_string());
            format!(
                "{} is above the {f} maximum of {max} for customer {c:?}.{upgrade}",
                out.quantity
            )
        }
        other => format!("denied: {other}"),
    }
}

/// Turns a denied decision into the API's 429/403 problem.
pub fn denial(now: Timestamp, out: &DecisionOut) -> ApiError {
    let reason = out.reason.clone().unwrap_or_else(|| "denied".to_string());
    let status = denial_status(&reason);
    let retry_after_secs = if status == StatusCode::TOO_MANY_REQUESTS {
        out.resets_at.and_then(|t| secs_until(now, t))
    } else {
        None
    };
    let body = match serde_json::to_value(out) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    ApiError::Denied {
        status,
        detail: describe(out, &reason),
        reason,
        retry_after_secs,
        body,
    }
}

/// The idempotency key from the body or the `Idempotency-Key` header (both
/// given and different → 422).
pub fn idempotency_key(
    header: &IdempotencyHeader,
    body: Option<String>,
) -> Result<Option<String>, ApiError> {
    let header = match &header.0 {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::field("Idempotency-Key", "must be printable ASCII text"))?
                .to_string(),
        ),
        None => None,
    };
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(ApiError::field(
            "idempotency_key",
            "differs from the Idempotency-Key header; send one or the other",
        )),
        (h, b) => Ok(b.or(h)),
    }
}

/// The kind of a catalog feature; an unknown feature is a 422 naming `feature`.
pub fn feature_kind(engine: &Engine, feature: &str) -> Result<FeatureKind, ApiError> {
    engine
        .with_catalog(|c| c.feature(feature).map(|f| f.kind.clone()))
        .ok_or_else(|| ApiError::field("feature", format!("unknown feature {feature:?}")))
}

/// The cheapest public plan above `tier` (the subscriber's plan's, see
/// [`Engine::plan_tier`]; any public plan without a subscription) whose
/// entitlement for `feature` satisfies `needed`.
pub fn upgrade_for(
    engine: &Engine,
    tier: Option<u32>,
    feature: &str,
    needed: &dyn Fn(&Entitlement) -> bool,
) -> Option<String> {
    engine.with_catalog(|c| c.upgrade_plan(feature, needed, tier).map(|p| p.key.clone()))
}

/// One feature of the customer's entitlements summary, with the plan and what
/// blocks the whole subscription (if anything).
struct FeatureView {
    summary: FeatureSummary,
    /// The tier of the subscriber's plan, as served.
    tier: Option<u32>,
    blocked: Option<DenyReason>,
    bypass: bool,
}

fn feature_view(engine: &Engine, customer: &str, feature: &str) -> Result<FeatureView, ApiError> {
    let s = engine.entitlements(customer)?;
    let summary = s
        .features
        .into_iter()
        .find(|f| f.feature == feature)
        .ok_or_else(|| ApiError::field("feature", format!("unknown feature {feature:?}")))?;
    Ok(FeatureView {
        summary,
        tier: s
            .plan_key
            .as_deref()
            .zip(s.plan_version)
            .and_then(|(k, v)| engine.plan_tier(k, v)),
        blocked: s.blocked,
        bypass: s.admin_bypass,
    })
}

fn ensure_customer(engine: &Engine, customer: &str) -> Result<(), ApiError> {
    match engine.customer(customer) {
        Some(c) if c.deleted_at.is_none() => Ok(()),
        _ => Err(ApiError::NotFound {
            what: "customer",
            id: customer.to_string(),
        }),
    }
}

// ---------------------------------------------------------------------------
// POST /v1/check
// ---------------------------------------------------------------------------

/// `POST /v1/check`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The customer (the host application's id).
    pub customer: String,
    /// The feature key.
    pub feature: String,
    /// Default 1. For caps: the value to compare with the maximum.
    #[serde(default)]
    pub quantity: Option<Quantity>,
    /// `false` (default): a dry run, nothing is recorded. `true`: record it
    /// (metered: atomic check-and-consume; rate: a hit).
    #[serde(default)]
    pub consume: bool,
    /// Unique per customer: a retry with the same key returns the first answer
    /// (`replayed: true`) and counts once. Also accepted as the
    /// `Idempotency-Key` header.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Stored with the usage record (dimensions for pricing, audit).
    #[serde(default)]
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
    /// `false`: counts against limits but is not invoiced. Default `true`.
    #[serde(default)]
    pub billable: Option<bool>,
}

/// May this customer do this now? (And, with `consume: true`, do it.)
///
/// Metered features: `consume: false` (the default) is a dry run
/// (`engine.check`); `consume: true` is an atomic check-and-consume, recorded
/// durably before the answer. Rate features: `consume: true` records a hit;
/// a dry run answers from the current window. Flags and caps answer dry runs
/// (nothing to record; `quantity` is the value compared with a cap).
///
/// A denied **consume** is an HTTP error: `429` (`limit_reached`,
/// `rate_limited`) with `Retry-After` (seconds until `resets_at`), or `403`
/// (`feature_not_in_plan`, `subscription_inactive`, `trial_expired`,
/// `no_subscription`) with `upgrade_to`; the problem body carries `limit`,
/// `used`, `remaining`, `resets_at` and `upgrade_to`. A denied **dry run** is a
/// `200` with `allowed: false`: it is a question, not an action.
#[utoipa::path(
    post,
    path = "/v1/check",
    tag = "enforcement",
    request_body = CheckRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same as `idempotency_key` in the body")),
    responses(
        (status = 200, description = "The decision (dry runs: allowed or not; consumes: allowed)", body = DecisionOut),
        (status = 403, description = "Consume denied by the plan or the subscription", body = DenialProblem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid request (the field is named)", content_type = "application/problem+json"),
        (status = 429, description = "Consume denied: limit reached or rate limited", body = DenialProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the window resets"))),
    )
)]
pub async fn check(
    State(state): State<AppState>,
    principal: Principal,
    headers: IdempotencyHeader,
    ApiJson(req): ApiJson<CheckRequest>,
) -> Result<DecisionOut, ApiError> {
    principal.require_server()?;
    let key = idempotency_key(&headers, req.idempotency_key.clone())?;
    let engine = &*state.engine;
    let kind = feature_kind(engine, &req.feature)?;
    let quantity = req.quantity.map_or(Decimal::ONE, |q| q.0);
    let usage = UsageRequest {
        customer: req.customer.clone(),
        feature: req.feature.clone(),
        quantity,
        idempotency_key: key,
        properties: req.properties.clone().unwrap_or_default(),
        billable: req.billable.unwrap_or(true),
    };
    let dry_run = !req.consume;
    let out = match (&kind, req.consume) {
        (FeatureKind::Metered { .. }, false) => DecisionOut::from_decision(
            &req.customer,
            &req.feature,
            &engine.check(usage).await?,
            true,
        ),
        (FeatureKind::Metered { .. }, true) => DecisionOut::from_decision(
            &req.customer,
            &req.feature,
            &engine.consume(usage).await?,
            false,
        ),
        (FeatureKind::Rate { .. }, true) => DecisionOut::from_decision(
            &req.customer,
            &req.feature,
            &engine.hit(usage).await?,
            false,
        ),
        (FeatureKind::Rate { .. }, false) => {
            rate_dry_run(engine, &req.customer, &req.feature, quantity)?
        }
        (FeatureKind::Flag, false) => flag_dry_run(engine, &req.customer, &req.feature)?,
        (FeatureKind::Cap, false) => cap_dry_run(engine, &req.customer, &req.feature, quantity)?,
        (FeatureKind::Flag | FeatureKind::Cap, true) => {
            return Err(ApiError::field(
                "consume",
                format!(
                    "{} is a {} feature: there is nothing to consume; ask with consume=false",
                    req.feature,
                    kind.name()
                ),
            ));
        }
        (other, _) => {
            let hint = match other {
                FeatureKind::Gauge => "use PUT /v1/customers/{id}/gauges/{feature}",
                FeatureKind::Concurrency { .. } => "use POST /v1/leases",
                _ => "use GET /v1/customers/{id}/features/{feature}",
            };
            return Err(ApiError::field(
                "feature",
                format!(
                    "{} is a {} feature; /v1/check answers metered, rate, flag and cap features ({hint})",
                    req.feature,
                    other.name()
                ),
            ));
        }
    };
    if !out.allowed && !dry_run {
        return Err(denial(engine.now(), &out));
    }
    Ok(out)
}

fn blank_out(customer: &str, feature: &str, quantity: Decimal) -> DecisionOut {
    DecisionOut {
        allowed: false,
        dry_run: true,
        customer: customer.to_string(),
        feature: feature.to_string(),
        quantity: norm(quantity),
        limit: None,
        used: Decimal::ZERO,
        remaining: None,
        resets_at: None,
        reason: None,
        upgrade_to: None,
        overage: Decimal::ZERO,
        over_limit: false,
        bypassed: false,
        replayed: false,
        reservation_id: None,
    }
}

fn rate_dry_run(
    engine: &Engine,
    customer: &str,
    feature: &str,
    quantity: Decimal,
) -> Result<DecisionOut, ApiError> {
    if quantity <= Decimal::ZERO {
        return Err(ApiError::field("quantity", "must be greater than zero"));
    }
    ensure_customer(engine, customer)?;
    let v = feature_view(engine, customer, feature)?;
    let s = &v.summary;
    let mut out = blank_out(customer, feature, quantity);
    out.used = norm(s.used.unwrap_or_default());
    out.limit = s.limit.map(norm);
    out.remaining = s.remaining.map(norm);
    out.resets_at = s.resets_at;
    let within = s.remaining.is_none_or(|r| r >= quantity);
    if !s.access && !v.bypass {
        out.reason = Some(
            v.blocked
                .unwrap_or(DenyReason::FeatureNotInPlan)
                .as_str()
                .to_string(),
        );
        out.limit = None;
        out.remaining = None;
        out.upgrade_to = upgrade_for(engine, v.tier, feature, &|e| e.allows(quantity));
    } else if !within && !v.bypass {
        out.reason = Some(DenyReason::RateLimited.as_str().to_string());
        let needed = s.used.unwrap_or_default().saturating_add(quantity);
        out.upgrade_to = upgrade_for(engine, v.tier, feature, &|e| e.allows(needed));
    } else {
        out.allowed = true;
        out.bypassed = v.bypass && (!s.access || !within);
    }
    Ok(out)
}

fn flag_dry_run(engine: &Engine, customer: &str, feature: &str) -> Result<DecisionOut, ApiError> {
    let enabled = engine.flag(customer, feature)?;
    let mut out = blank_out(customer, feature, Decimal::ONE);
    out.allowed = enabled;
    if !enabled {
        let v = feature_view(engine, customer, feature)?;
        out.reason = Some(
            v.blocked
                .unwrap_or(DenyReason::FeatureNotInPlan)
                .as_str()
                .to_string(),
        );
        out.upgrade_to = upgrade_for(engine, v.tier, feature, &|e| e.is_enabled());
    }
    Ok(out)
}

fn cap_dry_run(
    engine: &Engine,
    customer: &str,
    feature: &str,
    value: Decimal,
) -> Result<DecisionOut, ApiError> {
    let d = engine.cap_check(customer, feature, value)?;
    let mut out = blank_out(customer, feature, value);
    out.allowed = d.allowed;
    out.limit = d.max.map(norm);
    out.reason = d.reason.map(|r| r.as_str().to_string());
    out.upgrade_to = d.upgrade_to.as_deref().map(str::to_string);
    out.bypassed = d.bypassed;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------

/// `POST /v1/reservations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    pub customer: String,
    /// A metered feature.
    pub feature: String,
    /// The quantity held against the limit.
    pub quantity: Quantity,
    /// How long the hold lasts if neither committed nor released (default 300).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// A retry with the same key returns the first reservation. Also accepted as
    /// the `Idempotency-Key` header.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Stored with the reservation.
    #[serde(default)]
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
}

/// A reservation: a quantity held against the limit until committed, released
/// or expired.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationOut {
    /// `res_…`
    pub id: String,
    pub customer: String,
    pub feature: String,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    pub expires_at: Option<Timestamp>,
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    /// Counted usage in the window (holds are not usage).
    #[schema(value_type = String)]
    pub used: Decimal,
    /// What can still be taken now, after this hold.
    #[schema(value_type = Option<String>)]
    pub remaining: Option<Decimal>,
    pub resets_at: Option<Timestamp>,
    pub replayed: bool,
}

/// Reserve a quantity.
///
/// Holds `quantity` of a metered feature against the customer's limit until it
/// is committed with the real quantity, released, or expires after
/// `ttl_seconds` (default 300). Denied like a consume: `429` / `403`.
#[utoipa::path(
    post,
    path = "/v1/reservations",
    tag = "enforcement",
    request_body = ReserveRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same as `idempotency_key` in the body")),
    responses(
        (status = 201, description = "Held", body = ReservationOut),
        (status = 403, description = "Denied by the plan or the subscription", body = DenialProblem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", content_type = "application/problem+json"),
        (status = 429, description = "Not enough left to hold", body = DenialProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the window resets"))),
    )
)]
pub async fn reserve(
    State(state): State<AppState>,
    principal: Principal,
    headers: IdempotencyHeader,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<(StatusCode, Json<ReservationOut>), ApiError> {
    principal.require_server()?;
    let key = idempotency_key(&headers, req.idempotency_key.clone())?;
    let ttl = match req.ttl_seconds {
        None => None,
        Some(0) => return Err(ApiError::field("ttl_seconds", "must be at least 1")),
        Some(s) => Some(
            i64::try_from(s)
                .ok()
                .filter(|s| *s <= 366 * 86_400)
                .map(SignedDuration::from_secs)
                .ok_or_else(|| {
                    ApiError::field("ttl_seconds", "must be at most 31622400 (366 days)")
                })?,
        ),
    };
    let engine = &*state.engine;
    let usage = UsageRequest {
        customer: req.customer.clone(),
        feature: req.feature.clone(),
        quantity: req.quantity.0,
        idempotency_key: key,
        properties: req.properties.unwrap_or_default(),
        billable: true,
    };
    let d = engine.reserve(usage, ttl).await?;
    let out = DecisionOut::from_decision(&req.customer, &req.feature, &d, false);
    if !d.allowed {
        return Err(denial(engine.now(), &out));
    }
    let id = d
        .reservation_id
        .clone()
        .ok_or_else(|| ApiError::Internal("an allowed reservation has no id".into()))?;
    Ok((
        StatusCode::CREATED,
        Json(ReservationOut {
            id,
            customer: req.customer,
            feature: req.feature,
            quantity: norm(d.quantity),
            expires_at: d.reservation_expires_at,
            limit: d.limit.map(norm),
            used: norm(d.used),
            remaining: d.remaining.map(norm),
            resets_at: d.resets_at,
            replayed: d.replayed,
        }),
    ))
}

/// `POST /v1/reservations/{id}/commit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// The quantity actually used (less, more than reserved, or 0).
    pub quantity: Quantity,
    /// On a hard limit, record what goes beyond the allowance as overage
    /// instead of denying the commit.
    #[serde(default)]
    pub allow_overage: bool,
    #[serde(default)]
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub billable: Option<bool>,
}

/// Commit a reservation with the real quantity.
///
/// Less than reserved frees the rest; more is checked like a consume (a denial
/// keeps the reservation open) unless `allow_overage`. Committing again returns
/// the first answer (`replayed: true`).
#[utoipa::path(
    post,
    path = "/v1/reservations/{id}/commit",
    tag = "enforcement",
    request_body = CommitBody,
    params(("id" = String, Path, description = "The reservation id (`res_…`)")),
    responses(
        (status = 200, description = "Recorded", body = DecisionOut),
        (status = 404, description = "Unknown reservation", content_type = "application/problem+json"),
        (status = 409, description = "The reservation is released or expired", content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", content_type = "application/problem+json"),
        (status = 429, description = "The extra beyond the hold is over the limit (the reservation stays open)", body = DenialProblem, content_type = "application/problem+json"),
    )
)]
pub async fn commit_reservation(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommitBody>,
) -> Result<DecisionOut, ApiError> {
    principal.require_server()?;
    let engine = &*state.engine;
    let d = engine
        .commit(CommitRequest {
            reservation_id: id.clone(),
            quantity: req.quantity.0,
            allow_overage: req.allow_overage,
            properties: req.properties.unwrap_or_default(),
            billable: req.billable.unwrap_or(true),
        })
        .await?;
    let (customer, feature) = reservation_subject(&state, &id).await;
    let mut out = DecisionOut::from_decision(&customer, &feature, &d, false);
    out.reservation_id = Some(id);
    if !d.allowed {
        return Err(denial(engine.now(), &out));
    }
    Ok(out)
}

/// The customer and feature of a reservation (for answers), from the store.
async fn reservation_subject(state: &AppState, id: &str) -> (String, String) {
    match state.store.get_reservation(id).await {
        Ok(Some(r)) => (r.customer_id, r.feature),
        _ => (String::new(), String::new()),
    }
}

/// The state of a reservation after a release.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleasedOut {
    pub id: String,
    /// `released`.
    pub state: String,
}

/// Release a reservation: the hold is freed, nothing is recorded.
#[utoipa::path(
    post,
    path = "/v1/reservations/{id}/release",
    tag = "enforcement",
    params(("id" = String, Path, description = "The reservation id (`res_…`)")),
    responses(
        (status = 200, description = "Released", body = ReleasedOut),
        (status = 404, description = "Unknown reservation", content_type = "application/problem+json"),
        (status = 409, description = "Already committed, released or expired", content_type = "application/problem+json"),
    )
)]
pub async fn release_reservation(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ReleasedOut>, ApiError> {
    principal.require_server()?;
    state.engine.release(&id).await?;
    Ok(Json(ReleasedOut {
        id,
        state: "released".into(),
    }))
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

/// `POST /v1/leases`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub customer: String,
    /// A concurrency feature.
    pub feature: String,
}

/// A concurrency lease held until released or expired (renew it with a
/// heartbeat before `expires_at`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseOut {
    /// `lse_…`
    pub lease_id: String,
    pub customer: String,
    pub feature: String,
    pub expires_at: Option<Timestamp>,
    /// Leases held now, this one included.
    pub active: u32,
    /// At most this many at once (`null` = unlimited).
    pub limit: Option<u32>,
    pub bypassed: bool,
}

/// Acquire a concurrency lease.
///
/// Denied with `429 concurrency_limit_reached` (and `Retry-After`: seconds
/// until the earliest held lease expires) when the customer holds as many
/// leases as the plan allows; `403` when the plan lacks the feature.
#[utoipa::path(
    post,
    path = "/v1/leases",
    tag = "enforcement",
    request_body = LeaseRequest,
    responses(
        (status = 201, description = "Acquired", body = LeaseOut),
        (status = 403, description = "Not in the plan / subscription inactive", body = DenialProblem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", content_type = "application/problem+json"),
        (status = 429, description = "As many leases held as the plan allows", body = DenialProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the earliest lease expires"))),
    )
)]
pub async fn acquire_lease(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<(StatusCode, Json<LeaseOut>), ApiError> {
    principal.require_server()?;
    let engine = &*state.engine;
    let d = engine.acquire(&req.customer, &req.feature)?;
    if !d.allowed {
        return Err(lease_denial(engine.now(), &req, &d));
    }
    let lease_id = d
        .lease_id
        .clone()
        .ok_or_else(|| ApiError::Internal("an allowed lease has no id".into()))?;
    Ok((
        StatusCode::CREATED,
        Json(LeaseOut {
            lease_id,
            customer: req.customer,
            feature: req.feature,
            expires_at: d.expires_at,
            active: d.active,
            limit: d.limit,
            bypassed: d.bypassed,
        }),
    ))
}

fn lease_denial(now: Timestamp, req: &LeaseRequest, d: &LeaseDecision) -> ApiError {
    let mut out = blank_out(&req.customer, &req.feature, Decimal::ONE);
    out.dry_run = false;
    out.limit = d.limit.map(Decimal::from);
    out.used = Decimal::from(d.active);
    out.remaining = d.limit.map(|l| Decimal::from(l.saturating_sub(d.active)));
    out.resets_at = d.retry_at;
    out.reason = d.reason.map(|r| r.as_str().to_string());
    out.upgrade_to = d.upgrade_to.as_deref().map(str::to_string);
    denial(now, &out)
}

/// A renewed lease.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatOut {
    pub lease_id: String,
    pub expires_at: Timestamp,
}

/// Renew a lease for another TTL from now.
///
/// An expired, released or unknown lease (also after a server restart: leases
/// live in memory) is a `404`: acquire a new one.
#[utoipa::path(
    post,
    path = "/v1/leases/{id}/heartbeat",
    tag = "enforcement",
    params(("id" = String, Path, description = "The lease id")),
    responses(
        (status = 200, description = "Renewed", body = HeartbeatOut),
        (status = 404, description = "Expired, released or unknown: re-acquire", content_type = "application/problem+json"),
    )
)]
pub async fn heartbeat_lease(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<HeartbeatOut>, ApiError> {
    principal.require_server()?;
    let expires_at = state.engine.heartbeat(&id)?;
    Ok(Json(HeartbeatOut {
        lease_id: id,
        expires_at,
    }))
}

/// Release a lease.
#[utoipa::path(
    delete,
    path = "/v1/leases/{id}",
    tag = "enforcement",
    params(("id" = String, Path, description = "The lease id")),
    responses(
        (status = 204, description = "Released"),
        (status = 404, description = "Expired, released or unknown", content_type = "application/problem+json"),
    )
)]
pub async fn release_lease(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_server()?;
    state.engine.release_lease(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Release a lease (the same as `DELETE /v1/leases/{id}`, for clients that
/// only send POST).
#[utoipa::path(
    post,
    path = "/v1/leases/{id}/release",
    tag = "enforcement",
    params(("id" = String, Path, description = "The lease id")),
    responses(
        (status = 204, description = "Released"),
        (status = 404, description = "Expired, released or unknown", content_type = "application/problem+json"),
    )
)]
pub async fn release_lease_post(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_server()?;
    state.engine.release_lease(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Gauges
// ---------------------------------------------------------------------------

/// `PUT /v1/customers/{id}/gauges/{feature}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GaugeSetRequest {
    /// The new level (≥ 0).
    pub level: Quantity,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
}

/// Set a gauge to a level.
///
/// Going up is checked against the limit (a hard limit denies with `429
/// limit_reached`, the level unchanged); going down is always allowed.
#[utoipa::path(
    put,
    path = "/v1/customers/{id}/gauges/{feature}",
    tag = "enforcement",
    request_body = GaugeSetRequest,
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("feature" = String, Path, description = "A gauge feature"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same as `idempotency_key` in the body"),
    ),
    responses(
        (status = 200, description = "The new level (`used`)", body = DecisionOut),
        (status = 403, description = "Not in the plan / subscription inactive", body = DenialProblem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", content_type = "application/problem+json"),
        (status = 429, description = "Above the limit", body = DenialProblem, content_type = "application/problem+json"),
    )
)]
pub async fn set_gauge(
    State(state): State<AppState>,
    principal: Principal,
    Path((customer, feature)): Path<(String, String)>,
    headers: IdempotencyHeader,
    ApiJson(req): ApiJson<GaugeSetRequest>,
) -> Result<DecisionOut, ApiError> {
    principal.require_server()?;
    let key = idempotency_key(&headers, req.idempotency_key)?;
    let engine = &*state.engine;
    let d = engine
        .gauge_set(UsageRequest {
            customer: customer.clone(),
            feature: feature.clone(),
            quantity: req.level.0,
            idempotency_key: key,
            properties: req.properties.unwrap_or_default(),
            billable: true,
        })
        .await
        .map_err(|e| rename_quantity(e, "level"))?;
    let out = DecisionOut::from_decision(&customer, &feature, &d, false);
    if !d.allowed {
        return Err(denial(engine.now(), &out));
    }
    Ok(out)
}

/// `POST /v1/customers/{id}/gauges/{feature}/adjust`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GaugeAdjustRequest {
    /// Signed, non-zero: `2` adds two, `-1` removes one (never below 0).
    pub delta: Amount,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
}

/// Move a gauge up or down by a delta.
///
/// Up is checked against the limit (`429 limit_reached` on a hard limit);
/// down is always allowed and stops at 0.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/gauges/{feature}/adjust",
    tag = "enforcement",
    request_body = GaugeAdjustRequest,
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("feature" = String, Path, description = "A gauge feature"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same as `idempotency_key` in the body"),
    ),
    responses(
        (status = 200, description = "The new level (`used`)", body = DecisionOut),
        (status = 403, description = "Not in the plan / subscription inactive", body = DenialProblem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", content_type = "application/problem+json"),
        (status = 429, description = "Above the limit", body = DenialProblem, content_type = "application/problem+json"),
    )
)]
pub async fn adjust_gauge(
    State(state): State<AppState>,
    principal: Principal,
    Path((customer, feature)): Path<(String, String)>,
    headers: IdempotencyHeader,
    ApiJson(req): ApiJson<GaugeAdjustRequest>,
) -> Result<DecisionOut, ApiError> {
    principal.require_server()?;
    let key = idempotency_key(&headers, req.idempotency_key)?;
    let delta = req.delta.0;
    if delta.is_zero() {
        return Err(ApiError::field("delta", "must not be zero"));
    }
    let engine = &*state.engine;
    let usage = UsageRequest {
        customer: customer.clone(),
        feature: feature.clone(),
        quantity: delta.abs(),
        idempotency_key: key,
        properties: req.properties.unwrap_or_default(),
        billable: true,
    };
    let d = if delta.is_sign_positive() {
        engine.gauge_increment(usage).await
    } else {
        engine.gauge_decrement(usage).await
    }
    .map_err(|e| rename_quantity(e, "delta"))?;
    let out = DecisionOut::from_decision(&customer, &feature, &d, false);
    if !d.allowed {
        return Err(denial(engine.now(), &out));
    }
    Ok(out)
}

/// The engine names `quantity`; the gauge routes call it `level` / `delta`.
fn rename_quantity(e: tollgate_engine::EngineError, field: &str) -> ApiError {
    match e {
        tollgate_engine::EngineError::InvalidQuantity { reason, .. } => {
            ApiError::field(field, reason)
        }
        other => other.into(),
    }
}

// ---------------------------------------------------------------------------
// GET /v1/customers/{id}/features/{feature}
// ---------------------------------------------------------------------------

/// Query of `GET /v1/customers/{id}/features/{feature}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeatureQuery {
    /// Caps: is this value within the maximum?
    #[serde(default)]
    pub value: Option<String>,
    /// Value features: does the value (set) contain this item?
    #[serde(default)]
    pub contains: Option<String>,
}

/// What a customer may do with one feature now.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureOut {
    pub customer: String,
    pub feature: String,
    /// `metered`, `gauge`, `rate`, `concurrency`, `cap`, `flag` or `value`.
    pub kind: String,
    /// Whether the customer may use the feature at all now.
    pub access: bool,
    /// Flags: on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Value features: `{"type": "string_set", "value": ["srt", "txt"]}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The limit (metered, gauge, rate, concurrency) or the cap's maximum;
    /// absent when unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub used: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub remaining: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_leases: Option<u32>,
    /// Whether an override applies to this customer.
    pub overridden: bool,
    /// The answer to `?value=` or `?contains=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The cheapest plan that would allow it, when something is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_to: Option<String>,
}

/// One feature's entitlement for a customer (flag on?, value, cap maximum, limit).
///
/// `?value=50` on a cap answers whether 50 is within the maximum (`allowed`);
/// `?contains=srt` on a value feature whether its value (set) contains `srt`.
/// Customer keys may read their own customer.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/features/{feature}",
    tag = "enforcement",
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("feature" = String, Path, description = "The feature key"),
        FeatureQuery
    ),
    responses(
        (status = 200, description = "The entitlement", body = FeatureOut),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
        (status = 422, description = "Unknown feature or a query that does not fit its kind", content_type = "application/problem+json"),
    )
)]
pub async fn feature_entitlement(
    State(state): State<AppState>,
    principal: Principal,
    Path((customer, feature)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<FeatureQuery>,
) -> Result<Json<FeatureOut>, ApiError> {
    principal.require_read(&customer)?;
    let engine = &*state.engine;
    let kind = feature_kind(engine, &feature)?;
    ensure_customer(engine, &customer)?;
    let v = feature_view(engine, &customer, &feature)?;
    let s = v.summary;
    let mut out = FeatureOut {
        customer: customer.clone(),
        feature: feature.clone(),
        kind: s.kind.clone(),
        access: s.access,
        enabled: s.enabled,
        value: s.value.clone(),
        limit: s.limit.map(norm),
        used: s.used.map(norm),
        remaining: s.remaining.map(norm),
        resets_at: s.resets_at,
        hard: s.hard,
        active_leases: s.active_leases,
        overridden: s.overridden,
        allowed: None,
        reason: None,
        upgrade_to: None,
    };
    if !s.access {
        out.reason = Some(
            v.blocked
                .unwrap_or(DenyReason::FeatureNotInPlan)
                .as_str()
                .to_string(),
        );
        out.upgrade_to = upgrade_for(engine, v.tier, &feature, &|e| match e {
            Entitlement::Flag { enabled } => *enabled,
            _ => true,
        });
    }
    if let Some(raw) = &q.value {
        if !matches!(kind, FeatureKind::Cap) {
            return Err(ApiError::field(
                "value",
                format!(
                    "?value= applies to cap features; {feature} is a {} feature",
                    kind.name()
                ),
            ));
        }
        let value = parse_decimal(raw).map_err(|m| ApiError::field("value", m))?;
        if value.is_sign_negative() && !value.is_zero() {
            return Err(ApiError::field("value", "must not be negative"));
        }
        let d = engine.cap_check(&customer, &feature, value)?;
        out.allowed = Some(d.allowed);
        out.reason = d.reason.map(|r| r.as_str().to_string());
        out.upgrade_to = d.upgrade_to.as_deref().map(str::to_string);
    }
    if let Some(item) = &q.contains {
        if !matches!(kind, FeatureKind::Value { .. }) {
            return Err(ApiError::field(
                "contains",
                format!(
                    "?contains= applies to value features; {feature} is a {} feature",
                    kind.name()
                ),
            ));
        }
        let yes = engine.value_contains(&customer, &feature, item)?;
        out.allowed = Some(yes);
        if !yes {
            out.reason = Some(
                v.blocked
                    .unwrap_or(DenyReason::FeatureNotInPlan)
                    .as_str()
                    .to_string(),
            );
            out.upgrade_to = upgrade_for(engine, v.tier, &feature, &|e| {
                e.value().is_some_and(|val| val.contains(item))
            });
        } else {
            out.reason = None;
            out.upgrade_to = None;
        }
    }
    Ok(Json(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        q: Quantity,
        #[serde(default)]
        o: Option<Quantity>,
        #[serde(default)]
        a: Option<Amount>,
    }

    fn parse(s: &str) -> Result<T, ApiError> {
        crate::extract::parse_json::<T>(s.as_bytes())
    }

    fn answer(customer: &str, feature: &str) -> DecisionOut {
        DecisionOut {
            allowed: true,
            dry_run: false,
            customer: customer.to_string(),
            feature: feature.to_string(),
            quantity: Decimal::new(125, 2),
            limit: None,
            used: Decimal::new(-3, 0),
            remaining: None,
            resets_at: None,
            reason: None,
            upgrade_to: None,
            overage: Decimal::ZERO,
            over_limit: false,
            bypassed: false,
            replayed: false,
            reservation_id: None,
        }
    }

    /// The hand-written answer is byte for byte what serde writes, for every
    /// optional field present or absent and strings that need escaping.
    #[test]
    fn hand_written_json_is_serdes() {
        let mut cases = vec![answer("bench-1", "queries_per_month")];
        let mut full = answer("ac\"me\\\n\u{1}é", "tokens/🦀");
        full.allowed = false;
        full.dry_run = true;
        full.limit = Some(Decimal::new(1_000_000, 3));
        full.remaining = Some(Decimal::from_i128_with_scale(
            79_228_162_514_264_337_593_543_950_335,
            28,
        ));
        full.resets_at = Some("2026-12-01T00:00:00.000123Z".parse().unwrap());
        full.reason = Some("limit_reached".into());
        full.upgrade_to = Some("pro \"plus\"".into());
        full.overage = Decimal::new(5, 1);
        full.over_limit = true;
        full.bypassed = true;
        full.replayed = true;
        full.reservation_id = Some("res_01".into());
        cases.push(full);
        let mut whole = answer("", "");
        whole.resets_at = Some("2026-11-01T00:00:00Z".parse().unwrap());
        whole.used = Decimal::MAX;
        whole.quantity = Decimal::MIN;
        cases.push(whole);
        // Whole numbers (the fast way), a negative one and a negative zero.
        for (q, used, at) in [
            (Decimal::from(42), Decimal::ZERO, "2026-11-01T00:00:00Z"),
            (Decimal::new(-5, 0), -Decimal::ZERO, "2026-11-01T00:00:00Z"),
            (
                Decimal::from(u64::MAX),
                Decimal::new(1_000, 3),
                "2026-12-01T00:00:00Z",
            ),
        ] {
            let mut c = answer("c", "f");
            c.quantity = q;
            c.used = used;
            c.resets_at = Some(at.parse().unwrap());
            cases.push(c);
        }
        for c in cases {
            let hand = String::from_utf8(c.to_json()).unwrap();
            let serde = serde_json::to_string(&c).unwrap();
            assert_eq!(hand, serde);
        }
    }

    #[test]
    fn quantities_are_read_exactly_from_numbers_and_strings() {
        let t = parse(r#"{"q": 0.1234567890123456789012345}"#).unwrap();
        assert_eq!(t.q.0.to_string(), "0.1234567890123456789012345");
        let t = parse(r#"{"q": "12.50", "o": 3, "a": -2}"#).unwrap();
        assert_eq!(t.q.0.to_string(), "12.50");
        assert_eq!(t.o.unwrap().0, Decimal::from(3));
        assert_eq!(t.a.unwrap().0, Decimal::from(-2));
        let t = parse(r#"{"q": 1e3, "o": null}"#).unwrap();
        assert_eq!(t.q.0, Decimal::from(1000));
        assert!(t.o.is_none());
    }

    #[test]
    fn bad_quantities_name_the_field() {
        for body in [
            r#"{"q": -1}"#,
            r#"{"q": "NaN"}"#,
            r#"{"q": "Infinity"}"#,
            r#"{"q": "1_000"}"#,
            r#"{"q": true}"#,
            r#"{"q": "12abc"}"#,
            r#"{"q": 1, "o": "-0.5"}"#,
            r#"{"q": 1e99999999999}"#,
            r#"{"q": 1e-99}"#,
            r#"{"q": 1e40}"#,
            r#"{"q": 99999999999999999999999999999999999999}"#,
            r#"{"q": "1e"}"#,
            r#"{"q": "."}"#,
            r#"{"q": "1..2"}"#,
            r#"{"q": "--1"}"#,
            r#"{"q": ""}"#,
        ] {
            match parse(body) {
                Err(ApiError::Validation(errs)) => {
                    assert!(
                        errs[0].field == "q" || errs[0].field == "o",
                        "{body}: {errs:?}"
                    );
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let at: Timestamp = "2025-01-01T00:00:01.2Z".parse().unwrap();
        assert_eq!(secs_until(now, at), Some(2));
        assert_eq!(secs_until(at, now), None);
    }
}
