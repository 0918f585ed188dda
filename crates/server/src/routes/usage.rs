//! A customer's entitlements and usage dashboard.
//!
//! - `GET /v1/customers/{id}/entitlements`: every feature with what the
//!   customer may do now (the engine's summary).
//! - `GET /v1/customers/{id}/usage`: the usage dashboard: the current billing
//!   period, per feature usage against its limit with a projection to the end
//!   of its window, alerts with a recommended action, and the cost so far and
//!   projected for the period.
//!
//! Both are readable by admin and server keys, and by a customer key for its
//! own customer.
//!
//! **Projection.** Linear: `used / elapsed × window length`, where `elapsed` is
//! the time since the feature's window started (its billing period, calendar
//! month, day or hour) and the length is the whole window. A gauge is a level,
//! not a flow: its projection is its level.
//!
//! **Cost.** The plan's quote (base fee + charges) of the billable usage
//! recorded in the ledger for the billing period so far (metered features, with
//! the properties dimensional charges group by), with gauges at their current
//! level; the projection scales the metered quantities by `period length /
//! elapsed` the same way.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::catalog::{Catalog, Entitlement, FeatureKind, Plan};
use tollgate_core::period::{BillingCycle, Period, ResetPeriod, usage_window};
use tollgate_core::pricing::{ChargePrice, UsageQuantity};
use tollgate_engine::{EntitlementsSummary, FeatureSummary, RecommendedAction};
use tollgate_store::notify::OutboxEvent;
use tollgate_store::{UsageQuery, UsageSource};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::alerts::{RECENT_EVENTS, recent_events, usage_alerts_in};
use crate::routes::enforcement::norm;
use crate::routes::plans::{MoneyOut, plan_definition, quote_error};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(entitlements))
        .routes(routes!(usage_dashboard))
}

/// Ledger page size when adding up a period's usage.
const PAGE: u32 = 10_000;

// ---------------------------------------------------------------------------
// Entitlements
// ---------------------------------------------------------------------------

/// One feature of a customer's entitlements.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureEntitlement {
    pub feature: String,
    pub kind: String,
    /// Whether the customer may use the feature at all now.
    pub access: bool,
    /// Limit (or cap maximum); absent when unlimited or not applicable.
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
    /// Metered and gauge: hard (`true`) or soft limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub level: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_leases: Option<u32>,
    /// Units left in active grants (top-ups, emergency pools).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub grants_remaining: Option<Decimal>,
    /// Held by open reservations.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reserved: Option<Decimal>,
    /// Whether a per-customer override applies.
    pub overridden: bool,
}

impl From<FeatureSummary> for FeatureEntitlement {
    fn from(s: FeatureSummary) -> Self {
        FeatureEntitlement {
            feature: s.feature,
            kind: s.kind,
            access: s.access,
            limit: s.limit.map(norm),
            used: s.used.map(norm),
            remaining: s.remaining.map(norm),
            resets_at: s.resets_at,
            hard: s.hard,
            enabled: s.enabled,
            value: s.value,
            level: s.level.map(norm),
            active_leases: s.active_leases,
            grants_remaining: s.grants_remaining.map(norm),
            reserved: s.reserved.map(norm),
            overridden: s.overridden,
        }
    }
}

/// What a customer may do now, feature by feature.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementsOut {
    pub customer: String,
    pub plan: Option<String>,
    pub plan_version: Option<u32>,
    /// `trialing`, `active`, `past_due` or `canceled`.
    pub status: Option<String>,
    pub admin_bypass: bool,
    /// Why nothing is accessible (`no_subscription`, `subscription_inactive`,
    /// `trial_expired`), if so.
    pub blocked: Option<String>,
    pub features: Vec<FeatureEntitlement>,
}

impl From<EntitlementsSummary> for EntitlementsOut {
    fn from(s: EntitlementsSummary) -> Self {
        EntitlementsOut {
            customer: s.customer,
            plan: s.plan_key,
            plan_version: s.plan_version,
            status: s.status,
            admin_bypass: s.admin_bypass,
            blocked: s.blocked.map(|b| b.as_str().to_string()),
            features: s.features.into_iter().map(Into::into).collect(),
        }
    }
}

pub(crate) fn live_customer(
    state: &AppState,
    id: &str,
) -> Result<tollgate_store::CustomerRecord, ApiError> {
    state
        .engine
        .customer(id)
        .filter(|c| c.deleted_at.is_none())
        .ok_or_else(|| ApiError::NotFound {
            what: "customer",
            id: id.to_string(),
        })
}

