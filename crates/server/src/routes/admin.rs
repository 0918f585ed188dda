//! Operator views across customers (admin keys only).
//!
//! - `GET /v1/admin/usage/summary`: usage per feature across customers, in each
//!   customer's current window.
//! - `GET /v1/admin/usage/top`: the customers using the largest share of their
//!   limit.
//! - `GET /v1/admin/plans/distribution`: customers per plan (by status and
//!   version) with the base revenue they bring per month.
//! - `GET /v1/admin/customers/near-limit`: customers at or above a share of a
//!   limit.
//! - `GET /v1/admin/usage/export`: the ledger as CSV, streamed page by page.
//!
//! The cross-customer views read each live customer's entitlements from the
//! engine's memory (current windows); the export reads the ledger itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::catalog::FeatureKind;
use tollgate_core::money::Money;
use tollgate_core::period::Interval;
use tollgate_store::{CustomerFilter, CustomerRecord, Store, UsageQuery, UsageRecord};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::alerts::{RECENT_EVENTS, current_usage_alert, recent_events};
use crate::routes::enforcement::{norm, parse_decimal};
use crate::routes::plans::MoneyOut;
use crate::routes::usage::percentage;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(usage_summary))
        .routes(routes!(usage_top))
        .routes(routes!(plan_distribution))
        .routes(routes!(near_limit))
        .routes(routes!(usage_export))
}

/// Customers listed per store call.
const CUSTOMER_PAGE: u32 = 1_000;
/// Ledger records per store call of the export.
const EXPORT_PAGE: u32 = 5_000;

/// Every live (not deleted) customer, by id.
async fn live_customers(store: &dyn Store) -> Result<Vec<CustomerRecord>, ApiError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_customers(&CustomerFilter {
                plan_key: None,
                include_deleted: false,
                starting_after: after.clone(),
                limit: CUSTOMER_PAGE,
            })
            .await?;
        let full = page.len() == CUSTOMER_PAGE as usize;
        after = page.last().map(|c| c.id.clone());
        out.extend(page.into_iter().filter(|c| c.deleted_at.is_none()));
        if !full {
            return Ok(out);
        }
    }
}

/// One customer's usage of one limited feature now.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CustomerUsage {
    pub customer: String,
    pub plan: Option<String>,
    pub feature: String,
    /// `metered` or `gauge`.
    pub kind: String,
    #[schema(value_type = String)]
    pub used: Decimal,
    /// `null` = unlimited.
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    /// `used / limit × 100`, two decimals (`null` when unlimited).
    #[schema(value_type = Option<String>)]
    pub percentage_used: Option<Decimal>,
    pub hard: Option<bool>,
    pub resets_at: Option<Timestamp>,
    /// Near-limit view: the latest usage alert (threshold reached, limit
    /// exceeded, denial) fired for this feature in its current window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_alert: Option<LastAlert>,
}

/// The latest usage alert of a (customer, feature) in the current window.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LastAlert {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The threshold reached (`80%`), for `usage.threshold_reached`.
    pub threshold: Option<String>,
    pub created_at: Timestamp,
    /// What the alert recommended (`{"type": "upgrade", "plan": "pro", …}`).
    #[schema(value_type = Option<Object>)]
    pub recommended_action: Option<serde_json::Value>,
}

/// Metered and gauge usage of every live customer with a subscription.
async fn all_usage(state: &AppState) -> Result<(usize, usize, Vec<CustomerUsage>), ApiError> {
    let engine = &*state.engine;
    let catalog = engine.catalog();
    let customers = live_customers(&*state.store).await?;
    let mut subscribed = 0;
    let mut rows = Vec::new();
    for c in &customers {
        let Ok(s) = engine.entitlements(&c.id) else {
            continue;
        };
        if s.plan_key.is_none() {
            continue;
        }
        subscribed += 1;
        for f in s.features {
            let limited_kind = matches!(
                catalog.feature(&f.feature).map(|d| &d.kind),
                Some(FeatureKind::Metered { .. } | FeatureKind::Gauge)
            );
            if !limited_kind {
                continue;
            }
            let used = f.used.unwrap_or_default();
            if !f.access && used.is_zero() {
                continue;
            }
            rows.push(CustomerUsage {
                customer: c.id.clone(),
                plan: s.plan_key.clone(),
                feature: f.feature,
                kind: f.kind,
                used: norm(used),
                limit: f.limit.map(norm),
                percentage_used: f
                    .limit
                    .filter(|l| !l.is_zero())
                    .map(|l| norm(percentage(used, l))),
                hard: f.hard,
                resets_at: f.resets_at,
                last_alert: None,
            });
        }
    }
    Ok((customers.len(), subscribed, rows))
}

