//! Time-driven billing events, found by the worker's tick on the engine's
//! clock: `invoice.overdue` (an open invoice past its due date) and
//! `trial.ending` (a trial ending within [`TRIAL_ENDING_NOTICE`]). Each is
//! written with `NotifyStore::insert_events` under a dedup key, so a tick
//! repeated (or a restart) fires each once.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tollgate_core::billing::InvoiceStatus;
use tollgate_store::SubscriptionStatus;
use tollgate_store::billing::{InvoiceFilter, invoice_event};
use tollgate_store::notify::OutboxEvent;

use crate::Billing;
use crate::run::Result;

/// How long before `trial_ends_at` `trial.ending` fires: 3 days.
pub const TRIAL_ENDING_NOTICE: SignedDuration = SignedDuration::from_hours(72);

/// `trial.ending` of a customer's trial ending at `ends`.
fn trial_ending(customer: &str, plan: &str, ends: Timestamp, now: Timestamp) -> OutboxEvent {
    OutboxEvent {
        id: format!("evt_trial_ending_{customer}_{}", ends.as_second()),
        event_type: "trial.ending".to_string(),
        customer_id: Some(customer.to_string()),
        object_key: format!("customer:{customer}"),
        object_seq: 0,
        dedup_key: Some(format!("trial.ending|{customer}|{ends}")),
        payload: json!({"customer": customer, "plan": plan, "trial_ends_at": ends}),
        created_at: now,
        seq: 0,
    }
}

impl Billing {
    /// Writes the `invoice.overdue` and `trial.ending` events due at `now`
    /// (dropped by the store when already written); how many were new.
    pub async fn notify_due(&self, now: Timestamp) -> Result<usize> {
        let mut events = Vec::new();
        let open = self
            .store
            .billing()
            .list_invoices(&InvoiceFilter {
                status: Some(InvoiceStatus::Open),
                ..InvoiceFilter::default()
            })
            .await?;
        for inv in open {
            if inv.due_at.is_some_and(|due| due < now) {
                events.push(invoice_event("overdue", &inv, now));
            }
        }
        for sub in self.store.all_subscriptions().await? {
            let Some(ends) = sub.trial_ends_at else {
                continue;
            };
            if sub.status != SubscriptionStatus::Trialing {
                continue;
            }
            if ends <= now || now < ends - TRIAL_ENDING_NOTICE {
                continue;
            }
            events.push(trial_ending(&sub.customer_id, &sub.plan_key, ends, now));
        }
        Ok(self.store.notify().insert_events(&events).await?.len())
    }
}
