//! Plan changes, scheduled changes, trials, cancellation, history and plan
//! version migration (the billing service's `changes` module over HTTP).
//!
//! | route | scope |
//! | --- | --- |
//! | `POST /v1/customers/{id}/subscription/change` (preview or apply) | admin |
//! | `POST /v1/customers/{id}/subscription/change/preview` | read (customer keys: their own) |
//! | `GET /v1/customers/{id}/subscription/scheduled` | read |
//! | `DELETE /v1/customers/{id}/subscription/scheduled` | admin |
//! | `POST /v1/customers/{id}/subscription/cancel` | admin |
//! | `POST /v1/customers/{id}/subscription/trial` (start) | admin |
//! | `POST /v1/customers/{id}/subscription/trial/convert` | admin |
//! | `GET /v1/customers/{id}/subscription/history` | read |
//! | `POST /v1/admin/plans/{key}/migrate` (preview or apply) | admin |
//!
//! The rules are in `docs/plan-changes.md`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_billing::changes::{
    CancelRequest, ChangeError, ChangeOutcome, ChangeRequest, ChangeState, MigrationCustomer,
    MigrationRequest, PreviewView, SubscriptionOutcome, TrialRequest,
};
use tollgate_billing::run::InvoiceError;
use tollgate_core::billing::change::{Blocker, ChangeTiming, ProrationBehavior};
use tollgate_core::billing::compute::BillingError;
use tollgate_store::changes::{PendingItemRecord, PlanChangeRecord, ScheduledChangeRecord};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::customers::SubscriptionOut;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_subscription))
        .routes(routes!(preview_change))
        .routes(routes!(get_scheduled, cancel_scheduled))
        .routes(routes!(cancel_subscription))
        .routes(routes!(start_trial))
        .routes(routes!(convert_trial))
        .routes(routes!(history))
        .routes(routes!(migrate_plan))
}

// ---- errors ----------------------------------------------------------------------------

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> ApiError {
        match e {
            ChangeError::Engine(e) => e.into(),
            ChangeError::Store(e) => e.into(),
            ChangeError::Billing(BillingError::Currency { .. }) => {
                ApiError::field("plan", e.to_string())
            }
            ChangeError::Billing(e) => ApiError::Internal(e.to_string()),
            // The customer's own settings (its tax rate, currency) are wrong.
            ChangeError::Invoice(InvoiceError::Invalid { field, message }) => {
                ApiError::field(field, message)
            }
            ChangeError::Invoice(e) => ApiError::Internal(e.to_string()),
            ChangeError::NoSubscription(_) | ChangeError::Conflict(_) => {
                ApiError::Conflict(e.to_string())
            }
            ChangeError::Invalid { field, message } => ApiError::field(field, message),
            ChangeError::NoScheduledChange(id) => ApiError::NotFound {
                what: "scheduled change",
                id,
            },
            ChangeError::Blocked { blockers, preview } => {
                let detail = format!(
                    "the customer's current state does not fit the target plan: {}; \
                     retry with force = true to apply it anyway (the excess is recorded)",
                    blockers
                        .iter()
                        .map(|b| b.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let mut body = serde_json::Map::new();
                body.insert("field".into(), Value::from("plan"));
                body.insert(
                    "blockers".into(),
                    Value::Array(blockers.iter().map(blocker_json).collect()),
                );
                body.insert(
                    "effective_at".into(),
                    serde_json::to_value(preview.effective_at).unwrap_or(Value::Null),
                );
                ApiError::Refused {
                    code: "plan_change_blocked",
                    detail,
                    body,
                }
            }
        }
    }
}

fn blocker_json(b: &Blocker) -> Value {
    serde_json::to_value(BlockerOut::from(b)).unwrap_or(Value::Null)
}

// ---- shapes ----------------------------------------------------------------------------

/// When a change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    Immediately,
    PeriodEnd,
}

impl From<Timing> for ChangeTiming {
    fn from(t: Timing) -> ChangeTiming {
        match t {
            Timing::Immediately => ChangeTiming::Immediately,
            Timing::PeriodEnd => ChangeTiming::PeriodEnd,
        }
    }
}