// ---------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------

/// One feature's usage across customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureTotals {
    pub feature: String,
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    /// Sum over customers of their usage in their current window (gauges: levels).
    #[schema(value_type = String)]
    pub total_used: Decimal,
    /// Customers whose plan includes the feature (or who used it).
    pub customers: usize,
    pub customers_with_usage: usize,
    /// Customers at or above a finite limit.
    pub customers_at_limit: usize,
    /// Customers above a finite limit (soft limits, ingested events).
    pub customers_over_limit: usize,
}

/// Usage across customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageSummary {
    pub as_of: Timestamp,
    /// Live (not deleted) customers.
    pub customers: usize,
    /// Of which with a subscription.
    pub subscribed: usize,
    pub features: Vec<FeatureTotals>,
}

/// Usage per feature across customers, in their current windows.
#[utoipa::path(
    get,
    path = "/v1/admin/usage/summary",
    tag = "admin",
    responses(
        (status = 200, description = "Totals per metered and gauge feature", body = UsageSummary),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
    )
)]
pub async fn usage_summary(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<UsageSummary>, ApiError> {
    principal.require_admin()?;
    let (customers, subscribed, rows) = all_usage(&state).await?;
    let catalog = state.engine.catalog();
    let mut features: Vec<FeatureTotals> = catalog
        .features
        .values()
        .filter(|f| matches!(f.kind, FeatureKind::Metered { .. } | FeatureKind::Gauge))
        .map(|f| FeatureTotals {
            feature: f.key.clone(),
            name: f.name.clone(),
            kind: f.kind.name().to_string(),
            unit: f.unit.clone(),
            total_used: Decimal::ZERO,
            customers: 0,
            customers_with_usage: 0,
            customers_at_limit: 0,
            customers_over_limit: 0,
        })
        .collect();
    for r in &rows {
        let Some(t) = features.iter_mut().find(|t| t.feature == r.feature) else {
            continue;
        };
        t.total_used = t.total_used.saturating_add(r.used);
        t.customers += 1;
        if !r.used.is_zero() {
            t.customers_with_usage += 1;
        }
        if let Some(l) = r.limit {
            if r.used >= l {
                t.customers_at_limit += 1;
            }
            if r.used > l {
                t.customers_over_limit += 1;
            }
        }
    }
    for t in &mut features {
        t.total_used = norm(t.total_used);
    }
    Ok(axum::Json(UsageSummary {
        as_of: state.engine.now(),
        customers,
        subscribed,
        features,
    }))
}

// ---------------------------------------------------------------------------
// Top users, near limit
// ---------------------------------------------------------------------------

/// A list of customers' usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerUsageList {
    pub data: Vec<CustomerUsage>,
    pub has_more: bool,
}

/// Query of `GET /v1/admin/usage/top`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// One feature (default: every metered and gauge feature).
    #[serde(default)]
    pub feature: Option<String>,
    /// How many (1–1000, default 10).
    #[serde(default)]
    pub limit: Option<u32>,
}

fn check_feature(state: &AppState, feature: Option<&str>) -> Result<(), ApiError> {
    if let Some(f) = feature {
        match state.engine.catalog().feature(f).map(|d| &d.kind) {
            Some(FeatureKind::Metered { .. } | FeatureKind::Gauge) => {}
            Some(k) => {
                return Err(ApiError::field(
                    "feature",
                    format!(
                        "{f} is a {} feature; usage is ranked for metered and gauge features",
                        k.name()
                    ),
                ));
            }
            None => return Err(ApiError::field("feature", format!("unknown feature {f:?}"))),
        }
    }
    Ok(())
}

fn page_size(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(10),
        Some(n) if (1..=1000).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 1000")),
    }
}

/// Orders by share of the limit (unlimited last), then by usage.
fn by_share(a: &CustomerUsage, b: &CustomerUsage) -> std::cmp::Ordering {
    match (a.percentage_used, b.percentage_used) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
    .then(b.used.cmp(&a.used))
    .then(a.customer.cmp(&b.customer))
    .then(a.feature.cmp(&b.feature))
}

