//! Plans and quotes.
//!
//! - `GET /v1/plans`: the plan comparison (every feature, every plan's
//!   entitlements and charges). Non-admin keys see public plans only; admin
//!   keys see every plan and its published versions.
//! - `GET /v1/plans/{key}`: one plan (a private plan is a 404 for non-admin keys).
//! - `POST /v1/quote`: what a usage costs on a plan, line by line (the core
//!   quote: base fee, one line per charge with its tiers, the total).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::catalog::{BaseBilling, Catalog, Entitlement, Plan, describe_charge_price};
use tollgate_core::money::Money;
use tollgate_core::period::{Anchoring, Interval, ResetPeriod};
use tollgate_core::pricing::{LineKind, Quote, QuoteError, UsageQuantity};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::enforcement::{Quantity, norm};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans))
        .routes(routes!(get_plan))
        .routes(routes!(quote))
}

// ---------------------------------------------------------------------------
// Money and quotes
// ---------------------------------------------------------------------------

/// An amount of money: a decimal string in major units and its ISO-4217 code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct MoneyOut {
    #[schema(value_type = String, example = "339.50")]
    pub amount: Decimal,
    #[schema(example = "USD")]
    pub currency: String,
}

impl From<Money> for MoneyOut {
    /// Shown at the currency's precision ("49.00", "0.00").
    fn from(m: Money) -> MoneyOut {
        let r = m.round_line();
        MoneyOut {
            amount: r.amount,
            currency: r.currency.code().to_string(),
        }
    }
}

/// One row of a price calculation: the units priced in one tier.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierOut {
    pub tier_index: usize,
    /// Exclusive lower bound of the tier.
    #[schema(value_type = String)]
    pub from: Decimal,
    /// Inclusive upper bound (`null` = unbounded).
    #[schema(value_type = Option<String>)]
    pub to: Option<Decimal>,
    #[schema(value_type = String)]
    pub units: Decimal,
    /// Price of one unit (package model: of one package).
    #[schema(value_type = String)]
    pub unit_price: Decimal,
    #[schema(value_type = String)]
    pub flat_fee: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub packages: Option<Decimal>,
    /// Full precision.
    #[schema(value_type = String)]
    pub amount: Decimal,
}

/// One line of a quote.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteLineOut {
    /// `base`, `usage` or `minimum`.
    pub kind: String,
    /// The charge's key (`null` for the base fee).
    pub charge: Option<String>,
    pub description: String,
    /// The dimension group of a dimensional charge's line.
    pub dimensions: BTreeMap<String, String>,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// Free units applied.
    #[schema(value_type = String)]
    pub included: Decimal,
    #[schema(value_type = String)]
    pub billable_quantity: Decimal,
    pub tiers: Vec<TierOut>,
    /// Full-precision amount before the line's one rounding.
    #[schema(value_type = String)]
    pub unrounded: Decimal,
    pub amount: MoneyOut,
}

/// A priced breakdown of a usage on a plan. `total` is the sum of the rounded
/// lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteOut {
    pub plan: String,
    pub version: u32,
    pub currency: String,
    pub lines: Vec<QuoteLineOut>,
    pub total: MoneyOut,
    /// Metrics with usage that no charge of the plan prices (not billable).
    pub unpriced_metrics: Vec<String>,
}

impl QuoteOut {
    pub fn new(plan: &Plan, q: Quote) -> QuoteOut {
        QuoteOut {
            plan: plan.key.clone(),
            version: plan.version,
            currency: q.currency.code().to_string(),
            lines: q
                .lines
                .into_iter()
                .map(|l| QuoteLineOut {
                    kind: match l.kind {
                        LineKind::Base => "base",
                        LineKind::Usage => "usage",
                        LineKind::Minimum => "minimum",
                    }
                    .to_string(),
                    charge: l.charge,
                    description: l.description,
                    dimensions: l.dimensions,
                    quantity: norm(l.quantity),
                    included: norm(l.included),
                    billable_quantity: norm(l.billable_quantity),
                    tiers: l
                        .tiers
                        .into_iter()
                        .map(|t| TierOut {
                            tier_index: t.tier_index,
                            from: norm(t.from),
                            to: t.to.map(norm),
                            units: norm(t.units),
                            unit_price: norm(t.unit_price),
                            flat_fee: norm(t.flat_fee),
                            packages: t.packages.map(norm),
                            amount: norm(t.amount),
                        })
                        .collect(),
                    unrounded: norm(l.unrounded),
                    amount: l.amount.into(),
                })
                .collect(),
            total: q.total.into(),
            unpriced_metrics: q.unpriced_metrics,
        }
    }
}