/// What happens to proration lines (Stripe's `proration_behavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Proration {
    /// On the customer's next invoice.
    #[default]
    NextInvoice,
    /// Invoiced now (until off-cycle invoices exist, they wait for the next
    /// invoice as well).
    InvoiceNow,
    /// No proration lines.
    None,
}

impl From<Proration> for ProrationBehavior {
    fn from(p: Proration) -> ProrationBehavior {
        match p {
            Proration::NextInvoice => ProrationBehavior::NextInvoice,
            Proration::InvoiceNow => ProrationBehavior::InvoiceNow,
            Proration::None => ProrationBehavior::None,
        }
    }
}

/// A plan change: previewed (`preview: true`) or applied.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeIn {
    /// The target plan.
    pub plan: String,
    /// A published version (default: the latest).
    #[serde(default)]
    pub version: Option<u32>,
    /// Only compute what the change would do.
    #[serde(default)]
    pub preview: bool,
    /// Default: upgrades `immediately`, downgrades at `period_end`.
    #[serde(default)]
    pub timing: Option<Timing>,
    #[serde(default)]
    pub proration_behavior: Proration,
    /// Apply even if the customer's state does not fit the target plan (the
    /// excess is recorded in the history and reported).
    #[serde(default)]
    pub force: bool,
    /// Why (kept in the history).
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a plan change would do (read-only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewIn {
    pub plan: String,
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub timing: Option<Timing>,
    #[serde(default)]
    pub proration_behavior: Proration,
}

impl ChangeIn {
    fn request(&self) -> ChangeRequest {
        ChangeRequest {
            plan: self.plan.clone(),
            version: self.version,
            timing: self.timing.map(Into::into),
            proration: self.proration_behavior.into(),
            force: self.force,
            reason: self.reason.clone(),
        }
    }
}

/// Something the customer's current state cannot fit into the target plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockerOut {
    pub feature: String,
    #[schema(value_type = String)]
    pub in_use: Decimal,
    /// A quantity or `unlimited`.
    pub allowed: String,
    /// `7 locations in use, plan basic allows 1`.
    pub message: String,
}

impl From<&Blocker> for BlockerOut {
    fn from(b: &Blocker) -> BlockerOut {
        BlockerOut {
            feature: b.feature.clone(),
            in_use: b.in_use,
            allowed: b.allowed.to_string(),
            message: b.message.clone(),
        }
    }
}

/// A feature lost, and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct LostOut {
    pub feature: String,
    pub lost_at: Timestamp,
}