/// A customer's entitlements.
///
/// Every feature of the catalog with what the customer may do now: limits,
/// usage in the current window, what remains, when it resets, flags, values.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/entitlements",
    tag = "usage",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The entitlements", body = EntitlementsOut),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
    )
)]
pub async fn entitlements(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<EntitlementsOut>, ApiError> {
    principal.require_read(&id)?;
    live_customer(&state, &id)?;
    Ok(Json(state.engine.entitlements(&id)?.into()))
}

// ---------------------------------------------------------------------------
// The usage dashboard
// ---------------------------------------------------------------------------

/// The current billing period.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentPeriod {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Whole days left, rounded up (0 once the period has ended).
    pub days_remaining: i64,
}

/// One feature's usage against its limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureUsage {
    pub name: String,
    /// `metered` or `gauge`.
    pub kind: String,
    pub unit: Option<String>,
    /// Counted in the current window (gauges: the level).
    #[schema(value_type = String)]
    pub used: Decimal,
    /// `null` = unlimited.
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub remaining: Option<Decimal>,
    /// `used / limit × 100`, two decimals (`null` when unlimited).
    #[schema(value_type = Option<String>)]
    pub percentage_used: Option<Decimal>,
    /// Usage beyond the limit.
    #[schema(value_type = String)]
    pub overage: Decimal,
    /// Linear projection to the end of the window: `used / elapsed × window
    /// length` (gauges: the level).
    #[schema(value_type = String)]
    pub projected_period_end: Decimal,
    pub hard: Option<bool>,
    /// The feature's window (its billing period, calendar month, day or hour).
    pub window_start: Option<Timestamp>,
    pub resets_at: Option<Timestamp>,
}

/// A feature's alerts in its current window (from the outbox: see
/// `GET /v1/customers/{id}/alerts`), summed up with what to do.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageAlert {
    /// `approaching_limit` (an alert fired in the window, usage is below the
    /// limit) or `limit_exceeded` (usage is at or above the limit).
    #[serde(rename = "type")]
    pub kind: String,
    pub feature: String,
    #[schema(value_type = String)]
    pub percentage_used: Decimal,
    pub message: String,
    /// A hard limit is reached: further usage is denied until it resets.
    pub action_required: bool,
    /// `recommended` in words, then, when it is another plan, the cheapest
    /// plan whose limit covers the projected usage (`upgrade_to`).
    pub recommended_action: String,
    /// The cheapest plan whose limit allows the projected usage.
    pub upgrade_to: Option<String>,
    /// Units of the plan's emergency allowance that can be drawn now.
    #[schema(value_type = Option<String>)]
    pub emergency_allowance: Option<Decimal>,
    /// The one action Tollgate recommends now (the rule of the alert events:
    /// at a hard limit with the pool available, draw it; else the cheapest
    /// public plan above with a higher limit; else the pool).
    pub recommended: Option<RecommendedActionOut>,
    /// Thresholds reached in this window (`80%`, `95%`, `100%`), lowest first.
    pub thresholds_reached: Vec<String>,
    /// The latest alert event of this feature in this window.
    pub last_event: AlertEventRef,
}

/// An alert event, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertEventRef {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: Timestamp,
}

/// What to do about a limit: `{"type": "upgrade", "plan": "pro", "limit":
/// "1000"}` or `{"type": "draw_emergency_pool", "units": "100"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendedActionOut {
    /// `upgrade` or `draw_emergency_pool`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The plan's limit for the feature (`upgrade`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub limit: Option<Decimal>,
    /// Units of the pool (`draw_emergency_pool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub units: Option<Decimal>,
}

impl From<RecommendedAction> for RecommendedActionOut {
    fn from(a: RecommendedAction) -> Self {
        match a {
            RecommendedAction::Upgrade { plan, limit } => RecommendedActionOut {
                kind: "upgrade".into(),
                plan: Some(plan),
                limit: limit.map(norm),
                units: None,
            },
            RecommendedAction::DrawEmergencyPool { units } => RecommendedActionOut {
                kind: "draw_emergency_pool".into(),
                plan: None,
                limit: None,
                units: Some(norm(units)),
            },
        }
    }
}

/// The cost of the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostOut {
    /// The plan's quote of the billable usage so far (base fee included).
    pub current_period: MoneyOut,
    /// The quote of the projected usage at the end of the period.
    pub projected_period_end: MoneyOut,
    /// The cheapest plan allowing every projected usage, when the current
    /// plan's limits do not.
    pub recommended_plan: Option<String>,
}

