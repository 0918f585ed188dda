//! Plan-change history, scheduled changes and pending invoice items.
//!
//! CONTRACT shared by the plan-change service (which writes) and the invoice run
//! (which reads history to split a period into plan segments, and claims
//! pending items onto the next invoice). Implemented for SQLite and
//! PostgreSQL in `sqlite.rs` / `postgres.rs` beside this file; reached from a
//! `dyn Store` with [`crate::Store::changes`].

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Result;

mod postgres;
pub(crate) mod rows;
mod sqlite;

/// One entry of a customer's plan-change history (immutable once written).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanChangeRecord {
    /// `pch_…`
    pub id: String,
    pub customer_id: String,
    /// `subscribe`, `upgrade`, `downgrade`, `migrate`, `trial_start`,
    /// `trial_convert`, `trial_expire`, `cancel`, `reactivate`.
    pub kind: String,
    /// None for a first subscription.
    pub from_plan: Option<String>,
    pub from_version: Option<u32>,
    pub to_plan: String,
    pub to_version: u32,
    /// When the new plan took effect (plan segments split here).
    pub effective_at: Timestamp,
    /// When the change was requested.
    pub requested_at: Timestamp,
    /// Who: an API key id, `cli`, `worker`.
    pub actor: String,
    pub reason: Option<String>,
    /// The preview at the time (proration lines, blockers overridden…), as JSON.
    pub details: serde_json::Value,
}

/// A change that takes effect later (downgrade at period end, cancellation at
/// period end, trial expiry). At most one `pending` per customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledChangeRecord {
    /// `sch_…`
    pub id: String,
    pub customer_id: String,
    /// `change_plan` or `cancel`.
    pub action: String,
    pub to_plan: Option<String>,
    pub to_version: Option<u32>,
    pub effective_at: Timestamp,
    /// `pending`, `applied`, `canceled`.
    pub state: String,
    pub actor: String,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An amount waiting for the customer's next invoice (a proration line with
/// `proration_behavior = next_invoice`), or attached to an invoice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingItemRecord {
    /// `pii_…`
    pub id: String,
    pub customer_id: String,
    /// The invoice line (core `InvoiceLine`) as JSON.
    pub line: serde_json::Value,
    pub amount: Decimal,
    pub currency: String,
    pub created_at: Timestamp,
    /// The invoice it went on; None while pending.
    pub invoice_id: Option<String>,
}

/// The outbox event `subscription.changed` of a plan change, written in the
/// transaction that appends it to the history (object `customer:<id>`,
/// dedup key `subscription.changed|<change id>`).
pub(crate) fn change_event(c: &PlanChangeRecord) -> crate::notify::OutboxEvent {
    crate::notify::OutboxEvent {
        id: format!("evt_{}", c.id),
        event_type: "subscription.changed".to_string(),
        customer_id: Some(c.customer_id.clone()),
        object_key: format!("customer:{}", c.customer_id),
        object_seq: 0,
        dedup_key: Some(format!("subscription.changed|{}", c.id)),
        payload: serde_json::json!({
            "change": c.id,
            "customer": c.customer_id,
            "kind": c.kind,
            "from": c.from_plan.as_ref().map(|p| serde_json::json!({"plan": p, "version": c.from_version})),
            "to": {"plan": c.to_plan, "version": c.to_version},
            "effective_at": c.effective_at,
            "requested_at": c.requested_at,
            "actor": c.actor,
            "reason": c.reason,
        }),
        created_at: c.requested_at,
        seq: 0,
    }
}

#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// Appends to the history; `Conflict` on a duplicate id, `NotFound` if the
    /// customer does not exist.
    async fn insert_plan_change(&self, change: &PlanChangeRecord) -> Result<()>;
    /// A customer's history by `effective_at`, then id.
    async fn plan_changes(&self, customer_id: &str) -> Result<Vec<PlanChangeRecord>>;
    /// Every customer's changes effective in `[from, to)`, by customer then time
    /// (for invoice runs).
    async fn plan_changes_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<PlanChangeRecord>>;

    /// Creates or replaces (by id). Creating a `pending` one while another
    /// `pending` exists for the customer is a `Conflict`.
    async fn put_scheduled_change(&self, change: &ScheduledChangeRecord) -> Result<()>;
    /// The customer's `pending` scheduled change.
    async fn pending_scheduled_change(
        &self,
        customer_id: &str,
    ) -> Result<Option<ScheduledChangeRecord>>;
    /// A scheduled change by id, whatever its state.
    async fn scheduled_change(&self, id: &str) -> Result<Option<ScheduledChangeRecord>>;
    /// Every `pending` change with `effective_at <= at`, by effective_at.
    async fn scheduled_changes_due(&self, at: Timestamp) -> Result<Vec<ScheduledChangeRecord>>;

    /// `Conflict` on a duplicate id.
    async fn insert_pending_item(&self, item: &PendingItemRecord) -> Result<()>;
    /// Items not yet on an invoice, by created_at then id.
    async fn pending_items(&self, customer_id: &str) -> Result<Vec<PendingItemRecord>>;
    /// Attaches these pending items to an invoice, atomically; items already
    /// attached to *another* invoice are a `Conflict` (and nothing changes);
    /// re-attaching to the same invoice is a no-op.
    async fn attach_pending_items(&self, ids: &[String], invoice_id: &str) -> Result<()>;
}