/// A limit that differs between the plans (`null` = not in the plan).
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitOut {
    pub feature: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One entry of the plan-change history.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChangeOut {
    /// `pch_…`
    pub id: String,
    pub customer_id: String,
    /// `subscribe`, `upgrade`, `downgrade`, `migrate`, `trial_start`,
    /// `trial_convert`, `trial_expire`, `cancel`.
    pub kind: String,
    pub from_plan: Option<String>,
    pub from_version: Option<u32>,
    pub to_plan: String,
    pub to_version: u32,
    /// When the new plan took effect.
    pub effective_at: Timestamp,
    pub requested_at: Timestamp,
    /// The API key id, `cli` or `worker`.
    pub actor: String,
    pub reason: Option<String>,
    /// Proration lines, pending items, forced excess…
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<PlanChangeRecord> for PlanChangeOut {
    fn from(c: PlanChangeRecord) -> PlanChangeOut {
        PlanChangeOut {
            id: c.id,
            customer_id: c.customer_id,
            kind: c.kind,
            from_plan: c.from_plan,
            from_version: c.from_version,
            to_plan: c.to_plan,
            to_version: c.to_version,
            effective_at: c.effective_at,
            requested_at: c.requested_at,
            actor: c.actor,
            reason: c.reason,
            details: c.details,
        }
    }
}

/// A change waiting for its date.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledOut {
    /// `sch_…`
    pub id: String,
    pub customer_id: String,
    /// `change_plan`, `cancel` or `trial_expire`.
    pub action: String,
    pub to_plan: Option<String>,
    pub to_version: Option<u32>,
    pub effective_at: Timestamp,
    /// `pending`, `applied` or `canceled`.
    pub state: String,
    pub actor: String,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<ScheduledChangeRecord> for ScheduledOut {
    fn from(s: ScheduledChangeRecord) -> ScheduledOut {
        ScheduledOut {
            id: s.id,
            customer_id: s.customer_id,
            action: s.action,
            to_plan: s.to_plan,
            to_version: s.to_version,
            effective_at: s.effective_at,
            state: s.state,
            actor: s.actor,
            reason: s.reason,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A proration line waiting for the customer's next invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingItemOut {
    /// `pii_…`
    pub id: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub currency: String,
    pub description: Option<String>,
    pub created_at: Timestamp,
}

impl From<PendingItemRecord> for PendingItemOut {
    fn from(i: PendingItemRecord) -> PendingItemOut {
        PendingItemOut {
            description: i.line["description"].as_str().map(str::to_string),
            id: i.id,
            amount: i.amount,
            currency: i.currency,
            created_at: i.created_at,
        }
    }
}

/// A plan change: what it does (`state = preview`) or did (`applied`,
/// `scheduled`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeOut {
    /// `preview`, `applied` or `scheduled`.
    pub state: String,
    pub customer_id: String,
    pub from_plan: String,
    pub from_version: u32,
    pub to_plan: String,
    pub to_version: u32,
    /// The current billing period.
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    /// `upgrade`, `downgrade` or `lateral`.
    pub direction: String,
    /// `immediately` or `period_end`.
    pub timing: String,
    pub effective_at: Timestamp,
    /// Credit (negative) and charge lines (invoice lines).
    #[schema(value_type = Vec<Object>)]
    pub proration_lines: Vec<Value>,
    #[schema(value_type = String)]
    pub proration_total: Decimal,
    pub features_gained: Vec<String>,
    pub features_lost: Vec<LostOut>,
    pub limits: Vec<LimitOut>,
    /// What the customer's state does not fit (a preview lists them; an
    /// applied change has none unless forced).
    pub blockers: Vec<BlockerOut>,
    /// Blockers overridden with `force`, recorded in the history.
    pub excess: Vec<BlockerOut>,
    /// The history entry of an applied change.
    pub change: Option<PlanChangeOut>,
    /// The scheduled change of a change at period end.
    pub scheduled: Option<ScheduledOut>,
    /// Proration lines recorded for the next invoice.
    pub pending_items: Vec<PendingItemOut>,
    /// The off-cycle invoice of `invoice_now`, when one was issued.
    pub invoice_id: Option<String>,
    /// A scheduled change this one replaced.
    pub superseded: Option<ScheduledOut>,
    pub subscription: Option<SubscriptionOut>,
}

fn state_name(s: ChangeState) -> &'static str {
    match s {
        ChangeState::Applied => "applied",
        ChangeState::Scheduled => "scheduled",
    }
}

fn text<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl ChangeOut {
    fn preview(v: PreviewView) -> ChangeOut {
        let p = v.preview;
        ChangeOut {
            state: "preview".into(),
            customer_id: v.customer_id,
            from_plan: v.from_plan,
            from_version: v.from_version,
            to_plan: v.to_plan,
            to_version: v.to_version,
            period_start: v.period.start,
            period_end: v.period.end,
            direction: text(&p.direction),
            timing: text(&p.timing),
            effective_at: p.effective_at,
            proration_lines: p
                .proration_lines
                .iter()
                .filter_map(|l| serde_json::to_value(l).ok())
                .collect(),
            proration_total: p.proration_total,
            features_gained: p.features_gained,
            features_lost: p
                .features_lost
                .into_iter()
                .map(|l| LostOut {
                    feature: l.feature,
                    lost_at: l.lost_at,
                })
                .collect(),
            limits: p
                .limits
                .into_iter()
                .map(|l| LimitOut {
                    feature: l.feature,
                    before: l.before.map(|x| x.to_string()),
                    after: l.after.map(|x| x.to_string()),
                })
                .collect(),
            blockers: p.blockers.iter().map(BlockerOut::from).collect(),
            excess: Vec::new(),
            change: None,
            scheduled: None,
            pending_items: Vec::new(),
            invoice_id: None,
            superseded: None,
            subscription: None,
        }
    }

    fn outcome(o: ChangeOutcome) -> ChangeOut {
        ChangeOut {
            state: state_name(o.state).into(),
            excess: o.excess.iter().map(BlockerOut::from).collect(),
            change: o.change.map(Into::into),
            scheduled: o.scheduled.map(Into::into),
            pending_items: o.pending_items.into_iter().map(Into::into).collect(),
            invoice_id: o.invoice_id,
            superseded: o.superseded.map(Into::into),
            subscription: Some(o.subscription.into()),
            ..ChangeOut::preview(o.view)
        }
    }
}

/// What a trial, conversion or cancellation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionChangeOut {
    /// `applied` or `scheduled`.
    pub state: String,
    pub subscription: SubscriptionOut,
    pub change: Option<PlanChangeOut>,
    pub scheduled: Option<ScheduledOut>,
    /// The invoice written now: a converted trial's first period (base
    /// billed in advance), or the final invoice of a cancellation now.
    pub invoice_id: Option<String>,
}

impl From<SubscriptionOutcome> for SubscriptionChangeOut {
    fn from(o: SubscriptionOutcome) -> SubscriptionChangeOut {
        SubscriptionChangeOut {
            state: state_name(o.state).into(),
            subscription: o.subscription.into(),
            change: o.change.map(Into::into),
            scheduled: o.scheduled.map(Into::into),
            invoice_id: o.invoice_id,
        }
    }
}

fn actor(principal: &Principal) -> String {
    principal.key.id.clone()
}

// ---- plan changes ----------------------------------------------------------------------

/// Previews (`preview: true`) or applies a plan change. Upgrades take effect
/// now with proration; downgrades at period end (scheduled) unless `timing =
/// immediately`. A change the customer's state does not fit is refused (409,
/// every blocker listed) unless `force`.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/subscription/change",
    tag = "customers",
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Apply the change once: a repeat with the same key (and the same request) returns the first answer, with `Idempotent-Replayed: true`, and changes nothing; the same key with another request is a 422. 1–255 characters; per customer.")
    ),
    request_body = ChangeIn,
    responses(
        (status = 200, description = "The preview, or the change applied or scheduled", body = ChangeOut,
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is the stored one of an earlier request with the same `Idempotency-Key`"))),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "Blocked (every blocker listed), no subscription, or a change already scheduled", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (unknown plan or version, same plan)", content_type = "application/problem+json")
    )
)]
pub async fn change_subscription(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChangeIn>,
) -> Result<(HeaderMap, Json<ChangeOut>), ApiError> {
    principal.require_admin()?;
    let req = body.request();
    let mut answer = HeaderMap::new();
    if body.preview {
        let view = state.billing.preview_plan_change(&id, &req).await?;
        return Ok((answer, Json(ChangeOut::preview(view))));
    }
    let outcome = match idempotency_key(&headers)? {
        None => {
            state
                .billing
                .change_plan(&id, &req, &actor(&principal))
                .await?
        }
        Some(key) => {
            let (outcome, replayed) = state
                .billing
                .change_plan_once(&id, &req, &actor(&principal), &key)
                .await?;
            if replayed {
                answer.insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            outcome
        }
    };
    Ok((answer, Json(ChangeOut::outcome(outcome))))
}

/// The `Idempotency-Key` header, if any: 1–255 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// What a plan change would do: proration lines, features gained and lost
/// (with the date each is lost), limits before and after, blockers. Changes
/// nothing; a customer key may preview its own.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/subscription/change/preview",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = PreviewIn,
    responses(
        (status = 200, description = "The preview", body = ChangeOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "No subscription", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", content_type = "application/problem+json")
    )
)]
pub async fn preview_change(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<PreviewIn>, ApiError>,
) -> Result<Json<ChangeOut>, ApiError> {
    // Another customer's id answers 404 whatever the body says.
    principal.require_read(&id)?;
    let ApiJson(body) = body?;
    let req = ChangeRequest {
        plan: body.plan,
        version: body.version,
        timing: body.timing.map(Into::into),
        proration: body.proration_behavior.into(),
        force: false,
        reason: None,
    };
    let view = state.billing.preview_plan_change(&id, &req).await?;
    Ok(Json(ChangeOut::preview(view)))
}

