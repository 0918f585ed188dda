//! Requests and answers of the engine's public API.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a request was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// A hard limit would be exceeded (metered, gauge).
    LimitReached,
    /// The customer's plan does not include the feature (or the flag is off).
    FeatureNotInPlan,
    /// The customer has no subscription.
    NoSubscription,
    /// The subscription is canceled (or not started yet).
    SubscriptionInactive,
    /// The subscription is trialing and its trial has ended.
    TrialExpired,
    /// Too many hits in the rate window.
    RateLimited,
    /// As many leases are held as the plan allows.
    ConcurrencyLimitReached,
    /// The value is above the per-request maximum.
    AboveCap,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::LimitReached => "limit_reached",
            DenyReason::FeatureNotInPlan => "feature_not_in_plan",
            DenyReason::NoSubscription => "no_subscription",
            DenyReason::SubscriptionInactive => "subscription_inactive",
            DenyReason::TrialExpired => "trial_expired",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::ConcurrencyLimitReached => "concurrency_limit_reached",
            DenyReason::AboveCap => "above_cap",
        }
    }
}

/// The answer to check, consume, commit, a gauge change or a rate hit.
///
/// - `limit`: the plan's (or override's) limit for the window (`None` =
///   unlimited);
/// - `used`: what is counted in the current window (plan allowance, grants,
///   overage and bypassed usage together), after this request if it was allowed
///   and not a dry run; for gauges the level; for rates the hits in the window;
/// - `remaining`: what can still be taken now: the plan's remaining allowance
///   plus active grants, minus open reservations (`None` = unlimited);
/// - `resets_at`: the end of the current window (rates: when the oldest hit
///   leaves the window).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub quantity: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Decimal>,
    pub used: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    /// The cheapest plan that would allow the request (on denials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_to: Option<Arc<str>>,
    /// Part of this request's quantity beyond the allowance (soft limits, or a
    /// commit with `allow_overage`): allowed, flagged and recorded as overage.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub overage: Decimal,
    /// Usage is above the limit after this request (soft limit exceeded, or an
    /// ingested event pushed it over a hard limit).
    #[serde(default, skip_serializing_if = "is_false")]
    pub over_limit: bool,
    /// The customer's admin bypass allowed what the plan would not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bypassed: bool,
    /// This is the stored first answer to an idempotent retry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replayed: bool,
    /// Set on the answers of reserve and commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_expires_at: Option<Timestamp>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Decision {
    pub(crate) fn denied(reason: DenyReason, quantity: Decimal) -> Decision {
        Decision {
            allowed: false,
            quantity,
            limit: None,
            used: Decimal::ZERO,
            remaining: None,
            resets_at: None,
            reason: Some(reason),
            upgrade_to: None,
            overage: Decimal::ZERO,
            over_limit: false,
            bypassed: false,
            replayed: false,
            reservation_id: None,
            reservation_expires_at: None,
        }
    }
}

/// A consume, check or reserve request on a metered feature (also used for
/// rate hits and gauge changes).
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRequest {
    pub customer: String,
    pub feature: String,
    pub quantity: Decimal,
    /// Unique per customer; a retry with the same key returns the first answer.
    pub idempotency_key: Option<String>,
    pub properties: BTreeMap<String, serde_json::Value>,
    /// `false`: counts against limits but is not invoiced (e.g. a retried failure).
    pub billable: bool,
}

