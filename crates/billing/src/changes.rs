//! Plan changes in the service: preview and apply (upgrade now with proration,
//! downgrade at period end or now), scheduled changes, trials, cancellation,
//! plan version migration, and the plan-change history every one of them
//! writes. The money rules are the core's (`tollgate_core::billing::change`);
//! this module gathers their inputs (current period, usage, gauge levels),
//! applies the result to the engine (which enforces the new plan from the
//! effective instant) and records it. Rules: `docs/plan-changes.md`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate_core::billing::InvoiceLine;
use tollgate_core::billing::change::{
    Blocker, ChangeDirection, ChangeInput, ChangePreview, ChangeTiming, ProrationBehavior,
    cancellation_credit, preview_change,
};
use tollgate_core::billing::compute::BillingError;
use tollgate_core::catalog::Plan;
use tollgate_core::catalog::{DiffEffect, PlanDiffEntry, diff_plans};
use tollgate_core::period::Period;
use tollgate_engine::{EngineError, SubscribeOptions};
use tollgate_store::changes::{PendingItemRecord, PlanChangeRecord, ScheduledChangeRecord};
use tollgate_store::{StoreError, SubscriptionRecord, SubscriptionStatus};

use crate::Billing;

/// The actor of changes the billing worker applies.
pub const WORKER: &str = "worker";

/// Scheduled actions.
pub const ACTION_CHANGE_PLAN: &str = "change_plan";
pub const ACTION_CANCEL: &str = "cancel";
pub const ACTION_TRIAL_EXPIRE: &str = "trial_expire";

/// Serializes every plan-change write of this process (requests, the
/// worker's due changes, migrations): plan changes are rare, and two of them
/// racing on one customer (or a scheduled change applied twice) must not
/// happen. One node writes a deployment (as for the ledger).
static CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a history entry's `details.settlement` says its invoice
/// (`details.invoice_id`, named before it is written) bills: a new
/// subscription's first period, a cancellation's final invoice, the rest of
/// the period of a reactivated subscription, a plan change's proration.
pub const SETTLE_FIRST_PERIOD: &str = "first_period";
pub const SETTLE_FINAL: &str = "final";
pub const SETTLE_REACTIVATION: &str = "reactivation";
/// A plan change's `invoice_now` proration: its proration items on an
/// off-cycle invoice over the rest of the period.
pub const SETTLE_PRORATION: &str = "proration";

/// How far back the worker's tick looks for history entries to complete
/// ([`Billing::recover_settlements`]): each entry in the window costs a
/// look-up on every tick, and a cut-off change is repaired by the next tick
/// (a minute later) or, whenever it happened, by its customer's next
/// subscription change (which reads the customer's whole history first).
/// 35 days covers the longest month with days to spare: a final invoice must
/// be written before the run closes its period, and a worker down longer
/// than that has more than this to catch up (`docs/plan-changes.md`).
pub const RECOVERY_LOOKBACK_DAYS: i64 = 35;

const PENDING: &str = "pending";
const APPLIED: &str = "applied";
const CANCELED: &str = "canceled";

/// Why a plan-change operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("billing: {0}")]
    Billing(#[from] BillingError),
    #[error("invoice: {0}")]
    Invoice(#[from] crate::run::InvoiceError),
    #[error("customer {0:?} has no subscription")]
    NoSubscription(String),
    /// A field of the request is wrong (named).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The customer's current state does not fit the target plan; every
    /// violation is listed. `force` applies the change anyway.
    #[error("the change is blocked: {}", blocker_list(.blockers))]
    Blocked {
        blockers: Vec<Blocker>,
        preview: Box<ChangePreview>,
    },
    /// The request conflicts with the subscription's state (a change already
    /// scheduled, a canceled subscription, no trial to convert…).
    #[error("{0}")]
    Conflict(String),
    #[error("customer {0:?} has no scheduled change")]
    NoScheduledChange(String),
}

fn blocker_list(blockers: &[Blocker]) -> String {
    blockers
        .iter()
        .map(|b| b.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = ChangeError> = std::result::Result<T, E>;

/// A history entry that keeps the subscription's plan (trial conversion,
/// cancellation, reactivation).
fn same_plan_entry(
    kind: &str,
    sub: &SubscriptionRecord,
    effective_at: Timestamp,
    requested_at: Timestamp,
    actor: &str,
    reason: Option<String>,
    details: serde_json::Value,
) -> PlanChangeRecord {
    PlanChangeRecord {
        id: mint("pch"),
        customer_id: sub.customer_id.clone(),
        kind: kind.to_string(),
        from_plan: Some(sub.plan_key.clone()),
        from_version: Some(sub.plan_version),
        to_plan: sub.plan_key.clone(),
        to_version: sub.plan_version,
        effective_at,
        requested_at,
        actor: actor.to_string(),
        reason,
        details,
    }
}

/// The id of pending item `n` of history entry `change` (a plan change's
/// proration line, a cancellation's credit): derived, so writing it again is
/// a no-op.
fn item_id(change: &str, n: usize) -> String {
    format!("pii_{change}_{n}")
}

/// Mints `prefix_…` ids: unique across restarts (wall clock at first use,
/// process id, counter); they carry no meaning, but sort in minting order.
/// The id of what a keyed request writes (`prefix_k` and 24 hex digits of
/// the SHA-256 of the customer and the idempotency key): a repeat of the
/// request finds it by its key even when its answer was never stored.
fn keyed_id(prefix: &str, customer: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{customer}\n{key}").as_bytes());
    let hex = hex::encode(digest);
    format!("{prefix}_k{}", &hex[..24])
}

pub(crate) fn mint(prefix: &str) -> String {
    static STEM: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stem = STEM.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default();
        format!("{micros:x}{:04x}", std::process::id() & 0xffff)
    });
    // Fixed width, so ids of one process sort in the order they were minted
    // (the history orders changes of the same instant by id).
    format!(
        "{prefix}_{stem}{:010x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---- requests and outcomes ---------------------------------------------------------

/// A plan change as asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRequest {
    pub plan: String,
    /// Default: the plan's latest version.
    pub version: Option<u32>,
    /// Default: upgrades now, downgrades (and other versions of the same
    /// plan) at period end.
    pub timing: Option<ChangeTiming>,
    pub proration: ProrationBehavior,
    /// Apply even if the customer's state does not fit the target plan; the
    /// excess is recorded in the history and reported.
    pub force: bool,
    pub reason: Option<String>,
}

impl ChangeRequest {
    pub fn to(plan: impl Into<String>) -> ChangeRequest {
        ChangeRequest {
            plan: plan.into(),
            version: None,
            timing: None,
            proration: ProrationBehavior::NextInvoice,
            force: false,
            reason: None,
        }
    }
}

/// A preview with the plans and the period it was computed on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewView {
    pub customer_id: String,
    pub from_plan: String,
    pub from_version: u32,
    pub to_plan: String,
    pub to_version: u32,
    /// The current billing period.
    pub period: Period,
    #[serde(flatten)]
    pub preview: ChangePreview,
}

/// Whether a change took effect or waits for its date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    Applied,
    Scheduled,
}

/// What applying a change did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeOutcome {
    pub state: ChangeState,
    pub view: PreviewView,
    /// The history entry (applied changes).
    pub change: Option<PlanChangeRecord>,
    /// The scheduled change (changes at period end).
    pub scheduled: Option<ScheduledChangeRecord>,
    /// Proration lines waiting for the next invoice.
    pub pending_items: Vec<PendingItemRecord>,
    /// The off-cycle invoice of `invoice_now` proration, when one was issued.
    pub invoice_id: Option<String>,
    /// Blockers overridden with `force` (recorded in the history).
    pub excess: Vec<Blocker>,
    /// A scheduled change this one replaced (canceled).
    pub superseded: Option<ScheduledChangeRecord>,
    pub subscription: SubscriptionRecord,
}

/// Starts a trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRequest {
    pub plan: String,
    pub version: Option<u32>,
    /// Default: the plan's `trial_days`.
    pub days: Option<u32>,
    pub reason: Option<String>,
}

/// A cancellation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// At the end of the current period (default) or now.
    pub at_period_end: bool,
    /// Canceled now: credit the unused part of an in-advance base and bill
    /// the period to now on a final invoice (Stripe's `prorate` +
    /// `invoice_now`). `false`: no credit, and the period is closed at its
    /// end as before.
    pub prorate: bool,
    pub reason: Option<String>,
}

/// What a trial, conversion or cancellation did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubscriptionOutcome {
    pub state: ChangeState,
    pub subscription: SubscriptionRecord,
    pub change: Option<PlanChangeRecord>,
    pub scheduled: Option<ScheduledChangeRecord>,
    /// The invoice written now: a converted trial's first period (base
    /// billed in advance), or a cancellation's final invoice.
    pub invoice_id: Option<String>,
}

/// What `apply_due_changes` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DueReport {
    /// History entries written, in the order applied.
    pub applied: Vec<PlanChangeRecord>,
    /// Scheduled changes that were due but no longer apply (marked canceled).
    pub dropped: Vec<ScheduledChangeRecord>,
    /// Scheduled changes that failed (left pending, retried next time): id
    /// and error.
    pub failed: Vec<(String, String)>,
}

/// Moves subscribers of one plan to another version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationRequest {
    /// Subscribers of this version only (default: every version but the target).
    pub from_version: Option<u32>,
    /// Default: the latest version.
    pub to_version: Option<u32>,
    /// Migrate customers whose state does not fit the target too.
    pub force: bool,
    pub reason: Option<String>,
}

/// One subscriber in a migration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MigrationCustomer {
    pub customer_id: String,
    pub from_version: u32,
    /// One line per difference that is a gain (`seats: limit 5 → 10`).
    pub gains: Vec<String>,
    /// One line per difference that is a loss.
    pub losses: Vec<String>,
    /// Other differences (a changed setting or price shape).
    pub changes: Vec<String>,
    pub blockers: Vec<Blocker>,
}