/// The customers using the largest share of their limit.
///
/// Ranked by `used / limit` in the current window (customers on unlimited
/// plans come last, by usage). Without `feature`, every (customer, feature)
/// pair is ranked.
#[utoipa::path(
    get,
    path = "/v1/admin/usage/top",
    tag = "admin",
    params(TopQuery),
    responses(
        (status = 200, description = "Top users", body = CustomerUsageList),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Unknown feature or bad limit", content_type = "application/problem+json"),
    )
)]
pub async fn usage_top(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TopQuery>,
) -> Result<axum::Json<CustomerUsageList>, ApiError> {
    principal.require_admin()?;
    check_feature(&state, q.feature.as_deref())?;
    let n = page_size(q.limit)?;
    let (_, _, mut rows) = all_usage(&state).await?;
    rows.retain(|r| q.feature.as_ref().is_none_or(|f| *f == r.feature) && !r.used.is_zero());
    rows.sort_by(by_share);
    let has_more = rows.len() > n;
    rows.truncate(n);
    Ok(axum::Json(CustomerUsageList {
        data: rows,
        has_more,
    }))
}

/// Query of `GET /v1/admin/customers/near-limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NearLimitQuery {
    /// Percent of the limit (default 80; 0 < threshold ≤ 1000).
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub threshold: Option<String>,
    /// One feature (default: all).
    #[serde(default)]
    pub feature: Option<String>,
    /// How many (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only rows for which a usage alert fired in the current window (a
    /// threshold of the plan reached, the limit exceeded, a denial).
    #[serde(default)]
    pub alerted: bool,
}

/// Customers near (or over) a limit.
///
/// Every (customer, feature) whose usage in the current window is at or above
/// `threshold` percent of a finite limit, the largest share first, each with
/// the latest usage alert fired for it in that window (`last_alert`); with
/// `alerted=true`, only those an alert fired for.
#[utoipa::path(
    get,
    path = "/v1/admin/customers/near-limit",
    tag = "admin",
    params(NearLimitQuery),
    responses(
        (status = 200, description = "Customers at or above the threshold", body = CustomerUsageList),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Bad threshold, feature or limit", content_type = "application/problem+json"),
    )
)]
pub async fn near_limit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<NearLimitQuery>,
) -> Result<axum::Json<CustomerUsageList>, ApiError> {
    principal.require_admin()?;
    let threshold = match &q.threshold {
        None => Decimal::from(80),
        Some(t) => parse_decimal(t).map_err(|m| ApiError::field("threshold", m))?,
    };
    if threshold <= Decimal::ZERO || threshold > Decimal::from(1000) {
        return Err(ApiError::field(
            "threshold",
            "must be a percentage above 0 and at most 1000",
        ));
    }
    check_feature(&state, q.feature.as_deref())?;
    let n = match q.limit {
        None => 100,
        some => page_size(some)?,
    };
    let (_, _, mut rows) = all_usage(&state).await?;
    rows.retain(|r| {
        q.feature.as_ref().is_none_or(|f| *f == r.feature)
            && r.percentage_used.is_some_and(|p| p >= threshold)
    });
    rows.sort_by(by_share);
    if q.alerted {
        // Only the alerted rows count towards the page.
        attach_alerts(&state, &mut rows, usize::MAX).await?;
        rows.retain(|r| r.last_alert.is_some());
    } else {
        attach_alerts(&state, &mut rows, n).await?;
    }
    let has_more = rows.len() > n;
    rows.truncate(n);
    Ok(axum::Json(CustomerUsageList {
        data: rows,
        has_more,
    }))
}