/// The plan a dashboard is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanRef {
    pub key: String,
    pub name: String,
    pub version: u32,
}

/// The usage dashboard.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDashboard {
    pub customer: String,
    pub as_of: Timestamp,
    pub plan: Option<PlanRef>,
    pub status: Option<String>,
    pub current_period: Option<CurrentPeriod>,
    /// Metered and gauge features in the plan, by key.
    pub usage_summary: BTreeMap<String, FeatureUsage>,
    pub alerts: Vec<UsageAlert>,
    pub cost: Option<CostOut>,
}

/// A customer's usage dashboard.
///
/// The current billing period (from the subscription's anchor, the plan's
/// interval and anchoring, in the customer's time zone); per metered and gauge
/// feature: used, limit, percentage used, overage and a linear projection to the
/// end of its window (`used / elapsed × window length`; gauges: the level);
/// alerts: one per feature with alert events in its current window (a
/// threshold reached, usage beyond the limit, a denial; `approaching_limit`
/// below the limit, `limit_exceeded` at or above it), recommending the
/// cheapest plan that allows the projected usage or the plan's emergency
/// allowance; and the cost so far and projected (the plan's quote of the
/// period's billable usage, with gauges at their level) as money.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/usage",
    tag = "usage",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The dashboard", body = UsageDashboard),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
    )
)]
pub async fn usage_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<UsageDashboard>, ApiError> {
    principal.require_read(&id)?;
    let customer = live_customer(&state, &id)?;
    let engine = &*state.engine;
    let now = engine.now();
    let summary = engine.entitlements(&id)?;
    let sub = engine.subscription(&id)?;
    let mut dash = UsageDashboard {
        customer: id.clone(),
        as_of: now,
        plan: None,
        status: summary.status.clone(),
        current_period: None,
        usage_summary: BTreeMap::new(),
        alerts: Vec::new(),
        cost: None,
    };
    let Some(sub) = sub else {
        return Ok(Json(dash));
    };
    let Some(plan) = plan_definition(&state, &sub.plan_key, Some(sub.plan_version)).await? else {
        return Err(ApiError::Internal(format!(
            "the subscription of {id:?} pins plan {} v{}, which is not published",
            sub.plan_key, sub.plan_version
        )));
    };
    dash.plan = Some(PlanRef {
        key: plan.key.clone(),
        name: plan.name.clone(),
        version: plan.version,
    });
    let tz = TimeZone::get(&customer.time_zone).unwrap_or(TimeZone::UTC);
    let cycle = BillingCycle::new(plan.interval, plan.anchoring, sub.anchor, tz);
    let period = cycle.period_containing(now).ok();
    if let Some(p) = &period {
        dash.current_period = Some(CurrentPeriod {
            start: p.start,
            end: p.end,
            days_remaining: days_ceil(p.end.duration_since(now)),
        });
    }
    let catalog = engine.catalog();
    let emergency_drawn = drawn_emergency(&state, &id, now)?;
    let events = recent_events(&state, &id, RECENT_EVENTS).await?;
    let mut projected_usage: BTreeMap<String, Decimal> = BTreeMap::new();
    for f in &summary.features {
        let Some(def) = catalog.feature(&f.feature) else {
            continue;
        };
        let (is_gauge, reset) = match def.kind {
            FeatureKind::Metered { reset } => (false, reset),
            FeatureKind::Gauge => (true, ResetPeriod::BillingPeriod),
            _ => continue,
        };
        if !f.access && f.used.unwrap_or_default().is_zero() {
            continue;
        }
        let used = f.used.unwrap_or_default();
        let window = if is_gauge {
            None
        } else {
            let reset = catalog.reset_period(&plan, &f.feature).unwrap_or(reset);
            usage_window(reset, &cycle, now).ok()
        };
        let projected = if is_gauge {
            used
        } else {
            window.map_or(used, |w| project(used, &w, now))
        };
        projected_usage.insert(f.feature.clone(), projected);
        let percentage = f
            .limit
            .filter(|l| !l.is_zero())
            .map(|l| percentage(used, l));
        let overage = f
            .limit
            .map_or(Decimal::ZERO, |l| (used - l).max(Decimal::ZERO));
        // Gauge alerts are counted per billing period.
        let alert_window = window.or(period).map(|w| w.start);
        let fired: Vec<&OutboxEvent> = alert_window
            .map(|start| usage_alerts_in(&events, &f.feature, start).collect())
            .unwrap_or_default();
        if let (Some(limit), Some(pct), false) = (f.limit, percentage, fired.is_empty()) {
            if let Some(alert) = alert_for(
                &state,
                &AlertInput {
                    customer: &id,
                    plan: &plan,
                    feature: &f.feature,
                    name: &def.name,
                    used,
                    limit,
                    pct,
                    projected,
                    hard: f.hard.unwrap_or(true),
                    emergency_drawn: emergency_drawn.contains(&f.feature),
                    window_end: window.map(|w| w.end),
                    fired: &fired,
                },
            ) {
                dash.alerts.push(alert);
            }
        }
        dash.usage_summary.insert(
            f.feature.clone(),
            FeatureUsage {
                name: def.name.clone(),
                kind: f.kind.clone(),
                unit: def.unit.clone(),
                used: norm(used),
                limit: f.limit.map(norm),
                remaining: f.remaining.map(norm),
                percentage_used: percentage.map(norm),
                overage: norm(overage),
                projected_period_end: norm(projected.round_dp(2)),
                hard: f.hard,
                window_start: window.map(|w| w.start),
                resets_at: window.map(|w| w.end).or(f.resets_at),
            },
        );
    }
    if let Some(p) = &period {
        dash.cost = Some(cost(&state, &id, &plan, p, now, &projected_usage).await?);
    }
    Ok(Json(dash))
}