/// A quote failure is a problem with the usage asked about.
pub fn quote_error(e: QuoteError) -> ApiError {
    ApiError::field("usage", e.to_string())
}

// ---------------------------------------------------------------------------
// Plan definitions (latest from the catalog, older versions from the store)
// ---------------------------------------------------------------------------

/// A plan definition by key and version: the catalog's when it is the latest,
/// else the published version from the store.
pub async fn plan_definition(
    state: &AppState,
    key: &str,
    version: Option<u32>,
) -> Result<Option<Plan>, ApiError> {
    let catalog = state.engine.catalog();
    let latest = catalog.plan(key);
    match (version, latest) {
        (None, None) => Ok(None),
        (None, Some(latest)) => Ok(Some(latest.clone())),
        (Some(v), Some(latest)) if v == latest.version => Ok(Some(latest.clone())),
        // An older version, or one a subscription still pins of a plan the
        // served catalog no longer has.
        (Some(v), _) => {
            let published = state.store.plan_versions().await?;
            let Some(r) = published
                .into_iter()
                .find(|r| r.plan_key == key && r.version == v)
            else {
                return Ok(None);
            };
            let mut plan: Plan = serde_json::from_value(r.definition).map_err(|e| {
                ApiError::Internal(format!("published plan {key} v{v} is not readable: {e}"))
            })?;
            plan.version = v;
            // `tier` and `public` apply to every version in place.
            if let Some(latest) = latest {
                plan.tier = latest.tier;
                plan.public = latest.public;
            }
            Ok(Some(plan))
        }
    }
}

// ---------------------------------------------------------------------------
// Plan views
// ---------------------------------------------------------------------------

/// A feature of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureInfo {
    pub key: String,
    pub name: String,
    pub unit: Option<String>,
    pub description: Option<String>,
    /// `metered`, `gauge`, `rate`, `concurrency`, `cap`, `flag` or `value`.
    pub kind: String,
    /// Metered features: `billing_period`, `calendar_month`, `day` or `hour`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<String>,
    /// Rate features: the window, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
}

/// What a plan grants for one feature.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementOut {
    pub kind: String,
    /// A short human description: `10000 (hard)`, `on`, `["json", "txt"]`.
    pub summary: String,
    /// The limit or maximum: a decimal string or `unlimited` (`null` for flags
    /// and values).
    pub limit: Option<String>,
    /// Metered and gauge limits: whether usage beyond the limit is denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    /// Soft metered limits: usage beyond the limit is billed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overage: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub emergency_allowance: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Value features: `{"type": "integer", "value": 30}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// A usage charge of a plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeOut {
    pub key: String,
    /// The feature whose usage it prices.
    pub metric: String,
    pub name: String,
    /// How it is priced, in words (`0.004 per unit`).
    pub summary: String,
    #[schema(value_type = String)]
    pub included: Decimal,
    #[schema(value_type = Option<String>)]
    pub minimum: Option<Decimal>,
    /// The price model as the catalog defines it.
    pub price: serde_json::Value,
}

/// A plan: price, interval, entitlements and charges.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanOut {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    /// Higher is more capable.
    pub tier: u32,
    /// The version new subscriptions get.
    pub version: u32,
    /// Every published version (admin keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<u32>>,
    pub public: bool,
    pub currency: String,
    pub base_price: MoneyOut,
    /// `month` or `year`.
    pub interval: String,
    /// `calendar` or `anniversary`.
    pub anchoring: String,
    /// `in_advance` or `in_arrears`.
    pub billing: String,
    pub trial_days: Option<u32>,
    /// By feature key; a feature that is absent is not in the plan.
    pub entitlements: BTreeMap<String, EntitlementOut>,
    pub charges: Vec<ChargeOut>,
    /// When usage alerts fire (`80%`, `500 units`).
    pub alert_thresholds: Vec<String>,
}