/// The customer's pending scheduled change, if any.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledView {
    /// `null` when nothing is scheduled.
    pub scheduled: Option<ScheduledOut>,
}

/// The change waiting for its date (a downgrade or cancellation at period
/// end, a trial's expiry), or `null`.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/subscription/scheduled",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The scheduled change, or null", body = ScheduledView),
        (status = 404, description = "No such customer", content_type = "application/problem+json")
    )
)]
pub async fn get_scheduled(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ScheduledView>, ApiError> {
    principal.require_read(&id)?;
    let s = state.billing.scheduled_change(&id).await?;
    Ok(Json(ScheduledView {
        scheduled: s.map(Into::into),
    }))
}

/// Cancels the scheduled change (the subscription stays as it is).
#[utoipa::path(
    delete,
    path = "/v1/customers/{id}/subscription/scheduled",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The scheduled change, now canceled", body = ScheduledOut),
        (status = 404, description = "No such customer, or nothing scheduled", content_type = "application/problem+json"),
        (status = 409, description = "A trial's expiry (convert the trial instead)", content_type = "application/problem+json")
    )
)]
pub async fn cancel_scheduled(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ScheduledOut>, ApiError> {
    principal.require_admin()?;
    let s = state
        .billing
        .cancel_scheduled_change(&id, &actor(&principal))
        .await?;
    Ok(Json(s.into()))
}

/// A cancellation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelIn {
    /// At the end of the current period (default), or now.
    #[serde(default = "yes")]
    pub at_period_end: bool,
    /// Canceled now: credit the unused part of an in-advance base already
    /// billed for the period and bill the period to now on a final invoice
    /// (default true; `false`: no credit, the period closes at its end).
    #[serde(default = "yes")]
    pub prorate: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// Cancels the subscription at the end of the period (scheduled, cancellable)
/// or now (`at_period_end: false`: requests are denied from now on).
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/subscription/cancel",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = CancelIn,
    responses(
        (status = 200, description = "Canceled or scheduled", body = SubscriptionChangeOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "No subscription, already canceled, or a change already scheduled", content_type = "application/problem+json")
    )
)]
pub async fn cancel_subscription(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CancelIn>,
) -> Result<Json<SubscriptionChangeOut>, ApiError> {
    principal.require_admin()?;
    let req = CancelRequest {
        at_period_end: body.at_period_end,
        prorate: body.prorate,
        reason: body.reason,
    };
    let out = state
        .billing
        .cancel_subscription(&id, &req, &actor(&principal))
        .await?;
    Ok(Json(out.into()))
}