/// Who gains and loses what.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MigrationPreview {
    pub plan: String,
    pub to_version: u32,
    /// The differences from each source version to the target.
    pub differences: BTreeMap<u32, Vec<PlanDiffEntry>>,
    pub customers: Vec<MigrationCustomer>,
}

/// What a migration did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MigrationOutcome {
    pub plan: String,
    pub to_version: u32,
    /// History entries of the customers moved.
    pub migrated: Vec<PlanChangeRecord>,
    /// Customers left on their version because of blockers (without `force`).
    pub skipped: Vec<MigrationCustomer>,
}

// ---- the service ----------------------------------------------------------------------

/// A customer's subscription with its current plan and period.
struct Current {
    sub: SubscriptionRecord,
    plan: Plan,
    period: Period,
    usage: BTreeMap<String, Decimal>,
    gauges: BTreeMap<String, Decimal>,
}

/// A cancellation now ([`Billing::cancel_now`]).
struct Cancellation<'a> {
    /// `cancel` or `trial_expire`.
    kind: &'a str,
    effective_at: Timestamp,
    actor: &'a str,
    reason: Option<String>,
    /// Credit the unused in-advance base of this plan and bill the period
    /// to now on a final invoice.
    settle: Option<&'a Plan>,
    /// The scheduled change it applies.
    scheduled: Option<&'a str>,
}

/// What completing a plan change did ([`Billing::complete_plan_change`]).
struct PlanMoved {
    subscription: SubscriptionRecord,
    /// Its proration items (pending).
    items: Vec<PendingItemRecord>,
    /// The scheduled change it replaced (canceled).
    superseded: Option<ScheduledChangeRecord>,
}

fn kind_of(direction: ChangeDirection) -> &'static str {
    match direction {
        ChangeDirection::Upgrade => "upgrade",
        ChangeDirection::Downgrade => "downgrade",
        ChangeDirection::Lateral => "migrate",
    }
}

impl Billing {
    /// Writes a history entry before the change it records (see
    /// `recover_settlements`); the tests' injected crash comes right after it.
    async fn write_intent(&self, change: &PlanChangeRecord) -> Result<()> {
        self.store.changes().insert_plan_change(change).await?;
        Ok(self.crash_point()?)
    }

    /// A published plan version: the catalog's when it is the latest (or no
    /// version is asked), else the frozen definition from the store, with the
    /// catalog's `tier` and `public` (they apply to every version in place).
    /// The plan must be in the served catalog: this is what a change may move
    /// a customer *to*.
    pub async fn plan_version(&self, key: &str, version: Option<u32>) -> Result<Plan> {
        if self.engine.catalog().plan(key).is_none() {
            return Err(self.unknown_plan(key));
        }
        self.published_version(key, version).await
    }

    /// A version a subscription pins (or a scheduled change was accepted
    /// for): [`Billing::plan_version`], also when a catalog applied since no
    /// longer has the plan (its subscribers keep their version).
    pub async fn pinned_version(&self, key: &str, version: u32) -> Result<Plan> {
        self.published_version(key, Some(version)).await
    }