/// [`percent_of_limit`], saturating on absurd quantities (and a zero limit).
pub(crate) fn percentage(used: Decimal, limit: Decimal) -> Decimal {
    tollgate_core::catalog::percent_of_limit(used, limit).unwrap_or(Decimal::MAX)
}

fn days_ceil(d: SignedDuration) -> i64 {
    if d <= SignedDuration::ZERO {
        return 0;
    }
    let secs = d.as_secs() + i64::from(d.subsec_nanos() > 0);
    (secs + 86_399) / 86_400
}

/// Linear projection to the end of the window: `used / observed × length`.
///
/// `observed` is the time elapsed in the window, but at least a tenth of the
/// window, capped at one day (so at least 1 day for a monthly window, 2.4 h
/// for a daily one, 6 min for an hourly one). Without that floor, 80 queries
/// in the first minute of a month would project to 3.5 million; with it they
/// project to 80 × 30 = 2,400 ("if today's pace continues"). The projection is
/// never below `used` and equals it once the window is over.
pub(crate) fn project(used: Decimal, window: &Period, now: Timestamp) -> Decimal {
    let elapsed = now.duration_since(window.start).as_secs();
    let length = window.length().as_secs();
    if length <= 0 || elapsed >= length {
        return used;
    }
    let floor = (length / 10).clamp(1, 86_400);
    let observed = elapsed.max(floor);
    used.checked_mul(Decimal::from(length))
        .and_then(|x| x.checked_div(Decimal::from(observed)))
        .unwrap_or(used)
        .max(used)
}

/// Features whose emergency allowance was drawn in their current window.
fn drawn_emergency(
    state: &AppState,
    customer: &str,
    now: Timestamp,
) -> Result<Vec<String>, ApiError> {
    Ok(state
        .engine
        .grants(customer)?
        .into_iter()
        .filter(|(g, _)| {
            g.kind == "emergency"
                && g.voided_at.is_none()
                && g.effective_at <= now
                && g.expires_at.is_none_or(|e| e > now)
        })
        .map(|(g, _)| g.feature)
        .collect())
}

struct AlertInput<'a> {
    customer: &'a str,
    plan: &'a Plan,
    feature: &'a str,
    name: &'a str,
    used: Decimal,
    limit: Decimal,
    pct: Decimal,
    projected: Decimal,
    hard: bool,
    emergency_drawn: bool,
    window_end: Option<Timestamp>,
    /// The feature's alert events in its window, newest first (not empty).
    fired: &'a [&'a OutboxEvent],
}