/// Starts a trial.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialIn {
    pub plan: String,
    #[serde(default)]
    pub version: Option<u32>,
    /// Default: the plan's trial days.
    #[serde(default)]
    pub trial_days: Option<u32>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Starts a trial of a plan now (the customer must have no live
/// subscription); its expiry is scheduled.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/subscription/trial",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = TrialIn,
    responses(
        (status = 200, description = "The trial", body = SubscriptionChangeOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "Already subscribed", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (plan, trial_days)", content_type = "application/problem+json")
    )
)]
pub async fn start_trial(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TrialIn>,
) -> Result<Json<SubscriptionChangeOut>, ApiError> {
    principal.require_admin()?;
    let req = TrialRequest {
        plan: body.plan,
        version: body.version,
        days: body.trial_days,
        reason: body.reason,
    };
    let out = state
        .billing
        .start_trial(&id, &req, &actor(&principal))
        .await?;
    Ok(Json(out.into()))
}

/// Why, for the history.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonIn {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Converts a trial into a paid subscription now (the first paid period
/// starts now).
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/subscription/trial/convert",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = ReasonIn,
    responses(
        (status = 200, description = "The subscription, active", body = SubscriptionChangeOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "Not trialing", content_type = "application/problem+json")
    )
)]
pub async fn convert_trial(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReasonIn>,
) -> Result<Json<SubscriptionChangeOut>, ApiError> {
    principal.require_admin()?;
    let out = state
        .billing
        .convert_trial(&id, body.reason, &actor(&principal))
        .await?;
    Ok(Json(out.into()))
}