    fn unknown_plan(&self, key: &str) -> ChangeError {
        ChangeError::Invalid {
            field: "plan",
            message: format!(
                "unknown plan {key:?}; plans: {}",
                self.engine
                    .catalog()
                    .plans
                    .iter()
                    .map(|p| p.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    async fn published_version(&self, key: &str, version: Option<u32>) -> Result<Plan> {
        let catalog = self.engine.catalog();
        let latest = catalog.plan(key);
        let v = match (version, latest) {
            (None, Some(l)) => return Ok(l.clone()),
            (Some(v), Some(l)) if v == l.version => return Ok(l.clone()),
            (None, None) => return Err(self.unknown_plan(key)),
            (Some(v), _) => v,
        };
        let record = self
            .store
            .plan_versions()
            .await?
            .into_iter()
            .find(|r| r.plan_key == key && r.version == v)
            .ok_or_else(|| match latest {
                None => self.unknown_plan(key),
                Some(_) => ChangeError::Invalid {
                    field: "version",
                    message: format!(
                        "plan {key:?} has no version {v}; versions: {:?}",
                        self.engine.plan_versions(key)
                    ),
                },
            })?;
        let mut plan: Plan = serde_json::from_value(record.definition).map_err(|e| {
            StoreError::Corrupt(format!("published plan {key} v{v} is not readable: {e}"))
        })?;
        plan.version = v;
        if let Some(l) = latest {
            plan.tier = l.tier;
            plan.public = l.public;
        }
        Ok(plan)
    }

    fn subscription_of(&self, customer: &str) -> Result<SubscriptionRecord> {
        self.engine
            .subscription(customer)?
            .ok_or_else(|| ChangeError::NoSubscription(customer.to_string()))
    }

    /// The subscription, its plan, the current period, the usage of metered
    /// features in their current window and the gauge levels.
    async fn current(&self, customer: &str) -> Result<Current> {
        let sub = self.subscription_of(customer)?;
        let plan = self.pinned_version(&sub.plan_key, sub.plan_version).await?;
        let summary = self.engine.entitlements(customer)?;
        let (Some(start), Some(end)) = (summary.period_start, summary.period_end) else {
            return Err(ChangeError::NoSubscription(customer.to_string()));
        };
        let period = Period::new(start, end).map_err(|e| BillingError::Invalid(e.to_string()))?;
        let mut usage = BTreeMap::new();
        let mut gauges = BTreeMap::new();
        for f in summary.features {
            match (f.kind.as_str(), f.used) {
                ("metered", Some(used)) => {
                    usage.insert(f.feature, used);
                }
                ("gauge", Some(level)) => {
                    gauges.insert(f.feature, level);
                }
                _ => {}
            }
        }
        Ok(Current {
            sub,
            plan,
            period,
            usage,
            gauges,
        })
    }

    fn preview_on(
        &self,
        cur: &Current,
        to: &Plan,
        timing: Option<ChangeTiming>,
        proration: ProrationBehavior,
    ) -> Result<PreviewView> {
        let preview = preview_change(&ChangeInput {
            from: &cur.plan,
            to,
            period: cur.period,
            at: self.engine.now(),
            timing,
            proration,
            usage: cur.usage.clone(),
            gauges: cur.gauges.clone(),
        })?;
        Ok(PreviewView {
            customer_id: cur.sub.customer_id.clone(),
            from_plan: cur.plan.key.clone(),
            from_version: cur.plan.version,
            to_plan: to.key.clone(),
            to_version: to.version,
            period: cur.period,
            preview,
        })
    }

    /// What a change would do, without doing it: proration lines, features
    /// gained and lost (with the date each is lost), limits before and after,
    /// blockers.
    pub async fn preview_plan_change(
        &self,
        customer: &str,
        req: &ChangeRequest,
    ) -> Result<PreviewView> {
        let cur = self.current(customer).await?;
        Ok(self.target(&cur, req).await?.1)
    }

    /// The target plan of a request and the preview of moving to it.
    async fn target(&self, cur: &Current, req: &ChangeRequest) -> Result<(Plan, PreviewView)> {
        let to = self.plan_version(&req.plan, req.version).await?;
        if to.key == cur.plan.key && to.version == cur.plan.version {
            return Err(ChangeError::Invalid {
                field: "plan",
                message: format!(
                    "the customer is already on {} version {}",
                    to.key, to.version
                ),
            });
        }
        let view = self.preview_on(cur, &to, req.timing, req.proration)?;
        Ok((to, view))
    }

    /// Applies a change: now (upgrades by default; proration per the
    /// request) or at period end (downgrades by default: a scheduled change).
    /// Refused with every blocker listed unless `force`.
    pub async fn change_plan(
        &self,
        customer: &str,
        req: &ChangeRequest,
        actor: &str,
    ) -> Result<ChangeOutcome> {
        let _changes = CHANGES.lock().await;
        self.recover_settlements_of(Some(customer)).await?;
        self.change_plan_unlocked(customer, req, actor, None).await
    }

    /// [`Billing::change_plan`] with an idempotency key (the HTTP
    /// `Idempotency-Key` header): the first request with a key is applied and
    /// its outcome stored; a repeat with the same key and request returns that
    /// outcome (`true`: replayed) and changes nothing; the same key with
    /// another request is refused (field `Idempotency-Key`). A refused change
    /// stores nothing, so it can be retried with its key. Keys are per
    /// customer.
    ///
    /// A change now records its key and request in its history entry
    /// (`details.idempotency_key`, `details.request`), so when the answer was
    /// never stored (the request was cut off after its entry, and recovery
    /// completed the change), a repeat finds the entry, after completing it,
    /// and answers the change from it (`true`: replayed), storing that
    /// answer for the repeats after it.
    pub async fn change_plan_once(
        &self,
        customer: &str,
        req: &ChangeRequest,
        actor: &str,
        key: &str,
    ) -> Result<(ChangeOutcome, bool)> {
        let _changes = CHANGES.lock().await;
        let scope = format!("subscription_change:{customer}");
        let request = serde_json::to_value(req)
            .map_err(|e| BillingError::Invalid(format!("change request: {e}")))?;
        let reused = || ChangeError::Invalid {
            field: "Idempotency-Key",
            message: format!("{key:?} was already used for another change request of {customer:?}"),
        };
        let store = self.store.billing();
        if let Some((first, response)) = store.idempotent_response(&scope, key).await? {
            if first != request {
                return Err(reused());
            }
            let outcome = serde_json::from_value(response).map_err(|e| {
                StoreError::Corrupt(format!("idempotent response {scope}/{key}: {e}"))
            })?;
            return Ok((outcome, true));
        }
        // No answer stored: the change may still have been made (its entry
        // written, then a crash); completed first, then answered from its
        // entry.
        self.recover_settlements_of(Some(customer)).await?;
        let made = self
            .store
            .changes()
            .plan_changes(customer)
            .await?
            .into_iter()
            .find(|c| c.details["idempotency_key"].as_str() == Some(key));
        // A change at period end is only its scheduled change, under an id
        // derived from the key.
        let scheduled = match made {
            Some(_) => None,
            None => {
                self.store
                    .changes()
                    .scheduled_change(&keyed_id("sch", customer, key))
                    .await?
            }
        };
        let (outcome, replayed) = match (made, scheduled) {
            (Some(c), _) if c.details["request"] != request => return Err(reused()),
            (Some(c), _) => (self.outcome_of(c).await?, true),
            (None, Some(s)) => (self.scheduled_outcome(customer, req, s).await?, true),
            (None, None) => {
                let outcome = self
                    .change_plan_unlocked(customer, req, actor, Some((key, &request)))
                    .await?;
                (outcome, false)
            }
        };
        let response = serde_json::to_value(&outcome)
            .map_err(|e| BillingError::Invalid(format!("change outcome: {e}")))?;
        store
            .save_idempotent_response(&scope, key, &request, &response, self.engine.now())
            .await?;
        Ok((outcome, replayed))
    }

    /// The answer of the change now that history entry `c` records (a
    /// request whose answer was never stored, see
    /// [`Billing::change_plan_once`]), as the request would have answered
    /// it: the preview it was computed on and its proration items from the
    /// entry, the scheduled change it replaced and the subscription as they
    /// are now, its `invoice_now` invoice if written.
    async fn outcome_of(&self, c: PlanChangeRecord) -> Result<ChangeOutcome> {
        let corrupt = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("plan change {} {what}: {e}", c.id))
        };
        let field = |k: &str| c.details[k].clone();
        let excess: Vec<Blocker> =
            serde_json::from_value(field("excess")).map_err(|e| corrupt("excess", e))?;
        let preview = ChangePreview {
            direction: serde_json::from_value(field("direction"))
                .map_err(|e| corrupt("direction", e))?,
            timing: serde_json::from_value(field("timing")).map_err(|e| corrupt("timing", e))?,
            effective_at: c.effective_at,
            proration_lines: serde_json::from_value(field("proration_lines"))
                .map_err(|e| corrupt("proration_lines", e))?,
            proration_total: serde_json::from_value(field("proration_total"))
                .map_err(|e| corrupt("proration_total", e))?,
            features_gained: serde_json::from_value(field("features_gained"))
                .map_err(|e| corrupt("features_gained", e))?,
            features_lost: serde_json::from_value(field("features_lost"))
                .map_err(|e| corrupt("features_lost", e))?,
            limits: serde_json::from_value(field("limits")).map_err(|e| corrupt("limits", e))?,
            blockers: excess.clone(),
        };
        let view = PreviewView {
            customer_id: c.customer_id.clone(),
            from_plan: c.from_plan.clone().unwrap_or_default(),
            from_version: c.from_version.unwrap_or_default(),
            to_plan: c.to_plan.clone(),
            to_version: c.to_version,
            period: serde_json::from_value(field("period")).map_err(|e| corrupt("period", e))?,
            preview,
        };
        let invoice_id = match c.details["invoice_id"].as_str() {
            Some(id) => self
                .store
                .billing()
                .get_invoice(id)
                .await?
                .map(|_| id.to_string()),
            None => None,
        };
        let mut pending_items = self.proration_records(&c)?;
        for i in &mut pending_items {
            i.invoice_id = invoice_id.clone();
        }
        let superseded = match c.details["supersedes"].as_str() {
            Some(id) => self.store.changes().scheduled_change(id).await?,
            None => None,
        };
        let subscription = self.subscription_of(&c.customer_id)?;
        Ok(ChangeOutcome {
            state: ChangeState::Applied,
            view,
            change: Some(c),
            scheduled: None,
            pending_items,
            invoice_id,
            excess,
            superseded,
            subscription,
        })
    }

    /// The answer of a keyed change at period end whose scheduled change `s`
    /// was written but whose answer was never stored (see
    /// [`Billing::change_plan_once`]): the preview as the request computes
    /// it now, the scheduled change as it is now. Another target than the
    /// one scheduled is another request: refused (field `Idempotency-Key`).
    async fn scheduled_outcome(
        &self,
        customer: &str,
        req: &ChangeRequest,
        s: ScheduledChangeRecord,
    ) -> Result<ChangeOutcome> {
        let cur = self.current(customer).await?;
        let (to, view) = self.target(&cur, req).await?;
        if s.to_plan.as_deref() != Some(to.key.as_str()) || s.to_version != Some(to.version) {
            return Err(ChangeError::Invalid {
                field: "Idempotency-Key",
                message: format!(
                    "the key was already used for another change of {customer:?} ({})",
                    s.id
                ),
            });
        }
        Ok(ChangeOutcome {
            state: ChangeState::Scheduled,
            excess: view.preview.blockers.clone(),
            view,
            change: None,
            scheduled: Some(s),
            pending_items: Vec::new(),
            invoice_id: None,
            superseded: None,
            subscription: cur.sub,
        })
    }

    /// The change itself, once the customer's cut-off change (if any) is
    /// completed by the caller. `once`: the request's idempotency key and
    /// the request as stored with it, recorded in the history entry of a
    /// change now (or, at period end, in the id of its scheduled change).
    async fn change_plan_unlocked(
        &self,
        customer: &str,
        req: &ChangeRequest,
        actor: &str,
        once: Option<(&str, &serde_json::Value)>,
    ) -> Result<ChangeOutcome> {
        let cur = self.current(customer).await?;
        if cur.sub.status == SubscriptionStatus::Canceled {
            return Err(ChangeError::Conflict(format!(
                "the subscription of {customer:?} is canceled; subscribe again instead"
            )));
        }
        let (to, view) = self.target(&cur, req).await?;
        let blockers = view.preview.blockers.clone();
        if !blockers.is_empty() && !req.force {
            return Err(ChangeError::Blocked {
                blockers,
                preview: Box::new(view.preview),
            });
        }
        let now = self.engine.now();
        if view.preview.timing == ChangeTiming::PeriodEnd {
            if cur.sub.status == SubscriptionStatus::Trialing {
                return Err(ChangeError::Conflict(
                    "the subscription is trialing: change it now (timing = immediately) or \
                     convert the trial first"
                        .to_string(),
                ));
            }
            self.refuse_if_scheduled(customer).await?;
            let scheduled = ScheduledChangeRecord {
                // Keyed: found by its key if the answer is never stored.
                id: match once {
                    Some((key, _)) => keyed_id("sch", customer, key),
                    None => mint("sch"),
                },
                customer_id: customer.to_string(),
                action: ACTION_CHANGE_PLAN.to_string(),
                to_plan: Some(to.key.clone()),
                to_version: Some(to.version),
                effective_at: view.preview.effective_at,
                state: PENDING.to_string(),
                actor: actor.to_string(),
                reason: req.reason.clone(),
                created_at: now,
                updated_at: now,
            };
            self.store
                .changes()
                .put_scheduled_change(&scheduled)
                .await?;
            self.crash_point()?;
            return Ok(ChangeOutcome {
                state: ChangeState::Scheduled,
                view,
                change: None,
                scheduled: Some(scheduled),
                pending_items: Vec::new(),
                invoice_id: None,
                excess: blockers,
                superseded: None,
                subscription: cur.sub,
            });
        }

        // The history entry first, naming everything the rest writes (see
        // `recover_settlements`): the scheduled change it replaces, the
        // proration items (ids derived from the entry's) and the
        // `invoice_now` invoice, with the period that invoice covers.
        let change_id = mint("pch");
        let replaced = self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?
            .filter(|s| s.action != ACTION_TRIAL_EXPIRE);
        let lines = match req.proration {
            ProrationBehavior::None => &[][..],
            _ => &view.preview.proration_lines[..],
        };
        let invoice_id = (req.proration == ProrationBehavior::InvoiceNow && !lines.is_empty())
            .then(|| mint("inv"));
        let mut change = PlanChangeRecord {
            id: change_id.clone(),
            customer_id: customer.to_string(),
            kind: kind_of(view.preview.direction).to_string(),
            from_plan: Some(cur.plan.key.clone()),
            from_version: Some(cur.plan.version),
            to_plan: to.key.clone(),
            to_version: to.version,
            effective_at: view.preview.effective_at,
            requested_at: now,
            actor: actor.to_string(),
            reason: req.reason.clone(),
            details: json!({
                "direction": view.preview.direction,
                "timing": view.preview.timing,
                "proration_behavior": req.proration,
                "proration_lines": view.preview.proration_lines,
                "proration_total": view.preview.proration_total,
                "pending_items": (0..lines.len()).map(|i| item_id(&change_id, i)).collect::<Vec<_>>(),
                "period": view.period,
                "settlement": invoice_id.as_ref().map(|_| SETTLE_PRORATION),
                "invoice_id": invoice_id,
                "supersedes": replaced.as_ref().map(|s| &s.id),
                "features_gained": view.preview.features_gained,
                "features_lost": view.preview.features_lost,
                "limits": view.preview.limits,
                "forced": !blockers.is_empty(),
                "excess": blockers,
            }),
        };
        if let (Some((key, request)), Some(details)) = (once, change.details.as_object_mut()) {
            details.insert("idempotency_key".to_string(), json!(key));
            details.insert("request".to_string(), request.clone());
        }
        self.write_intent(&change).await?;
        let moved = self
            .complete_plan_change(&change, false)
            .await?
            .ok_or_else(|| {
                ChangeError::Conflict(format!(
                    "the subscription of {customer:?} changed meanwhile"
                ))
            })?;
        let mut pending_items = moved.items;
        let invoice_id = match invoice_id {
            Some(id) => {
                let written = self.settle_again(&change, SETTLE_PRORATION, id).await?;
                for i in &mut pending_items {
                    i.invoice_id = written.clone();
                }
                written
            }
            None => None,
        };
        Ok(ChangeOutcome {
            state: ChangeState::Applied,
            view,
            change: Some(change),
            scheduled: None,
            pending_items,
            invoice_id,
            excess: blockers,
            superseded: moved.superseded,
            subscription: moved.subscription,
        })
    }

    /// Completes a plan change (`upgrade`, `downgrade`, `migrate`: a request
    /// now, a scheduled change applied, a version migration) from its
    /// history entry `c`, written before (see `recover_settlements`): the
    /// scheduled change it replaces canceled (`details.supersedes`) or the
    /// one it applies marked applied (`details.scheduled_change`), its
    /// proration lines written as pending items under ids derived from the
    /// entry's, then the engine moved to the entry's plan version (keeping
    /// anchor, status and trial end). The engine's move comes last, so a
    /// subscription already on the entry's plan has everything before it;
    /// the `invoice_now` invoice the entry names is written after it by the
    /// caller, or by recovery when missing. `recovering`: only when the
    /// engine still shows the plan before the change, else always. `None`:
    /// nothing was done.
    async fn complete_plan_change(
        &self,
        c: &PlanChangeRecord,
        recovering: bool,
    ) -> Result<Option<PlanMoved>> {
        let customer = c.customer_id.as_str();
        let Some(sub) = self.engine.subscription(customer)? else {
            return match recovering {
                true => Ok(None),
                false => Err(ChangeError::NoSubscription(customer.to_string())),
            };
        };
        // Before it: live, on the plan version it moves from (and not
        // already on the one it moves to).
        let on = (sub.plan_key.as_str(), sub.plan_version);
        let before = sub.status != SubscriptionStatus::Canceled
            && Some(on) == c.from_plan.as_deref().zip(c.from_version)
            && on != (c.to_plan.as_str(), c.to_version);
        if recovering && !before {
            return Ok(None);
        }
        let now = self.engine.now();
        let mut superseded = None;
        let named = |k: &str| c.details[k].as_str();
        if named("supersedes").is_some() || named("scheduled_change").is_some() {
            if let Some(mut s) = self
                .store
                .changes()
                .pending_scheduled_change(customer)
                .await?
            {
                if named("supersedes") == Some(s.id.as_str()) {
                    superseded = Some(self.cancel_superseded(s, &c.id, now).await?);
                } else if named("scheduled_change") == Some(s.id.as_str()) {
                    s.state = APPLIED.to_string();
                    s.updated_at = now;
                    self.store.changes().put_scheduled_change(&s).await?;
                }
            }
        }
        let items = self.proration_items(c).await?;
        let to = self.pinned_version(&c.to_plan, c.to_version).await?;
        let subscription = self.move_to(&sub, &to, None).await?;
        Ok(Some(PlanMoved {
            subscription,
            items,
            superseded,
        }))
    }

    /// Puts the customer on `to` in the engine from now, keeping the billing
    /// anchor, the status and the trial end (unless `status` is given).
    async fn move_to(
        &self,
        sub: &SubscriptionRecord,
        to: &Plan,
        status: Option<SubscriptionStatus>,
    ) -> Result<SubscriptionRecord> {
        let status = status.unwrap_or(sub.status);
        Ok(self
            .engine
            .subscribe(
                &sub.customer_id,
                &to.key,
                SubscribeOptions {
                    status: Some(status),
                    anchor: Some(sub.anchor),
                    trial_ends_at: if status == SubscriptionStatus::Trialing {
                        sub.trial_ends_at
                    } else {
                        None
                    },
                    version: Some(to.version),
                },
            )
            .await?)
    }

    async fn refuse_if_scheduled(&self, customer: &str) -> Result<()> {
        if let Some(s) = self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?
        {
            return Err(ChangeError::Conflict(format!(
                "{} is already scheduled for {} ({}); cancel it first \
                 (DELETE /v1/customers/{customer}/subscription/scheduled)",
                describe(&s),
                s.effective_at,
                s.id
            )));
        }
        Ok(())
    }

    /// Cancels the customer's pending scheduled change because `by` replaced
    /// it. A trial expiry is kept unless `trial_too`.
    async fn supersede_scheduled(
        &self,
        customer: &str,
        by: &str,
        now: Timestamp,
        trial_too: bool,
    ) -> Result<Option<ScheduledChangeRecord>> {
        let Some(s) = self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?
        else {
            return Ok(None);
        };
        if s.action == ACTION_TRIAL_EXPIRE && !trial_too {
            return Ok(None);
        }
        self.cancel_superseded(s, by, now).await.map(Some)
    }

    /// Cancels scheduled change `s` because the change `by` replaced it.
    async fn cancel_superseded(
        &self,
        mut s: ScheduledChangeRecord,
        by: &str,
        now: Timestamp,
    ) -> Result<ScheduledChangeRecord> {
        s.state = CANCELED.to_string();
        s.updated_at = now;
        s.reason = Some(format!("superseded by {by}"));
        self.store.changes().put_scheduled_change(&s).await?;
        Ok(s)
    }

    /// The customer's pending scheduled change.
    pub async fn scheduled_change(&self, customer: &str) -> Result<Option<ScheduledChangeRecord>> {
        self.require_customer(customer)?;
        Ok(self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?)
    }

    /// Cancels the customer's pending scheduled change (a downgrade or a
    /// cancellation at period end). A trial's expiry is not canceled this way:
    /// convert the trial.
    pub async fn cancel_scheduled_change(
        &self,
        customer: &str,
        actor: &str,
    ) -> Result<ScheduledChangeRecord> {
        let _changes = CHANGES.lock().await;
        let mut s = self
            .scheduled_change(customer)
            .await?
            .ok_or_else(|| ChangeError::NoScheduledChange(customer.to_string()))?;
        if s.action == ACTION_TRIAL_EXPIRE {
            return Err(ChangeError::Conflict(
                "a trial's expiry is not canceled: convert the trial instead".to_string(),
            ));
        }
        s.state = CANCELED.to_string();
        s.updated_at = self.engine.now();
        s.reason = Some(format!("canceled by {actor}"));
        self.store.changes().put_scheduled_change(&s).await?;
        Ok(s)
    }

    fn require_customer(&self, customer: &str) -> Result<()> {
        match self.engine.customer(customer) {
            Some(_) => Ok(()),
            None => Err(EngineError::UnknownCustomer(customer.to_string()).into()),
        }
    }

    /// The customer's plan-change history, oldest first.
    pub async fn plan_change_history(&self, customer: &str) -> Result<Vec<PlanChangeRecord>> {
        self.require_customer(customer)?;
        Ok(self.store.changes().plan_changes(customer).await?)
    }

    /// Subscribes a customer (first subscription, or a plan set directly by
    /// an operator) and records it: `trial_start` when trialing, else
    /// `subscribe`. A trial's expiry is scheduled.
    pub async fn subscribe(
        &self,
        customer: &str,
        plan: &str,
        opts: SubscribeOptions,
        actor: &str,
        reason: Option<String>,
    ) -> Result<SubscriptionRecord> {
        let _changes = CHANGES.lock().await;
        self.subscribe_unlocked(customer, plan, opts, actor, reason)
            .await
    }

    async fn subscribe_unlocked(
        &self,
        customer: &str,
        plan: &str,
        opts: SubscribeOptions,
        actor: &str,
        reason: Option<String>,
    ) -> Result<SubscriptionRecord> {
        self.recover_settlements_of(Some(customer)).await?;
        let before = self.engine.subscription(customer)?;
        // What the engine will write, every default resolved: the history
        // entry is written first, from it (see `recover_settlements`).
        let planned = self.engine.planned_subscription(customer, plan, &opts)?;
        // A new subscription (none before, or a canceled one) owes its first
        // period's in-advance base now; a plan set over a live subscription
        // is not a start.
        let starts = before
            .as_ref()
            .is_none_or(|b| b.status == SubscriptionStatus::Canceled);
        let owed = if starts {
            self.first_period_owed(&planned, false).await?
        } else {
            None
        };
        let invoice_id = owed.as_ref().map(|_| mint("inv"));
        let change = self
            .record_subscribe(
                before.as_ref(),
                &planned,
                starts,
                actor,
                reason,
                invoice_id.clone(),
            )
            .await?;
        let sub = self
            .complete_change(&change, false)
            .await?
            .unwrap_or(planned);
        if let (Some(owed), Some(id)) = (owed, invoice_id) {
            let memo = owed.first_period_memo();
            self.invoice_base_owed(owed, memo, id).await?;
        }
        Ok(sub)
    }

    /// Writes the history entry of a subscription about to be written
    /// (`sub`, from [`tollgate_engine::Engine::planned_subscription`]),
    /// naming the pending scheduled change it replaces (`supersedes`) and a
    /// trial's expiry it schedules (`trial_expiry`): both are written after
    /// it, by [`Billing::complete_change`].
    async fn record_subscribe(
        &self,
        before: Option<&SubscriptionRecord>,
        sub: &SubscriptionRecord,
        starts: bool,
        actor: &str,
        reason: Option<String>,
        invoice_id: Option<String>,
    ) -> Result<PlanChangeRecord> {
        let now = self.engine.now();
        let customer = sub.customer_id.as_str();
        let trialing = sub.status == SubscriptionStatus::Trialing;
        let replaced = self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?;
        let expiry = (trialing && sub.trial_ends_at.is_some()).then(|| mint("sch"));
        let change = PlanChangeRecord {
            id: mint("pch"),
            customer_id: customer.to_string(),
            kind: if trialing { "trial_start" } else { "subscribe" }.to_string(),
            from_plan: before.map(|b| b.plan_key.clone()),
            from_version: before.map(|b| b.plan_version),
            to_plan: sub.plan_key.clone(),
            to_version: sub.plan_version,
            effective_at: now,
            requested_at: now,
            actor: actor.to_string(),
            reason,
            details: json!({
                "status": sub.status,
                "anchor": sub.anchor,
                "trial_ends_at": sub.trial_ends_at,
                "starts": starts,
                "settlement": invoice_id.as_ref().map(|_| SETTLE_FIRST_PERIOD),
                "invoice_id": invoice_id,
                "supersedes": replaced.as_ref().map(|s| &s.id),
                "trial_expiry": expiry,
            }),
        };
        self.write_intent(&change).await?;
        Ok(change)
    }

    /// The scheduled-change writes of a subscribe or trial start (history
    /// entry `c`), before the engine's: the pending scheduled change it
    /// replaces canceled (`details.supersedes`), a trial's expiry scheduled
    /// at `details.trial_ends_at` (`details.trial_expiry`). Each a no-op if
    /// done already (entries written before they were named did both first).
    async fn start_scheduled_changes(&self, c: &PlanChangeRecord) -> Result<()> {
        let customer = c.customer_id.as_str();
        if let Some(named) = c.details["supersedes"].as_str() {
            if let Some(s) = self
                .store
                .changes()
                .pending_scheduled_change(customer)
                .await?
                .filter(|s| s.id == named)
            {
                self.cancel_superseded(s, &c.id, self.engine.now()).await?;
            }
        }
        let ends = c.details["trial_ends_at"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if let (Some(id), Some(ends)) = (c.details["trial_expiry"].as_str(), ends) {
            if self.store.changes().scheduled_change(id).await?.is_none() {
                let expiry = ScheduledChangeRecord {
                    id: id.to_string(),
                    customer_id: customer.to_string(),
                    action: ACTION_TRIAL_EXPIRE.to_string(),
                    to_plan: Some(c.to_plan.clone()),
                    to_version: Some(c.to_version),
                    effective_at: ends,
                    state: PENDING.to_string(),
                    actor: c.actor.clone(),
                    reason: None,
                    created_at: c.requested_at,
                    updated_at: c.requested_at,
                };
                self.store.changes().put_scheduled_change(&expiry).await?;
            }
        }
        Ok(())
    }

    /// Starts a trial of a plan now, for `days` (default: the plan's trial
    /// days). The customer must have no live subscription. The period is
    /// anchored at the trial's start; its expiry is scheduled.
    pub async fn start_trial(
        &self,
        customer: &str,
        req: &TrialRequest,
        actor: &str,
    ) -> Result<SubscriptionOutcome> {
        let _changes = CHANGES.lock().await;
        self.require_customer(customer)?;
        if let Some(s) = self.engine.subscription(customer)? {
            if s.status != SubscriptionStatus::Canceled {
                return Err(ChangeError::Conflict(format!(
                    "{customer:?} is already subscribed ({} v{}, {}); a trial starts a new \
                     subscription: change the plan instead",
                    s.plan_key,
                    s.plan_version,
                    s.status.as_str()
                )));
            }
        }
        let plan = self.plan_version(&req.plan, req.version).await?;
        let days = req
            .days
            .or(plan.trial_days)
            .filter(|d| *d > 0)
            .ok_or_else(|| ChangeError::Invalid {
                field: "trial_days",
                message: format!("plan {:?} has no trial days: give trial_days", plan.key),
            })?;
        let now = self.engine.now();
        let ends = now
            .checked_add(SignedDuration::from_hours(24 * i64::from(days)))
            .map_err(|e| ChangeError::Invalid {
                field: "trial_days",
                message: e.to_string(),
            })?;
        let sub = self
            .subscribe_unlocked(
                customer,
                &plan.key,
                SubscribeOptions {
                    status: Some(SubscriptionStatus::Trialing),
                    anchor: Some(now),
                    trial_ends_at: Some(ends),
                    version: Some(plan.version),
                },
                actor,
                req.reason.clone(),
            )
            .await?;
        let scheduled = self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?;
        let change = self.store.changes().plan_changes(customer).await?.pop();
        Ok(SubscriptionOutcome {
            state: ChangeState::Applied,
            subscription: sub,
            change,
            scheduled,
            invoice_id: None,
        })
    }

    /// Converts a trial into a paid subscription now: status `active`, the
    /// billing period re-anchored at the conversion (the first paid period
    /// starts now, with fresh allowances), the scheduled expiry canceled.
    pub async fn convert_trial(
        &self,
        customer: &str,
        reason: Option<String>,
        actor: &str,
    ) -> Result<SubscriptionOutcome> {
        let _changes = CHANGES.lock().await;
        self.recover_settlements_of(Some(customer)).await?;
        let sub = self.subscription_of(customer)?;
        if sub.status != SubscriptionStatus::Trialing {
            return Err(ChangeError::Conflict(format!(
                "{customer:?} is not trialing (status {})",
                sub.status.as_str()
            )));
        }
        let now = self.engine.now();
        // The first paid period starts now: its in-advance base is owed now.
        // The history entry is written first (see `recover_settlements`).
        let planned = SubscriptionRecord {
            status: SubscriptionStatus::Active,
            anchor: now,
            trial_ends_at: None,
            updated_at: now,
            ..sub.clone()
        };
        let owed = self.first_period_owed(&planned, false).await?;
        let invoice_id = owed.as_ref().map(|_| mint("inv"));
        let change = same_plan_entry(
            "trial_convert",
            &sub,
            now,
            now,
            actor,
            reason,
            json!({
                "trial_started_at": sub.anchor,
                "trial_ends_at": sub.trial_ends_at,
                "status": SubscriptionStatus::Active,
                "anchor": now,
                "settlement": invoice_id.as_ref().map(|_| SETTLE_FIRST_PERIOD),
                "invoice_id": invoice_id,
            }),
        );
        self.write_intent(&change).await?;
        let subscription = self
            .complete_change(&change, false)
            .await?
            .unwrap_or(planned);
        if let (Some(owed), Some(id)) = (owed, &invoice_id) {
            let memo = owed.first_period_memo();
            self.invoice_base_owed(owed, memo, id.clone()).await?;
        }
        Ok(SubscriptionOutcome {
            state: ChangeState::Applied,
            subscription,
            change: Some(change),
            scheduled: None,
            invoice_id,
        })
    }

    /// Sets the subscription's status directly (an operator's `PATCH`):
    /// becoming `canceled` is recorded as `cancel` (and cancels any scheduled
    /// change), leaving `canceled` as `reactivate`; other moves (`past_due`,
    /// back to `active`) are not plan changes and are not recorded.
    pub async fn set_subscription_status(
        &self,
        customer: &str,
        status: SubscriptionStatus,
        actor: &str,
    ) -> Result<SubscriptionRecord> {
        let _changes = CHANGES.lock().await;
        self.recover_settlements_of(Some(customer)).await?;
        let before = self.subscription_of(customer)?;
        let canceled = SubscriptionStatus::Canceled;
        if status == canceled && before.status != canceled {
            let now = self.engine.now();
            let how = Cancellation {
                kind: "cancel",
                effective_at: now,
                actor,
                reason: None,
                settle: None,
                scheduled: None,
            };
            self.cancel_now(&before, how).await?;
            return self.subscription_of(customer);
        }
        if before.status != canceled || status == canceled {
            return Ok(self
                .engine
                .set_subscription_status(customer, status)
                .await?);
        }
        // A reactivation: recorded first (see `recover_settlements`), from
        // the subscription as the engine will write it.
        let now = self.engine.now();
        let planned = SubscriptionRecord {
            status,
            canceled_at: None,
            updated_at: now,
            ..before.clone()
        };
        let owed = self.reactivation_owes(&planned, now).await?;
        let invoice_id = owed.as_ref().map(|_| mint("inv"));
        let change = same_plan_entry(
            "reactivate",
            &before,
            now,
            now,
            actor,
            None,
            json!({
                "status": status,
                "settlement": invoice_id.as_ref().map(|_| SETTLE_REACTIVATION),
                "invoice_id": invoice_id,
            }),
        );
        self.write_intent(&change).await?;
        let after = self
            .complete_change(&change, false)
            .await?
            .unwrap_or(planned);
        if let (Some(owed), Some(id)) = (owed, invoice_id) {
            let memo = owed.reactivation_memo();
            self.invoice_base_owed(owed, memo, id).await?;
        }
        Ok(after)
    }

    /// Cancels the subscription at the end of the current period (scheduled,
    /// cancellable) or now (requests are denied from now; no proration).
    pub async fn cancel_subscription(
        &self,
        customer: &str,
        req: &CancelRequest,
        actor: &str,
    ) -> Result<SubscriptionOutcome> {
        let _changes = CHANGES.lock().await;
        self.recover_settlements_of(Some(customer)).await?;
        let cur = self.current(customer).await?;
        if cur.sub.status == SubscriptionStatus::Canceled {
            return Err(ChangeError::Conflict(format!(
                "the subscription of {customer:?} is already canceled"
            )));
        }
        let now = self.engine.now();
        let pending = self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?;
        if let (true, Some(expiry)) = (
            req.at_period_end,
            pending.filter(|p| p.action == ACTION_TRIAL_EXPIRE),
        ) {
            // A trial already ends on its own: that is its "period end".
            return Ok(SubscriptionOutcome {
                state: ChangeState::Scheduled,
                subscription: cur.sub,
                change: None,
                scheduled: Some(expiry),
                invoice_id: None,
            });
        }
        if req.at_period_end {
            self.refuse_if_scheduled(customer).await?;
            let scheduled = ScheduledChangeRecord {
                id: mint("sch"),
                customer_id: customer.to_string(),
                action: ACTION_CANCEL.to_string(),
                to_plan: None,
                to_version: None,
                effective_at: cur.period.end,
                state: PENDING.to_string(),
                actor: actor.to_string(),
                reason: req.reason.clone(),
                created_at: now,
                updated_at: now,
            };
            self.store
                .changes()
                .put_scheduled_change(&scheduled)
                .await?;
            return Ok(SubscriptionOutcome {
                state: ChangeState::Scheduled,
                subscription: cur.sub,
                change: None,
                scheduled: Some(scheduled),
                invoice_id: None,
            });
        }
        // Nothing was billed during a trial: nothing to credit or close.
        let settle =
            (req.prorate && cur.sub.status != SubscriptionStatus::Trialing).then_some(&cur.plan);
        let how = Cancellation {
            kind: "cancel",
            effective_at: now,
            actor,
            reason: req.reason.clone(),
            settle,
            scheduled: None,
        };
        let change = self.cancel_now(&cur.sub, how).await?;
        let invoice_id = change.details["invoice_id"].as_str().map(str::to_string);
        Ok(SubscriptionOutcome {
            state: ChangeState::Applied,
            subscription: self.subscription_of(customer)?,
            change: Some(change),
            scheduled: None,
            invoice_id,
        })
    }

    /// Cancels now: the history entry first (the credit it names, the id of
    /// the final invoice), then the engine, then the credit and the final
    /// invoice (see `recover_settlements`). `scheduled`: the scheduled
    /// change this applies.
    async fn cancel_now(
        &self,
        sub: &SubscriptionRecord,
        how: Cancellation<'_>,
    ) -> Result<PlanChangeRecord> {
        let Cancellation {
            kind,
            effective_at,
            actor,
            reason,
            settle,
            scheduled,
        } = how;
        let customer = sub.customer_id.as_str();
        let now = self.engine.now();
        let mut details = json!({ "status_before": sub.status });
        if let Some(s) = scheduled {
            details["scheduled_change"] = json!(s);
        }
        if let Some(plan) = settle {
            let (credit, invoice_id) = self.cancellation_credit(plan, sub, effective_at).await?;
            details["proration_lines"] = json!(credit);
            details["invoice_id"] = json!(invoice_id);
            if invoice_id.is_some() {
                details["settlement"] = json!(SETTLE_FINAL);
            }
        }
        let change = same_plan_entry(kind, sub, effective_at, now, actor, reason, details);
        self.write_intent(&change).await?;
        self.complete_change(&change, false).await?;
        if let (Some(SETTLE_FINAL), Some(invoice_id)) = (
            change.details["settlement"].as_str(),
            change.details["invoice_id"].as_str(),
        ) {
            let written = self
                .settle_again(&change, SETTLE_FINAL, invoice_id.to_string())
                .await?;
            if written.as_deref() != Some(invoice_id) {
                tracing::warn!(customer, change = %change.id, expected = %invoice_id,
                    written = ?written, "a final invoice was found under another id");
            }
        }
        Ok(change)
    }

    /// The credit of a subscription canceled now, at `at` (Stripe's
    /// `prorate` and `invoice_now` on an immediate cancellation): the unused
    /// part of the in-advance base already billed for the period (core
    /// `cancellation_credit`, against the whole nominal period), and the id
    /// the final invoice will take ([`Billing::final_invoice`]: the period's
    /// usage not billed yet, to `at`, and every pending item, among them
    /// this credit), `None` when there is nothing to bill. Nothing is
    /// written: the credit becomes a pending item once the history entry
    /// names it ([`Billing::proration_items`]).
    async fn cancellation_credit(
        &self,
        plan: &Plan,
        sub: &SubscriptionRecord,
        at: Timestamp,
    ) -> Result<(Vec<InvoiceLine>, Option<String>)> {
        let customer = sub.customer_id.as_str();
        let record = self
            .engine
            .customer(customer)
            .ok_or_else(|| EngineError::UnknownCustomer(customer.to_string()))?;
        let tz = jiff::tz::TimeZone::get(&record.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let cycle =
            tollgate_core::period::BillingCycle::new(plan.interval, plan.anchoring, sub.anchor, tz);
        let bad = |e: tollgate_core::period::PeriodError| BillingError::Invalid(e.to_string());
        let index = cycle.index_containing(at).map_err(bad)?;
        let nominal = cycle.nominal_period(index).map_err(bad)?;
        let credit: Vec<InvoiceLine> = cancellation_credit(plan, &nominal, at)?
            .into_iter()
            .collect();
        // A final invoice is written unless the period starts at `at` and
        // there is nothing pending.
        let period = cycle.period_index(index).map_err(bad)?;
        let owed = at > period.start
            || !credit.is_empty()
            || self
                .store
                .changes()
                .pending_items(customer)
                .await?
                .iter()
                .any(|i| i.created_at <= at);
        Ok((credit, owed.then(|| mint("inv"))))
    }

    /// Writes the lines a history entry names (`details.proration_lines`: a
    /// plan change's proration, a cancellation's credit) as pending items,
    /// created at the entry's `effective_at`, under ids derived from the
    /// entry's ([`item_id`]): written once however often this runs (an item
    /// already there is left as it is). Nothing for an entry whose
    /// `proration_behavior` is `none`. Returns the items as written first
    /// (pending).
    async fn proration_items(&self, c: &PlanChangeRecord) -> Result<Vec<PendingItemRecord>> {
        let items = self.proration_records(c)?;
        for item in &items {
            match self.store.changes().insert_pending_item(item).await {
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(items)
    }

    /// The pending items of history entry `c`'s lines, as
    /// [`Billing::proration_items`] writes them (not written here).
    fn proration_records(&self, c: &PlanChangeRecord) -> Result<Vec<PendingItemRecord>> {
        let Some(lines) = c.details["proration_lines"].as_array() else {
            return Ok(Vec::new());
        };
        if c.details["proration_behavior"] == json!(ProrationBehavior::None) {
            return Ok(Vec::new());
        }
        let Some(record) = self.engine.customer(&c.customer_id) else {
            return Err(EngineError::UnknownCustomer(c.customer_id.clone()).into());
        };
        let mut items = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let line: InvoiceLine = serde_json::from_value(line.clone()).map_err(|e| {
                StoreError::Corrupt(format!("plan change {} proration line: {e}", c.id))
            })?;
            let mut value = serde_json::to_value(&line)
                .map_err(|e| BillingError::Invalid(format!("proration line: {e}")))?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("plan_change_id".to_string(), json!(c.id));
            }
            let item = PendingItemRecord {
                id: item_id(&c.id, i),
                customer_id: c.customer_id.clone(),
                line: value,
                amount: line.amount,
                currency: record.currency.clone(),
                created_at: c.effective_at,
                invoice_id: None,
            };
            items.push(item);
        }
        Ok(items)
    }

    /// The off-cycle invoice `id` of a plan change with `invoice_now`
    /// proration (history entry `c`): its proration items (written first if
    /// missing) over `[effective_at, end of the period of the change)`,
    /// memo "Plan change {entry id}". Not written when an item is already on
    /// another invoice (an invoice run claimed it first: it is billed there).
    async fn proration_invoice(&self, c: &PlanChangeRecord, id: String) -> Result<Option<String>> {
        let items = self.proration_items(c).await?;
        if items.is_empty() {
            return Ok(None);
        }
        let pending = self.store.changes().pending_items(&c.customer_id).await?;
        if let Some(claimed) = items.iter().find(|i| !pending.iter().any(|p| p.id == i.id)) {
            tracing::warn!(customer = %c.customer_id, change = %c.id, item = %claimed.id,
                "a proration item is already on another invoice; no off-cycle invoice written");
            return Ok(None);
        }
        let period: Period = serde_json::from_value(c.details["period"].clone())
            .map_err(|e| StoreError::Corrupt(format!("plan change {} period: {e}", c.id)))?;
        let period = Period::new(c.effective_at, period.end)
            .map_err(|e| BillingError::Invalid(e.to_string()))?;
        let record = self
            .engine
            .customer(&c.customer_id)
            .ok_or_else(|| EngineError::UnknownCustomer(c.customer_id.clone()))?;
        let lines: Vec<InvoiceLine> = serde_json::from_value(c.details["proration_lines"].clone())
            .map_err(|e| {
                StoreError::Corrupt(format!("plan change {} proration lines: {e}", c.id))
            })?;
        let ids = items.into_iter().map(|i| i.id).collect();
        Ok(Some(
            self.invoice_lines_now(
                &record,
                period,
                lines,
                format!("Plan change {}", c.id),
                ids,
                id,
            )
            .await?,
        ))
    }

    /// Makes the engine's subscription what history entry `c` says (a
    /// subscription change recorded before it is made, see
    /// `recover_settlements`): `subscribe` / `trial_start` (the subscription
    /// as recorded), `trial_convert`, `cancel` / `trial_expire`,
    /// `reactivate`, `upgrade` / `downgrade` / `migrate`
    /// ([`Billing::complete_plan_change`]); then the records that follow it (a converted trial's
    /// or a cancellation's scheduled change replaced). `recovering`: only
    /// when the engine does not show it yet (the state before the change),
    /// else (the request that just wrote `c`) always. Returns the
    /// subscription written, `None` when nothing was done (other kinds too).
    async fn complete_change(
        &self,
        c: &PlanChangeRecord,
        recovering: bool,
    ) -> Result<Option<SubscriptionRecord>> {
        let customer = c.customer_id.as_str();
        let sub = self.engine.subscription(customer)?;
        let canceled = |s: &SubscriptionRecord| s.status == SubscriptionStatus::Canceled;
        let stamp = |k: &str| {
            c.details[k]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
        };
        let status: Option<SubscriptionStatus> =
            serde_json::from_value(c.details["status"].clone()).ok();
        let now = self.engine.now();
        match c.kind.as_str() {
            "subscribe" | "trial_start" => {
                // A start: there was no live subscription before. A plan set
                // over a live one: the engine still has the plan before (and
                // not the one recorded, anchor included).
                let starts = c.details["starts"].as_bool().unwrap_or(false);
                let before = |s: &SubscriptionRecord| match starts {
                    true => canceled(s),
                    false => {
                        let plan = (s.plan_key.as_str(), s.plan_version);
                        let recorded = plan == (c.to_plan.as_str(), c.to_version)
                            && Some(s.anchor) == stamp("anchor");
                        !recorded && Some(plan) == c.from_plan.as_deref().zip(c.from_version)
                    }
                };
                if recovering && sub.as_ref().is_some_and(|s| !before(s)) {
                    return Ok(None);
                }
                self.start_scheduled_changes(c).await?;
                let written = self
                    .engine
                    .subscribe(
                        customer,
                        &c.to_plan,
                        SubscribeOptions {
                            status,
                            anchor: stamp("anchor"),
                            trial_ends_at: stamp("trial_ends_at"),
                            version: Some(c.to_version),
                        },
                    )
                    .await?;
                Ok(Some(written))
            }
            "trial_convert" => {
                // Before it: still trialing, on the trial's anchor (an
                // operator's later `trialing` keeps the conversion's).
                let Some(s) = sub.filter(|s| {
                    !recovering
                        || (s.status == SubscriptionStatus::Trialing
                            && Some(s.anchor) != stamp("anchor"))
                }) else {
                    return Ok(None);
                };
                let written = self
                    .engine
                    .subscribe(
                        customer,
                        &s.plan_key,
                        SubscribeOptions {
                            status: Some(SubscriptionStatus::Active),
                            anchor: stamp("anchor"),
                            trial_ends_at: None,
                            version: Some(s.plan_version),
                        },
                    )
                    .await?;
                self.supersede_scheduled(customer, &c.id, now, true).await?;
                Ok(Some(written))
            }
            "cancel" | "trial_expire" => {
                if recovering && sub.as_ref().is_none_or(canceled) {
                    return Ok(None);
                }
                let written = self.engine.cancel(customer).await?;
                // The scheduled change this applies is applied; any other
                // is replaced.
                match self
                    .store
                    .changes()
                    .pending_scheduled_change(customer)
                    .await?
                {
                    Some(mut s) if c.details["scheduled_change"].as_str() == Some(&s.id) => {
                        s.state = APPLIED.to_string();
                        s.updated_at = now;
                        self.store.changes().put_scheduled_change(&s).await?;
                    }
                    _ => {
                        self.supersede_scheduled(customer, &c.id, now, true).await?;
                    }
                }
                Ok(Some(written))
            }
            "upgrade" | "downgrade" | "migrate" => Ok(self
                .complete_plan_change(c, recovering)
                .await?
                .map(|m| m.subscription)),
            "reactivate" => {
                if recovering && !sub.as_ref().is_some_and(canceled) {
                    return Ok(None);
                }
                let status = status.unwrap_or(SubscriptionStatus::Active);
                Ok(Some(
                    self.engine
                        .set_subscription_status(customer, status)
                        .await?,
                ))
            }
            _ => Ok(None),
        }
    }

    /// What a subscription reactivated at `now` (`after`, no longer
    /// canceled) owes for the rest of the current period, billed in advance:
    /// nothing when that part of the period is still paid for (the
    /// subscription was canceled inside this very period, from a paid
    /// status, without proration: the base billed for the period was never
    /// credited), else the base from `now` to the period's end, as a new
    /// subscription's first period (the way Stripe starts a new subscription:
    /// a canceled one cannot be resumed there). So after a prorated
    /// cancellation (the rest of the period credited) the rest of the period
    /// is billed again, and a second cancellation credits it again.
    async fn reactivation_owes(
        &self,
        after: &SubscriptionRecord,
        now: Timestamp,
    ) -> Result<Option<crate::run::BaseOwed>> {
        let Some(owed) = self.base_owed_from(after, now, false).await? else {
            return Ok(None);
        };
        let history = self
            .store
            .changes()
            .plan_changes(&after.customer_id)
            .await?;
        let last_end = history
            .iter()
            .rev()
            .find(|c| c.kind == "cancel" || c.kind == "trial_expire");
        let still_paid = last_end.is_some_and(|c| {
            let credited = c.details["proration_lines"]
                .as_array()
                .is_some_and(|l| !l.is_empty());
            let from_trial = c.details["status_before"] == json!(SubscriptionStatus::Trialing);
            c.kind == "cancel" && !credited && !from_trial && c.effective_at > owed.whole.start
        });
        Ok((!still_paid).then_some(owed))
    }

    /// Completes subscription changes that a crash cut off, and writes the
    /// invoices that history entries name but that do not exist. A
    /// subscription change (subscribe, trial start and conversion,
    /// cancellation, reactivation) is written in this order: its history
    /// entry (the intent, naming its invoice and credit, and for a start the
    /// scheduled change it replaces and a trial's expiry), a start's
    /// scheduled changes, the engine's subscription, the credit, the
    /// invoice. A plan change (upgrade,
    /// downgrade, migrate: now, scheduled or by a migration): its entry
    /// (naming the scheduled change it replaces or applies, its proration
    /// lines and behaviour, its `invoice_now` invoice and period), that
    /// scheduled change, the proration items, the engine, the invoice. So a
    /// crash leaves the entry; this makes the engine what the customer's
    /// last entry says when it still shows the state before it
    /// (`complete_change`, with what comes before the engine for a plan
    /// change), then writes each named invoice that is missing (a first
    /// period, a final invoice with its credit, a reactivation, a plan
    /// change's proration) under the id its entry names, so it is written
    /// once. The billing worker calls it on each tick before the
    /// invoice run, for the entries of the last [`RECOVERY_LOOKBACK_DAYS`]
    /// days; every subscription change calls it for its customer's whole
    /// history first. Returns the invoice ids written.
    pub async fn recover_settlements(&self) -> Result<Vec<String>> {
        let _changes = CHANGES.lock().await;
        self.recover_settlements_of(None).await
    }

    /// [`Billing::recover_settlements`] for one customer (all of its
    /// history) or for everyone; the caller holds the plan-change lock.
    async fn recover_settlements_of(&self, customer: Option<&str>) -> Result<Vec<String>> {
        let now = self.engine.now();
        let entries = match customer {
            Some(c) => self.store.changes().plan_changes(c).await?,
            None => {
                let from = now
                    .checked_sub(SignedDuration::from_hours(24 * RECOVERY_LOOKBACK_DAYS))
                    .unwrap_or(now);
                let to = now
                    .checked_add(SignedDuration::from_micros(1))
                    .unwrap_or(now);
                self.store.changes().plan_changes_between(from, to).await?
            }
        };
        // Each customer's last entry (ids sort in the order they were
        // minted): the only one whose engine change can be missing, as every
        // change first completes the one before.
        let mut last: BTreeMap<&str, &PlanChangeRecord> = BTreeMap::new();
        for c in &entries {
            let slot = last.entry(c.customer_id.as_str()).or_insert(c);
            if c.id > slot.id {
                *slot = c;
            }
        }
        for c in last.into_values() {
            match self.complete_change(c, true).await {
                Ok(Some(_)) => {
                    tracing::info!(customer = %c.customer_id, change = %c.id,
                        "completed a subscription change cut off before the engine's write");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(customer = %c.customer_id, change = %c.id, error = %e,
                        "a subscription change could not be completed; retried");
                    if customer.is_some() {
                        return Err(e);
                    }
                }
            }
        }
        let mut written = Vec::new();
        for c in &entries {
            let (Some(kind), Some(id)) = (
                c.details["settlement"].as_str(),
                c.details["invoice_id"].as_str(),
            ) else {
                continue;
            };
            if self.store.billing().get_invoice(id).await?.is_some() {
                continue;
            }
            match self.settle_again(c, kind, id.to_string()).await {
                Ok(Some(id)) => {
                    tracing::info!(customer = %c.customer_id, change = %c.id, invoice = %id,
                        "wrote the missing invoice of a plan change");
                    written.push(id);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(customer = %c.customer_id, change = %c.id, error = %e,
                        "the missing invoice of a plan change could not be written; retried");
                    if customer.is_some() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(written)
    }

    /// Writes the invoice `id` of history entry `c` (see `recover_settlements`)
    /// from what the entry recorded: its plan, its instant, and for a first
    /// period its anchor.
    async fn settle_again(
        &self,
        c: &PlanChangeRecord,
        kind: &str,
        id: String,
    ) -> Result<Option<String>> {
        let Some(mut sub) = self.engine.subscription(&c.customer_id)? else {
            return Ok(None);
        };
        sub.plan_key = c.to_plan.clone();
        sub.plan_version = c.to_version;
        match kind {
            SETTLE_FIRST_PERIOD | SETTLE_REACTIVATION => {
                sub.status = SubscriptionStatus::Active;
                sub.trial_ends_at = None;
                sub.canceled_at = None;
                let owed = if kind == SETTLE_FIRST_PERIOD {
                    if let Some(anchor) = c.details["anchor"]
                        .as_str()
                        .and_then(|a| a.parse::<Timestamp>().ok())
                    {
                        sub.anchor = anchor;
                    }
                    self.first_period_owed(&sub, true).await?
                } else {
                    self.base_owed_from(&sub, c.effective_at, true).await?
                };
                let Some(owed) = owed else { return Ok(None) };
                let memo = if kind == SETTLE_FIRST_PERIOD {
                    owed.first_period_memo()
                } else {
                    owed.reactivation_memo()
                };
                Ok(Some(self.invoice_base_owed(owed, memo, id).await?))
            }
            SETTLE_PRORATION => self.proration_invoice(c, id).await,
            SETTLE_FINAL => {
                // The credit first: the final invoice carries it.
                self.proration_items(c).await?;
                sub.status = SubscriptionStatus::Canceled;
                sub.canceled_at = Some(c.effective_at);
                Ok(self.final_invoice(&sub, c.effective_at, id).await?)
            }
            _ => Ok(None),
        }
    }

    /// Applies every scheduled change due at `now` (downgrades and
    /// cancellations at period end, trial expiries). The billing worker calls
    /// it on its clock. A change that fails stays pending and is retried.
    pub async fn apply_due_changes(&self, now: Timestamp) -> Result<DueReport> {
        let _changes = CHANGES.lock().await;
        let mut report = DueReport::default();
        for s in self.store.changes().scheduled_changes_due(now).await? {
            match self.apply_scheduled(&s).await {
                Ok(Some(change)) => report.applied.push(change),
                Ok(None) => report.dropped.push(s),
                Err(e) => {
                    tracing::warn!(scheduled = %s.id, customer = %s.customer_id, error = %e,
                        "a scheduled plan change failed; it stays pending");
                    report.failed.push((s.id.clone(), e.to_string()));
                }
            }
        }
        Ok(report)
    }

    /// Applies one due change; `None` when it no longer applies (the
    /// subscription is gone or canceled, or the trial was converted).
    async fn apply_scheduled(&self, s: &ScheduledChangeRecord) -> Result<Option<PlanChangeRecord>> {
        let customer = s.customer_id.as_str();
        // Its history entry may be written already (a crash before it was
        // marked applied): completed, never applied twice.
        self.recover_settlements_of(Some(customer)).await?;
        let now = self.engine.now();
        if let Some(change) = self
            .store
            .changes()
            .plan_changes(customer)
            .await?
            .into_iter()
            .find(|c| c.details["scheduled_change"].as_str() == Some(s.id.as_str()))
        {
            let mut done = s.clone();
            done.updated_at = now;
            done.state = APPLIED.to_string();
            self.store.changes().put_scheduled_change(&done).await?;
            return Ok(Some(change));
        }
        // Recovery may have replaced it (a change now cut off, which
        // superseded it): it is no longer pending, and not applied.
        let pending = self
            .store
            .changes()
            .pending_scheduled_change(customer)
            .await?;
        if pending.is_none_or(|p| p.id != s.id) {
            return Ok(None);
        }
        let sub = self.engine.subscription(customer)?;
        let live = sub
            .clone()
            .filter(|sub| sub.status != SubscriptionStatus::Canceled);
        let applies = match (s.action.as_str(), &live) {
            (_, None) => false,
            (ACTION_TRIAL_EXPIRE, Some(sub)) => sub.status == SubscriptionStatus::Trialing,
            (ACTION_CHANGE_PLAN | ACTION_CANCEL, Some(_)) => true,
            _ => false,
        };
        let mut done = s.clone();
        done.updated_at = now;
        let (Some(sub), true) = (live, applies) else {
            done.state = CANCELED.to_string();
            done.reason = Some("no longer applies".to_string());
            self.store.changes().put_scheduled_change(&done).await?;
            return Ok(None);
        };
        let change = match s.action.as_str() {
            ACTION_CHANGE_PLAN => {
                let id = mint("pch");
                let (Some(plan), version) = (&s.to_plan, s.to_version) else {
                    return Err(ChangeError::Invalid {
                        field: "to_plan",
                        message: format!("scheduled change {} names no plan", s.id),
                    });
                };
                self.apply_scheduled_plan(&sub, s, plan, version, id, now)
                    .await?
            }
            kind => {
                let kind = if kind == ACTION_CANCEL {
                    "cancel"
                } else {
                    "trial_expire"
                };
                let how = Cancellation {
                    kind,
                    effective_at: s.effective_at,
                    actor: &s.actor,
                    reason: s.reason.clone(),
                    settle: None,
                    scheduled: Some(&s.id),
                };
                self.cancel_now(&sub, how).await?
            }
        };
        done.state = APPLIED.to_string();
        self.store.changes().put_scheduled_change(&done).await?;
        Ok(Some(change))
    }

    async fn apply_scheduled_plan(
        &self,
        sub: &SubscriptionRecord,
        s: &ScheduledChangeRecord,
        plan: &str,
        version: Option<u32>,
        id: String,
        now: Timestamp,
    ) -> Result<PlanChangeRecord> {
        let from = self.pinned_version(&sub.plan_key, sub.plan_version).await?;
        // Scheduled for a version: it holds even if the plan was removed since.
        let to = match version {
            Some(v) => self.pinned_version(plan, v).await?,
            None => self.plan_version(plan, None).await?,
        };
        // What does not fit now is recorded as excess: the change was accepted
        // when it was scheduled. The entry first, then the engine (see
        // `recover_settlements`).
        let cur = self.current(&sub.customer_id).await?;
        let excess = preview_change(&ChangeInput {
            from: &from,
            to: &to,
            period: cur.period,
            at: now.max(cur.period.start).min(cur.period.end),
            timing: Some(ChangeTiming::Immediately),
            proration: ProrationBehavior::None,
            usage: cur.usage.clone(),
            gauges: cur.gauges.clone(),
        })
        .map(|p| p.blockers)
        .unwrap_or_default();
        let change = PlanChangeRecord {
            id,
            customer_id: sub.customer_id.clone(),
            kind: kind_of(ChangeDirection::between(&from, &to)).to_string(),
            from_plan: Some(from.key.clone()),
            from_version: Some(from.version),
            to_plan: to.key.clone(),
            to_version: to.version,
            effective_at: s.effective_at,
            requested_at: s.created_at,
            actor: s.actor.clone(),
            reason: s.reason.clone(),
            details: json!({
                "scheduled_change": s.id,
                "applied_at": now,
                "applied_by": WORKER,
                "status": sub.status,
                "forced": false,
                "excess": excess,
            }),
        };
        self.write_intent(&change).await?;
        self.complete_plan_change(&change, false).await?;
        Ok(change)
    }

    // ---- plan version migration ---------------------------------------------------------

    /// Who would gain and lose what if the subscribers of `plan` moved to
    /// another version (default: the latest), with each one's blockers.
    pub async fn preview_migration(
        &self,
        plan: &str,
        req: &MigrationRequest,
    ) -> Result<MigrationPreview> {
        let to = self.plan_version(plan, req.to_version).await?;
        if let Some(v) = req.from_version {
            self.plan_version(plan, Some(v)).await?;
        }
        let mut differences = BTreeMap::new();
        let mut customers = Vec::new();
        for sub in self.store.all_subscriptions().await? {
            let wanted = match req.from_version {
                Some(v) => sub.plan_version == v,
                None => sub.plan_version != to.version,
            };
            if sub.plan_key != plan
                || !wanted
                || sub.status == SubscriptionStatus::Canceled
                || self
                    .engine
                    .customer(&sub.customer_id)
                    .is_none_or(|c| c.deleted_at.is_some())
            {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) =
                differences.entry(sub.plan_version)
            {
                let from = self.plan_version(plan, Some(sub.plan_version)).await?;
                slot.insert(diff_plans(&from, &to));
            }
            let diff = differences
                .get(&sub.plan_version)
                .cloned()
                .unwrap_or_default();
            let cur = self.current(&sub.customer_id).await?;
            let blockers = self
                .preview_on(
                    &cur,
                    &to,
                    Some(ChangeTiming::Immediately),
                    ProrationBehavior::None,
                )?
                .preview
                .blockers;
            let lines = |effect: DiffEffect| -> Vec<String> {
                diff.iter()
                    .filter(|d| d.effect == effect)
                    .map(|d| d.summary.clone())
                    .collect()
            };
            customers.push(MigrationCustomer {
                customer_id: sub.customer_id.clone(),
                from_version: sub.plan_version,
                gains: lines(DiffEffect::Gain),
                losses: lines(DiffEffect::Loss),
                changes: lines(DiffEffect::Change),
                blockers,
            });
        }
        Ok(MigrationPreview {
            plan: plan.to_string(),
            to_version: to.version,
            differences,
            customers,
        })
    }

    /// Moves the subscribers of `plan` to another version now (no proration:
    /// what was billed for the current period stays as billed). Customers
    /// with blockers stay unless `force`.
    pub async fn migrate_plan(
        &self,
        plan: &str,
        req: &MigrationRequest,
        actor: &str,
    ) -> Result<MigrationOutcome> {
        let _changes = CHANGES.lock().await;
        // A subscriber's change cut off by a crash is completed first (its
        // entry must stay its last but one).
        for sub in self.store.all_subscriptions().await? {
            if sub.plan_key == plan {
                self.recover_settlements_of(Some(&sub.customer_id)).await?;
            }
        }
        let preview = self.preview_migration(plan, req).await?;
        let to = self.plan_version(plan, Some(preview.to_version)).await?;
        let now = self.engine.now();
        let mut migrated = Vec::new();
        let mut skipped = Vec::new();
        for c in preview.customers {
            if !c.blockers.is_empty() && !req.force {
                skipped.push(c);
                continue;
            }
            // The entry first, then the engine (see `recover_settlements`).
            let change = PlanChangeRecord {
                id: mint("pch"),
                customer_id: c.customer_id.clone(),
                kind: "migrate".to_string(),
                from_plan: Some(plan.to_string()),
                from_version: Some(c.from_version),
                to_plan: plan.to_string(),
                to_version: to.version,
                effective_at: now,
                requested_at: now,
                actor: actor.to_string(),
                reason: req.reason.clone(),
                details: json!({
                    "gains": c.gains,
                    "losses": c.losses,
                    "changes": c.changes,
                    "forced": !c.blockers.is_empty(),
                    "excess": c.blockers,
                }),
            };
            self.write_intent(&change).await?;
            self.complete_plan_change(&change, false).await?;
            migrated.push(change);
        }
        Ok(MigrationOutcome {
            plan: plan.to_string(),
            to_version: to.version,
            migrated,
            skipped,
        })
    }
}

/// "a downgrade to basic v1", "a cancellation", "the trial's expiry".
fn describe(s: &ScheduledChangeRecord) -> String {
    match (s.action.as_str(), &s.to_plan, s.to_version) {
        (ACTION_CHANGE_PLAN, Some(p), Some(v)) => format!("a change to {p} v{v}"),
        (ACTION_CANCEL, ..) => "a cancellation".to_string(),
        (ACTION_TRIAL_EXPIRE, ..) => "the trial's expiry".to_string(),
        _ => format!("a {} change", s.action),
    }
}