fn alert_for(state: &AppState, a: &AlertInput<'_>) -> Option<UsageAlert> {
    let last = a.fired.first()?;
    let exceeded = a.used >= a.limit;
    let mut thresholds: Vec<(Decimal, String)> = a
        .fired
        .iter()
        .filter_map(|e| {
            let t = &e.payload["threshold"];
            let q = e.payload["threshold_quantity"].as_str()?.parse().ok()?;
            Some((q, t["label"].as_str()?.to_string()))
        })
        .collect();
    thresholds.sort();
    let recommended = state
        .engine
        .recommended_action(a.customer, a.feature)
        .ok()
        .flatten()
        .map(RecommendedActionOut::from);
    let catalog = state.engine.catalog();
    // The plan to recommend allows the projected usage (at least one more unit
    // than now once the limit is reached).
    let needed = a.projected.max(a.used).max(if exceeded {
        a.used.saturating_add(Decimal::ONE)
    } else {
        a.used
    });
    let upgrade_to = catalog
        .cheapest_plan_allowing(
            a.feature,
            &|e: &Entitlement| e.allows(needed),
            a.plan.tier,
            true,
        )
        .or_else(|| {
            catalog.cheapest_plan_allowing(
                a.feature,
                &|e: &Entitlement| e.allows(a.used.saturating_add(Decimal::ONE)),
                a.plan.tier,
                true,
            )
        });
    let emergency = match a.plan.entitlement(a.feature) {
        Some(Entitlement::Metered(m)) if !a.emergency_drawn && a.hard => m.emergency_allowance,
        _ => None,
    };
    let pct = norm(a.pct);
    let resets = a
        .window_end
        .map(|t| format!("; it resets at {t}"))
        .unwrap_or_default();
    let message = if exceeded {
        format!(
            "{} is at {pct}% of its limit ({} of {}){resets}",
            a.name,
            norm(a.used),
            norm(a.limit)
        )
    } else {
        format!(
            "{} is at {pct}% of its limit ({} of {}), projected {} by the end of the window",
            a.name,
            norm(a.used),
            norm(a.limit),
            norm(a.projected.round_dp(2))
        )
    };
    // The text says the one recommended action (the engine's rule, the same as
    // the alert events'), then the plan that fits the projection when that is
    // another one, so the two fields never name different plans unexplained.
    let mut actions = Vec::new();
    match &recommended {
        Some(RecommendedActionOut {
            plan: Some(key), ..
        }) => {
            let name = catalog.plan(key).map_or(key.as_str(), |p| p.name.as_str());
            actions.push(format!("upgrade to {name} ({key:?})"));
        }
        Some(RecommendedActionOut {
            units: Some(units), ..
        }) => actions.push(format!(
            "draw the emergency allowance of {} {} (POST /v1/customers/{}/emergency-pool)",
            norm(*units),
            a.name,
            a.customer
        )),
        _ => {}
    }
    if let Some(p) = upgrade_to {
        let named = recommended
            .as_ref()
            .and_then(|r| r.plan.as_deref())
            .is_some_and(|k| k == p.key);
        if !named {
            actions.push(format!(
                "upgrade to {} ({:?}), whose limit covers the projected {}",
                p.name,
                p.key,
                norm(needed.round_dp(2))
            ));
        }
    }
    let recommended_action = if actions.is_empty() {
        if exceeded && a.hard {
            "wait for the window to reset or contact support for a higher limit".to_string()
        } else {
            "keep an eye on usage".to_string()
        }
    } else {
        let mut s = actions.join("; or ");
        if let Some(first) = s.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        s
    };
    Some(UsageAlert {
        kind: if exceeded {
            "limit_exceeded"
        } else {
            "approaching_limit"
        }
        .to_string(),
        feature: a.feature.to_string(),
        percentage_used: pct,
        message,
        action_required: exceeded && a.hard,
        recommended_action,
        upgrade_to: upgrade_to.map(|p| p.key.clone()),
        emergency_allowance: emergency.map(norm),
        recommended,
        thresholds_reached: thresholds.into_iter().map(|(_, l)| l).collect(),
        last_event: AlertEventRef {
            id: last.id.clone(),
            event_type: last.event_type.clone(),
            created_at: last.created_at,
        },
    })
}

/// The property values a plan's dimensional charges group a metric by.
fn group_keys(plan: &Plan) -> BTreeMap<&str, &[String]> {
    plan.charges
        .iter()
        .filter_map(|c| match &c.price {
            ChargePrice::Dimensional(d) => Some((c.metric.as_str(), d.group_by.as_slice())),
            ChargePrice::Single(_) => None,
        })
        .collect()
}

