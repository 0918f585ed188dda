//! Time-driven billing events, found by the worker's tick on the engine's
//! clock: `invoice.overdue` (an open invoice past its due date) and
//! `trial.ending` (a trial ending within [`TRIAL_ENDING_NOTICE`]). Each is
//! written with `NotifyStore::insert_events` under a dedup key, so a tick
//! repeated (or a restart) fires each once.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tollgate_core::billing::InvoiceStatus;
use tollgate_store::SubscriptionStatus;
use tollgate_store::billing::InvoiceFilter;
use tollgate_store::notify::OutboxEvent;

use crate::Billing;
use crate::run::Result;

/// How long before `trial_ends_at` `trial.ending` fires: 3 days.
pub const TRIAL_ENDING_NOTICE: SignedDuration = SignedDuration::from_hours(72);

fn event(
    event_type: &str,
    key: &str,
    customer: &str,
    object_key: String,
    payload: serde_json::Value,
    now: Timestamp,
) -> OutboxEvent {
    OutboxEvent {
        id: format!("evt_{}_{key}", event_type.replace('.', "_")),
        event_type: event_type.to_string(),
        customer_id: Some(customer.to_string()),
        object_key,
        object_seq: 0,
        dedup_key: Some(format!("{event_type}|{key}")),
        payload,
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
            let Some(due) = inv.due_at.filter(|d| *d < now) else {
                continue;
            };
            events.push(event(
                "invoice.overdue",
                &inv.id,
                &inv.customer_id,
                format!("invoice:{}", inv.id),
                json!({
                    "invoice": inv.id,
                    "number": inv.number,
                    "customer": inv.customer_id,
                    "currency": inv.currency.code(),
                    "total": inv.totals.total.normalize().to_string(),
                    "amount_due": inv.totals.amount_due.normalize().to_string(),
                    "period": {"start": inv.period_start, "end": inv.period_end},
                    "due_at": due,
                }),
                now,
            ));
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
            events.push(event(
                "trial.ending",
                &format!("{}|{ends}", sub.customer_id),
                &sub.customer_id,
                format!("customer:{}", sub.customer_id),
                json!({
                    "customer": sub.customer_id,
                    "plan": sub.plan_key,
                    "trial_ends_at": ends,
                }),
                now,
            ));
        }
        Ok(self.store.notify().insert_events(&events).await?.len())
    }
}