pub(crate) fn reset_name(r: ResetPeriod) -> &'static str {
    match r {
        ResetPeriod::BillingPeriod => "billing_period",
        ResetPeriod::CalendarMonth => "calendar_month",
        ResetPeriod::Day => "day",
        ResetPeriod::Hour => "hour",
    }
}

fn entitlement_out(
    catalog: &Catalog,
    plan: &Plan,
    feature: &str,
    e: &Entitlement,
) -> EntitlementOut {
    let mut out = EntitlementOut {
        kind: e.kind_name().to_string(),
        summary: e.to_string(),
        limit: e.limit().map(|l| l.to_string()),
        hard: None,
        overage: None,
        reset: None,
        emergency_allowance: None,
        window_secs: None,
        enabled: None,
        value: None,
    };
    match e {
        Entitlement::Metered(m) => {
            out.hard = Some(e.is_hard());
            out.overage = Some(m.overage);
            out.reset = catalog
                .reset_period(plan, feature)
                .map(|r| reset_name(r).to_string());
            out.emergency_allowance = m.emergency_allowance.map(norm);
        }
        Entitlement::Gauge(_) => out.hard = Some(e.is_hard()),
        Entitlement::Rate(_) => out.window_secs = catalog.rate_window_secs(plan, feature),
        Entitlement::Flag { enabled } => out.enabled = Some(*enabled),
        Entitlement::Value { value } => out.value = serde_json::to_value(value).ok(),
        Entitlement::Concurrency { .. } | Entitlement::Cap { .. } => {}
    }
    out
}

pub(crate) fn plan_out(catalog: &Catalog, plan: &Plan, versions: Option<Vec<u32>>) -> PlanOut {
    PlanOut {
        key: plan.key.clone(),
        name: plan.name.clone(),
        description: plan.description.clone(),
        tier: plan.tier,
        version: plan.version,
        versions,
        public: plan.public,
        currency: plan.currency.code().to_string(),
        base_price: plan.base_price.into(),
        interval: match plan.interval {
            Interval::Month => "month",
            Interval::Year => "year",
        }
        .to_string(),
        anchoring: match plan.anchoring {
            Anchoring::Calendar => "calendar",
            Anchoring::Anniversary => "anniversary",
        }
        .to_string(),
        billing: match plan.billing {
            BaseBilling::InAdvance => "in_advance",
            BaseBilling::InArrears => "in_arrears",
        }
        .to_string(),
        trial_days: plan.trial_days,
        entitlements: plan
            .entitlements
            .iter()
            .map(|(f, e)| (f.clone(), entitlement_out(catalog, plan, f, e)))
            .collect(),
        charges: plan
            .charges
            .iter()
            .map(|c| ChargeOut {
                key: c.key.clone(),
                metric: c.metric.clone(),
                name: c.display_name.clone(),
                summary: describe_charge_price(&c.price),
                included: norm(c.included),
                minimum: c.minimum.map(norm),
                price: serde_json::to_value(&c.price).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
        alert_thresholds: plan
            .alert_thresholds
            .iter()
            .map(|t| t.to_string())
            .collect(),
    }
}

pub(crate) fn feature_info(catalog: &Catalog) -> Vec<FeatureInfo> {
    use tollgate_core::catalog::FeatureKind;
    catalog
        .features
        .values()
        .map(|f| FeatureInfo {
            key: f.key.clone(),
            name: f.name.clone(),
            unit: f.unit.clone(),
            description: f.description.clone(),
            kind: f.kind.name().to_string(),
            reset: match f.kind {
                FeatureKind::Metered { reset } => Some(reset_name(reset).to_string()),
                _ => None,
            },
            window_secs: match f.kind {
                FeatureKind::Rate { window_secs } => Some(window_secs),
                _ => None,
            },
        })
        .collect()
}

/// The plan comparison.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanList {
    /// Plans in ascending tier order.
    pub data: Vec<PlanOut>,
    pub has_more: bool,
    /// Every feature of the catalog (the rows of the comparison).
    pub features: Vec<FeatureInfo>,
}

/// Compare plans.
///
/// Every plan with its price, entitlements per feature and charges, in tier
/// order, and the catalog's features. Non-admin keys see the public plans only;
/// admin keys see every plan, with its published versions.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    responses((status = 200, description = "The plans", body = PlanList))
)]
pub async fn list_plans(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<PlanList>, ApiError> {
    let admin = principal.scope() == Scope::Admin;
    let engine = &*state.engine;
    let catalog = engine.catalog();
    let data = catalog
        .plans_by_tier()
        .filter(|p| admin || p.public)
        .map(|p| {
            let versions = admin.then(|| engine.plan_versions(&p.key));
            plan_out(&catalog, p, versions)
        })
        .collect();
    Ok(Json(PlanList {
        data,
        has_more: false,
        features: feature_info(&catalog),
    }))
}

/// One plan.
///
/// A private plan is a `404` for non-admin keys.
#[utoipa::path(
    get,
    path = "/v1/plans/{key}",
    tag = "plans",
    params(("key" = String, Path, description = "The plan's key")),
    responses(
        (status = 200, description = "The plan", body = PlanOut),
        (status = 404, description = "No such plan", content_type = "application/problem+json"),
    )
)]
pub async fn get_plan(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<PlanOut>, ApiError> {
    let admin = principal.scope() == Scope::Admin;
    let engine = &*state.engine;
    let catalog = engine.catalog();
    let plan = catalog
        .plan(&key)
        .filter(|p| admin || p.public)
        .ok_or_else(|| ApiError::NotFound {
            what: "plan",
            id: key.clone(),
        })?;
    let versions = admin.then(|| engine.plan_versions(&plan.key));
    Ok(Json(plan_out(&catalog, plan, versions)))
}

/// Usage of one metric to price.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageLine {
    /// A feature key.
    pub metric: String,
    pub quantity: Quantity,
    /// Property values for dimensional charges (e.g. `{"model": "gpt-4o"}`).
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
}