/// Fills `last_alert` of the first `n` rows from each customer's latest events.
async fn attach_alerts(
    state: &AppState,
    rows: &mut [CustomerUsage],
    n: usize,
) -> Result<(), ApiError> {
    let now = state.engine.now();
    let mut events: BTreeMap<String, Vec<tollgate_store::notify::OutboxEvent>> = BTreeMap::new();
    for r in rows.iter_mut().take(n) {
        if !events.contains_key(&r.customer) {
            let recent = recent_events(state, &r.customer, RECENT_EVENTS).await?;
            events.insert(r.customer.clone(), recent);
        }
        let Some(recent) = events.get(&r.customer) else {
            continue;
        };
        r.last_alert = current_usage_alert(recent, &r.feature, now).map(|e| LastAlert {
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            threshold: e.payload["threshold"]["label"].as_str().map(str::to_string),
            created_at: e.created_at,
            recommended_action: Some(e.payload["recommended_action"].clone())
                .filter(|v| !v.is_null()),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Plan distribution
// ---------------------------------------------------------------------------

/// Customers on one plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanShare {
    pub plan: String,
    pub name: String,
    pub tier: u32,
    pub public: bool,
    pub customers: usize,
    /// By subscription status (`trialing`, `active`, `past_due`, `canceled`).
    pub by_status: BTreeMap<String, usize>,
    /// By pinned plan version.
    pub by_version: BTreeMap<String, usize>,
    /// The latest version's base price per month (yearly plans: / 12) times the
    /// customers whose subscription is `active` or `past_due`.
    pub monthly_base_revenue: MoneyOut,
}

/// Customers per plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDistribution {
    /// Live customers.
    pub customers: usize,
    pub without_subscription: usize,
    /// Every plan of the catalog, in tier order, then every plan the catalog
    /// no longer offers that customers are still subscribed to (by key; not
    /// `public`; name, tier and price of its latest published version).
    pub data: Vec<PlanShare>,
}

/// How customers are spread over plans.
#[utoipa::path(
    get,
    path = "/v1/admin/plans/distribution",
    tag = "admin",
    responses(
        (status = 200, description = "Customers per plan", body = PlanDistribution),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
    )
)]
pub async fn plan_distribution(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<PlanDistribution>, ApiError> {
    principal.require_admin()?;
    let engine = &*state.engine;
    let catalog = engine.catalog();
    let customers = live_customers(&*state.store).await?;
    let mut shares: Vec<(PlanShare, usize)> = catalog
        .plans_by_tier()
        .map(|p| {
            (
                PlanShare {
                    plan: p.key.clone(),
                    name: p.name.clone(),
                    tier: p.tier,
                    public: p.public,
                    customers: 0,
                    by_status: BTreeMap::new(),
                    by_version: BTreeMap::new(),
                    monthly_base_revenue: Money::zero(p.currency).into(),
                },
                0,
            )
        })
        .collect();
    let offered = shares.len();
    let mut without = 0;
    // Plans no longer in the catalog, by key: their latest published version.
    let mut removed: BTreeMap<String, tollgate_core::catalog::Plan> = BTreeMap::new();
    for c in &customers {
        match engine.subscription(&c.id) {
            Ok(Some(sub)) => {
                if catalog.plan(&sub.plan_key).is_none() && !removed.contains_key(&sub.plan_key) {
                    let Some(last) = engine.plan_versions(&sub.plan_key).last().copied() else {
                        continue;
                    };
                    let plan = state.billing.pinned_version(&sub.plan_key, last).await?;
                    shares.push((
                        PlanShare {
                            plan: plan.key.clone(),
                            name: plan.name.clone(),
                            tier: plan.tier,
                            public: false,
                            customers: 0,
                            by_status: BTreeMap::new(),
                            by_version: BTreeMap::new(),
                            monthly_base_revenue: Money::zero(plan.currency).into(),
                        },
                        0,
                    ));
                    removed.insert(plan.key.clone(), plan);
                }
                let Some((share, paying)) = shares.iter_mut().find(|(s, _)| s.plan == sub.plan_key)
                else {
                    continue;
                };
                share.customers += 1;
                *share
                    .by_status
                    .entry(sub.status.as_str().to_string())
                    .or_default() += 1;
                *share
                    .by_version
                    .entry(sub.plan_version.to_string())
                    .or_default() += 1;
                if matches!(
                    sub.status,
                    tollgate_store::SubscriptionStatus::Active
                        | tollgate_store::SubscriptionStatus::PastDue
                ) {
                    *paying += 1;
                }
            }
            _ => without += 1,
        }
    }
    shares[offered..].sort_by(|a, b| a.0.plan.cmp(&b.0.plan));
    let data = shares
        .into_iter()
        .filter_map(|(mut share, paying)| {
            let plan = catalog
                .plan(&share.plan)
                .or_else(|| removed.get(&share.plan))?;
            let per_month = match plan.interval {
                Interval::Month => plan.base_price.amount,
                Interval::Year => plan.base_price.amount / Decimal::from(12),
            };
            share.monthly_base_revenue = Money::new(
                per_month.saturating_mul(Decimal::from(paying)),
                plan.currency,
            )
            .into();
            Some(share)
        })
        .collect();
    Ok(axum::Json(PlanDistribution {
        customers: customers.len(),
        without_subscription: without,
        data,
    }))
}

// ---------------------------------------------------------------------------
// CSV export
// ---------------------------------------------------------------------------

/// Query of `GET /v1/admin/usage/export`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// One customer (default: all).
    #[serde(default)]
    pub customer: Option<String>,
    /// One feature (default: all).
    #[serde(default)]
    pub feature: Option<String>,
    /// Event time from (inclusive, RFC 3339).
    #[serde(default)]
    pub from: Option<String>,
    /// Event time to (exclusive, RFC 3339).
    #[serde(default)]
    pub to: Option<String>,
}