fn dimension_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Billable usage per (metric, dimension group) of a customer over `[from, to)`,
/// from the ledger, page by page (metered records only: gauges are levels).
pub(crate) async fn billable_usage(
    state: &AppState,
    customer: &str,
    plan: &Plan,
    from: Timestamp,
    to: Timestamp,
) -> Result<BTreeMap<(String, BTreeMap<String, String>), Decimal>, ApiError> {
    let groups = group_keys(plan);
    let mut sums: BTreeMap<(String, BTreeMap<String, String>), Decimal> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .usage(&UsageQuery {
                customer_id: Some(customer.to_string()),
                feature: None,
                from: Some(from),
                to: Some(to),
                after_seq: after,
                limit: PAGE,
            })
            .await?;
        let full = page.len() == PAGE as usize;
        for r in &page {
            after = Some(r.seq);
            let rec = &r.record;
            if !rec.billable
                || !matches!(
                    rec.source,
                    UsageSource::Consume | UsageSource::Commit | UsageSource::Event
                )
            {
                continue;
            }
            let dims: BTreeMap<String, String> = groups
                .get(rec.feature.as_str())
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| {
                            rec.properties
                                .get(k)
                                .and_then(dimension_text)
                                .map(|v| (k.clone(), v))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let sum = sums.entry((rec.feature.clone(), dims)).or_default();
            *sum = sum.saturating_add(rec.quantity);
        }
        if !full {
            break;
        }
    }
    Ok(sums)
}

fn metered_feature(catalog: &Catalog, key: &str) -> bool {
    matches!(
        catalog.feature(key).map(|f| &f.kind),
        Some(FeatureKind::Metered { .. })
    )
}

async fn cost(
    state: &AppState,
    customer: &str,
    plan: &Plan,
    period: &Period,
    now: Timestamp,
    projected_usage: &BTreeMap<String, Decimal>,
) -> Result<CostOut, ApiError> {
    let catalog = state.engine.catalog();
    let sums = billable_usage(state, customer, plan, period.start, period.end).await?;
    let scale = |q: Decimal| project(q, period, now);
    let mut so_far = Vec::new();
    let mut projected = Vec::new();
    for ((metric, dims), q) in &sums {
        if !metered_feature(&catalog, metric) {
            continue;
        }
        so_far.push(UsageQuantity {
            metric: metric.clone(),
            dimensions: dims.clone(),
            quantity: *q,
        });
        projected.push(UsageQuantity {
            metric: metric.clone(),
            dimensions: dims.clone(),
            quantity: scale(*q),
        });
    }
    // Gauges are billed at their level.
    for c in &plan.charges {
        if matches!(
            catalog.feature(&c.metric).map(|f| &f.kind),
            Some(FeatureKind::Gauge)
        ) {
            let level = state
                .engine
                .gauge_level(customer, &c.metric)
                .unwrap_or_default();
            if !level.is_zero() {
                let u = UsageQuantity {
                    metric: c.metric.clone(),
                    dimensions: BTreeMap::new(),
                    quantity: level,
                };
                so_far.push(u.clone());
                projected.push(u);
            }
        }
    }
    let now_quote = plan.quote(&so_far).map_err(quote_error)?;
    let end_quote = plan.quote(&projected).map_err(quote_error)?;
    // The cheapest plan at or above this one whose limits allow every projected
    // usage, if this one's do not.
    let fits = |p: &Plan| {
        projected_usage.iter().all(|(f, q)| match p.entitlement(f) {
            Some(e) => e.allows(*q),
            None => q.is_zero(),
        })
    };
    let recommended_plan = if fits(plan) {
        None
    } else {
        catalog
            .public_plans()
            .find(|p| p.tier > plan.tier && fits(p))
            .map(|p| p.key.clone())
    };
    Ok(CostOut {
        current_period: now_quote.total.into(),
        projected_period_end: end_quote.total.into(),
        recommended_plan,
    })
}

#[cfg(test)]
mod projection_tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn projection_extrapolates_linearly_with_a_floor_on_the_observed_time() {
        let month = Period {
            start: at("2026-11-01T00:00:00Z"),
            end: at("2026-12-01T00:00:00Z"),
        };
        // 10 days in, 100 used: 300 by the end of a 30-day month.
        assert_eq!(
            project(Decimal::from(100), &month, at("2026-11-11T00:00:00Z")),
            Decimal::from(300)
        );
        // One minute in, 80 used: projected from one day, not one minute.
        assert_eq!(
            project(Decimal::from(80), &month, at("2026-11-01T00:01:00Z")),
            Decimal::from(2400)
        );
        // At the very start and after the end: what was used.
        assert_eq!(
            project(Decimal::from(5), &month, at("2026-11-01T00:00:00Z")),
            Decimal::from(150)
        );
        assert_eq!(
            project(Decimal::from(5), &month, at("2026-12-02T00:00:00Z")),
            Decimal::from(5)
        );
    }
}