/// The customer's plan changes, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryOut {
    pub data: Vec<PlanChangeOut>,
}

/// The plan-change history: who, when, from, to and why.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/subscription/history",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The history, oldest first", body = HistoryOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json")
    )
)]
pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<HistoryOut>, ApiError> {
    principal.require_read(&id)?;
    let data = state.billing.plan_change_history(&id).await?;
    Ok(Json(HistoryOut {
        data: data.into_iter().map(Into::into).collect(),
    }))
}

// ---- migration -------------------------------------------------------------------------

/// Moves the subscribers of a plan to another version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateIn {
    /// Only subscribers of this version (default: every other version).
    #[serde(default)]
    pub from_version: Option<u32>,
    /// Default: the latest version.
    #[serde(default)]
    pub to_version: Option<u32>,
    /// Only show who gains and loses what.
    #[serde(default)]
    pub preview: bool,
    /// Migrate customers whose state does not fit the target too.
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// One subscriber of a migration.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationCustomerOut {
    pub customer_id: String,
    pub from_version: u32,
    /// `seats: limit 5 → 10`
    pub gains: Vec<String>,
    pub losses: Vec<String>,
    pub changes: Vec<String>,
    pub blockers: Vec<BlockerOut>,
}

impl From<MigrationCustomer> for MigrationCustomerOut {
    fn from(c: MigrationCustomer) -> MigrationCustomerOut {
        MigrationCustomerOut {
            blockers: c.blockers.iter().map(BlockerOut::from).collect(),
            customer_id: c.customer_id,
            from_version: c.from_version,
            gains: c.gains,
            losses: c.losses,
            changes: c.changes,
        }
    }
}

/// A migration: previewed or applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationOut {
    /// `preview` or `applied`.
    pub state: String,
    pub plan: String,
    pub to_version: u32,
    /// The subscribers concerned (preview) or left on their version (applied,
    /// blocked without `force`).
    pub customers: Vec<MigrationCustomerOut>,
    /// The history entries of the customers moved (applied).
    pub migrated: Vec<PlanChangeOut>,
}

/// Moves every subscriber of a plan from one version to another now (no
/// proration), or previews who gains and loses what.
#[utoipa::path(
    post,
    path = "/v1/admin/plans/{key}/migrate",
    tag = "admin",
    params(("key" = String, Path, description = "The plan's key")),
    request_body = MigrateIn,
    responses(
        (status = 200, description = "The preview, or what was done", body = MigrationOut),
        (status = 422, description = "Unknown plan or version", content_type = "application/problem+json")
    )
)]
pub async fn migrate_plan(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<MigrateIn>,
) -> Result<Json<MigrationOut>, ApiError> {
    principal.require_admin()?;
    let req = MigrationRequest {
        from_version: body.from_version,
        to_version: body.to_version,
        force: body.force,
        reason: body.reason,
    };
    if body.preview {
        let p = state.billing.preview_migration(&key, &req).await?;
        return Ok(Json(MigrationOut {
            state: "preview".into(),
            plan: p.plan,
            to_version: p.to_version,
            customers: p.customers.into_iter().map(Into::into).collect(),
            migrated: Vec::new(),
        }));
    }
    let o = state
        .billing
        .migrate_plan(&key, &req, &actor(&principal))
        .await?;
    Ok(Json(MigrationOut {
        state: "applied".into(),
        plan: o.plan,
        to_version: o.to_version,
        customers: o.skipped.into_iter().map(Into::into).collect(),
        migrated: o.migrated.into_iter().map(Into::into).collect(),
    }))
}