impl UsageRequest {
    pub fn new(
        customer: impl Into<String>,
        feature: impl Into<String>,
        quantity: Decimal,
    ) -> UsageRequest {
        UsageRequest {
            customer: customer.into(),
            feature: feature.into(),
            quantity,
            idempotency_key: None,
            properties: BTreeMap::new(),
            billable: true,
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> UsageRequest {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn property(mut self, name: impl Into<String>, value: serde_json::Value) -> UsageRequest {
        self.properties.insert(name.into(), value);
        self
    }

    pub fn free(mut self) -> UsageRequest {
        self.billable = false;
        self
    }
}

/// Committing a reservation.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitRequest {
    pub reservation_id: String,
    /// The actual quantity used (may be less or more than reserved, or zero).
    pub quantity: Decimal,
    /// On a hard limit, record the part beyond the allowance as overage instead
    /// of denying the commit.
    pub allow_overage: bool,
    pub properties: BTreeMap<String, serde_json::Value>,
    pub billable: bool,
}

impl CommitRequest {
    pub fn new(reservation_id: impl Into<String>, quantity: Decimal) -> CommitRequest {
        CommitRequest {
            reservation_id: reservation_id.into(),
            quantity,
            allow_overage: false,
            properties: BTreeMap::new(),
            billable: true,
        }
    }

    pub fn allow_overage(mut self) -> CommitRequest {
        self.allow_overage = true;
        self
    }
}

/// An event of usage that happened elsewhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestEvent {
    pub customer: String,
    pub feature: String,
    pub quantity: Decimal,
    /// When it happened; may be backdated within the backdate window.
    pub timestamp: Timestamp,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
    #[serde(default = "yes")]
    pub billable: bool,
}

fn yes() -> bool {
    true
}

/// The outcome of one ingested event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum IngestResult {
    Accepted {
        /// Whether the event counted against the current window (its timestamp
        /// falls in it); otherwise it is only in the ledger.
        counted: bool,
        /// Usage is above the (hard or soft) limit after this event.
        over_limit: bool,
    },
    /// The idempotency key was already seen (in this batch or the window).
    Duplicate,
    Rejected {
        reason: String,
    },
}

/// A concurrency lease answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseDecision {
    pub allowed: bool,
    pub lease_id: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub limit: Option<u32>,
    /// Leases held, including this one if granted.
    pub active: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_to: Option<Arc<str>>,
    #[serde(default)]
    pub bypassed: bool,
    /// When the earliest held lease expires (on denials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
}

/// A per-request cap answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapDecision {
    pub allowed: bool,
    /// The maximum (`None` = no maximum).
    pub max: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_to: Option<Arc<str>>,
    #[serde(default)]
    pub bypassed: bool,
}

/// A new grant.
#[derive(Clone, Debug, PartialEq)]
pub struct NewGrant {
    pub customer: String,
    pub feature: String,
    /// `top_up`, `promotional` or `emergency`.
    pub kind: String,
    pub quantity: Decimal,
    pub priority: i32,
    /// Defaults to now.
    pub effective_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub metadata: serde_json::Value,
}

/// A new customer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NewCustomer {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// ISO-4217 code; default `USD`.
    pub currency: Option<String>,
    /// IANA zone; default `UTC`.
    pub time_zone: Option<String>,
    pub metadata: serde_json::Value,
}

impl NewCustomer {
    pub fn new(id: impl Into<String>) -> NewCustomer {
        NewCustomer {
            id: id.into(),
            ..NewCustomer::default()
        }
    }
}

/// Changes to a customer (fields left `None` stay).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CustomerUpdate {
    pub name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub currency: Option<String>,
    pub time_zone: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub admin_bypass: Option<bool>,
}

/// One feature of the entitlements summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSummary {
    pub feature: String,
    pub kind: String,
    /// Whether the customer may use the feature at all now.
    pub access: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<Timestamp>,
    /// Hard (`true`) or soft limit, for metered and gauge features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_leases: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants_remaining: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Decimal>,
    /// Whether the value comes from a per-customer override.
    pub overridden: bool,
}

/// The entitlements summary of a customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntitlementsSummary {
    pub customer: String,
    pub plan_key: Option<String>,
    pub plan_version: Option<u32>,
    pub status: Option<String>,
    /// The subscription's current billing period `[start, end)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<Timestamp>,
    pub admin_bypass: bool,
    /// Why nothing is accessible, if so (no subscription, canceled, trial over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<DenyReason>,
    pub features: Vec<FeatureSummary>,
}

/// A consistency check of one counter: memory against the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub customer: String,
    pub feature: String,
    pub window_start: Option<Timestamp>,
    pub window_end: Option<Timestamp>,
    /// Memory's buckets (`plan`, `overage`, `bypass`, `grants` (all grant draws)
    /// for metered features; `level` for gauges).
    pub memory: BTreeMap<String, Decimal>,
    /// The same buckets recomputed from the ledger.
    pub ledger: BTreeMap<String, Decimal>,
    pub consistent: bool,
}