/// The CSV header of the export.
pub const CSV_HEADER: &str = "seq,customer,feature,quantity,timestamp,recorded_at,source,billable,idempotency_key,properties\n";

fn parse_time(field: &str, v: &Option<String>) -> Result<Option<Timestamp>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) => s.parse::<Timestamp>().map(Some).map_err(|e| {
            ApiError::field(
                field,
                format!("{s:?} is not an RFC 3339 timestamp such as 2025-01-31T00:00:00Z: {e}"),
            )
        }),
    }
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_rows(records: &[UsageRecord]) -> String {
    let mut out = String::with_capacity(records.len() * 128);
    for r in records {
        let rec = &r.record;
        out.push_str(&r.seq.to_string());
        out.push(',');
        csv_field(&mut out, &rec.customer_id);
        out.push(',');
        csv_field(&mut out, &rec.feature);
        out.push(',');
        out.push_str(&rec.quantity.to_string());
        out.push(',');
        out.push_str(&rec.timestamp.to_string());
        out.push(',');
        out.push_str(&rec.recorded_at.to_string());
        out.push(',');
        out.push_str(rec.source.as_str());
        out.push(',');
        out.push_str(if rec.billable { "true" } else { "false" });
        out.push(',');
        csv_field(&mut out, rec.idempotency_key.as_deref().unwrap_or(""));
        out.push(',');
        let props = serde_json::to_string(&rec.properties).unwrap_or_else(|_| "{}".into());
        csv_field(&mut out, &props);
        out.push('\n');
    }
    out
}

struct Export {
    store: Arc<dyn Store>,
    query: UsageQuery,
    done: bool,
}

/// The ledger as CSV.
///
/// One row per ledger record, in ledger order: `seq, customer, feature,
/// quantity, timestamp, recorded_at, source, billable, idempotency_key,
/// properties` (properties as a JSON object). Filtered by customer, feature and
/// event time `[from, to)`. Streamed page by page, so any size can be exported.
#[utoipa::path(
    get,
    path = "/v1/admin/usage/export",
    tag = "admin",
    params(ExportQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Bad timestamp", content_type = "application/problem+json"),
    )
)]
pub async fn usage_export(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let from = parse_time("from", &q.from)?;
    let to = parse_time("to", &q.to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::field("to", "must be after `from`"));
        }
    }
    let query = UsageQuery {
        customer_id: q.customer,
        feature: q.feature,
        from,
        to,
        after_seq: None,
        limit: EXPORT_PAGE,
    };
    // The first page is read before answering, so a store failure is a 500
    // problem rather than a truncated file.
    let first = state.store.usage(&query).await?;
    let mut head = String::from(CSV_HEADER);
    head.push_str(&csv_rows(&first));
    let export = Export {
        store: state.store.clone(),
        query: UsageQuery {
            after_seq: first.last().map(|r| r.seq),
            ..query
        },
        done: first.len() < EXPORT_PAGE as usize,
    };
    let head =
        futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(head)) });
    let rest = futures_util::stream::unfold(export, |mut ex| async move {
        if ex.done {
            return None;
        }
        match ex.store.usage(&ex.query).await {
            Ok(page) => {
                ex.done = page.len() < EXPORT_PAGE as usize;
                let last = page.last().map(|r| r.seq)?;
                ex.query.after_seq = Some(last);
                Some((Ok(Bytes::from(csv_rows(&page))), ex))
            }
            Err(e) => {
                tracing::error!(error = %e, "usage export failed mid-stream");
                ex.done = true;
                Some((Err(std::io::Error::other(e.to_string())), ex))
            }
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, rest));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"usage.csv\""),
    );
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut s = String::new();
        csv_field(&mut s, "plain");
        s.push(',');
        csv_field(&mut s, "a,b");
        s.push(',');
        csv_field(&mut s, r#"{"k":"v"}"#);
        assert_eq!(s, r#"plain,"a,b","{""k"":""v""}""#);
    }
}