/// `POST /v1/quote`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// The plan's key.
    pub plan: String,
    /// A published version (default: the latest).
    #[serde(default)]
    pub version: Option<u32>,
    /// Entries of the same metric (and dimensions) add up.
    #[serde(default)]
    pub usage: Vec<UsageLine>,
}

/// Price a usage on a plan.
///
/// One full billing period: the base fee, one line per charge (with the tiers
/// that explain it), the total as the sum of the rounded lines. Usage of
/// features no charge prices is listed in `unpriced_metrics`. Non-admin keys
/// may quote public plans only.
#[utoipa::path(
    post,
    path = "/v1/quote",
    tag = "plans",
    request_body = QuoteRequest,
    responses(
        (status = 200, description = "The quote", body = QuoteOut),
        (status = 422, description = "Unknown plan or metric, invalid quantity", content_type = "application/problem+json"),
    )
)]
pub async fn quote(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<QuoteRequest>,
) -> Result<Json<QuoteOut>, ApiError> {
    let admin = principal.scope() == Scope::Admin;
    let catalog = state.engine.catalog();
    if !catalog.plan(&req.plan).is_some_and(|p| admin || p.public) {
        return Err(ApiError::field(
            "plan",
            format!("unknown plan {:?}", req.plan),
        ));
    }
    let plan = plan_definition(&state, &req.plan, req.version)
        .await?
        .ok_or_else(|| {
            ApiError::field(
                "version",
                format!(
                    "plan {:?} has no published version {}",
                    req.plan,
                    req.version.unwrap_or_default()
                ),
            )
        })?;
    let mut errors = Vec::new();
    for (i, u) in req.usage.iter().enumerate() {
        if catalog.feature(&u.metric).is_none() {
            errors.push(crate::error::FieldError::new(
                format!("usage[{i}].metric"),
                format!("unknown feature {:?}", u.metric),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let usage: Vec<UsageQuantity> = req
        .usage
        .into_iter()
        .map(|u| UsageQuantity {
            metric: u.metric,
            dimensions: u.dimensions,
            quantity: u.quantity.0,
        })
        .collect();
    let q = plan.quote(&usage).map_err(quote_error)?;
    Ok(Json(QuoteOut::new(&plan, q)))
}
