//! Time-driven events, found by the worker's tick on the engine's clock:
//!
//! - `invoice.overdue`: an open invoice past its due date;
//! - `trial.ending`: a trial ending within [`TRIAL_ENDING_NOTICE`];
//! - `invoice.upcoming_above`: a customer's projected upcoming invoice (the
//!   figure of `GET /v1/customers/{id}/upcoming-invoice`) above the amount of
//!   its alert settings; once per customer, period and amount;
//! - `usage.daily_summary`: per customer with usage on the UTC day that just
//!   ended, its features' usage; once per customer and day, and only when
//!   someone asked for it (an endpoint naming the type, or e-mail); days
//!   missed during downtime are written afterwards, at most
//!   [`SUMMARY_BACKFILL_DAYS`] back, but never days that ended while nobody
//!   asked.
//!
//! Each is written with `NotifyStore::insert_events` under a dedup key, so a
//! tick repeated (or a restart) fires each once. Rules: `docs/alerts.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::billing::compute::BillingError;
use tollgate_core::billing::{Invoice, InvoiceStatus};
use tollgate_core::catalog::percent_of_limit;
use tollgate_store::SubscriptionStatus;
use tollgate_store::billing::{InvoiceFilter, UsageWindow, invoice_event};
use tollgate_store::notify::OutboxEvent;

use crate::Billing;
use crate::run::{InvoiceError, Result};

/// How long before `trial_ends_at` `trial.ending` fires: 3 days.
pub const TRIAL_ENDING_NOTICE: SignedDuration = SignedDuration::from_hours(72);

/// The event type of a projected upcoming invoice above the customer's amount.
pub const UPCOMING_ABOVE: &str = "invoice.upcoming_above";

/// The event type of the daily usage summary (opt-in: delivered only to
/// endpoints and e-mail lists that name it).
pub const DAILY_SUMMARY: &str = "usage.daily_summary";

/// How many days before the latest ended day missed daily summaries are
/// still written (after downtime): 7.
pub const SUMMARY_BACKFILL_DAYS: i64 = 7;

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

/// A decimal as the events write it: a string in its shortest form.
fn dec(d: Decimal) -> Value {
    Value::String(d.normalize().to_string())
}

/// `invoice.upcoming_above` of a projection above `threshold`.
fn upcoming_above(inv: &Invoice, threshold: Decimal, now: Timestamp) -> OutboxEvent {
    let customer = &inv.customer_id;
    let amount = threshold.normalize().to_string();
    OutboxEvent {
        id: format!(
            "evt_upcoming_above_{customer}_{}_{amount}",
            inv.period_start.as_second()
        ),
        event_type: UPCOMING_ABOVE.to_string(),
        customer_id: Some(customer.clone()),
        object_key: format!("customer:{customer}"),
        object_seq: 0,
        dedup_key: Some(format!(
            "{UPCOMING_ABOVE}|{customer}|{}|{amount}",
            inv.period_start
        )),
        payload: json!({
            "customer": customer,
            "period": {"start": inv.period_start, "end": inv.period_end},
            "currency": inv.currency.code(),
            "threshold": amount,
            "upcoming_total": dec(inv.totals.total),
        }),
        created_at: now,
        seq: 0,
    }
}

fn invalid(e: impl std::fmt::Display) -> InvoiceError {
    InvoiceError::Billing(BillingError::Invalid(e.to_string()))
}

/// The instant a UTC day starts.
fn day_start(day: Date) -> Result<Timestamp> {
    Ok(day.to_zoned(TimeZone::UTC).map_err(invalid)?.timestamp())
}

impl Billing {
    /// Writes the time-driven events due at `now` (dropped by the store when
    /// already written); how many were new.
    pub async fn notify_due(&self, now: Timestamp) -> Result<usize> {
        let mut events = self.overdue_and_trials(now).await?;
        events.extend(self.upcoming_above(now).await?);
        let mut written = self.store.notify().insert_events(&events).await?.len();
        for day in self.summary_days(now).await? {
            let summaries = self.daily_summaries(day, now).await?;
            written += self.store.notify().insert_events(&summaries).await?.len();
            // After the day's events: a crash in between redoes the day (and
            // the days after it), and the dedup keys drop what was written.
            self.store
                .notify()
                .set_notice_mark(DAILY_SUMMARY, &day.to_string())
                .await?;
        }
        Ok(written)
    }

    /// `invoice.overdue` and `trial.ending`.
    async fn overdue_and_trials(&self, now: Timestamp) -> Result<Vec<OutboxEvent>> {
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
        Ok(events)
    }

    /// `invoice.upcoming_above` for the customers with an amount set whose
    /// projected upcoming invoice (the same computation as
    /// [`Billing::upcoming_invoice`]) is above it. Customers without a
    /// subscription (or deleted) are skipped; one that cannot be projected is
    /// logged and retried next tick without holding up the others.
    async fn upcoming_above(&self, now: Timestamp) -> Result<Vec<OutboxEvent>> {
        let settings = self.store.notify().upcoming_invoice_thresholds().await?;
        if settings.is_empty() {
            return Ok(Vec::new());
        }
        let plans = self.all_plans().await?;
        let mut events = Vec::new();
        for s in settings {
            let Some(threshold) = s.upcoming_invoice_above else {
                continue;
            };
            if !self.live(&s.customer_id) {
                continue;
            }
            match self.upcoming_invoice_at(&s.customer_id, now, &plans).await {
                Ok(inv) if inv.totals.total > threshold => {
                    events.push(upcoming_above(&inv, threshold, now));
                }
                Ok(_) | Err(InvoiceError::NotFound { .. }) => {}
                Err(e) => tracing::warn!(customer = %s.customer_id, error = %e,
                    "the upcoming invoice could not be projected; retried next tick"),
            }
        }
        Ok(events)
    }

    /// A known customer that is not deleted.
    fn live(&self, customer: &str) -> bool {
        self.engine
            .customer(customer)
            .is_some_and(|c| c.deleted_at.is_none())
    }

    /// Whether anyone receives daily summaries: an enabled endpoint that
    /// names `usage.daily_summary`, or e-mail ([`Billing::daily_summary_by_email`]).
    async fn daily_summary_wanted(&self) -> Result<bool> {
        if self.daily_summary_by_email {
            return Ok(true);
        }
        let endpoints = self.store.notify().endpoints().await?;
        Ok(endpoints.iter().any(|e| e.receives(DAILY_SUMMARY)))
    }

    /// The UTC days whose summaries are due at `now`, oldest first: the days
    /// after the `usage.daily_summary` mark up to the latest ended one (the
    /// day before `now`'s), at most [`SUMMARY_BACKFILL_DAYS`] before it (older
    /// missed days are skipped); only the latest ended day without a mark (a
    /// first start); none when nobody receives them, and then the mark moves
    /// to the latest ended day: a day is summarised by the first tick after
    /// it ends, for whoever receives summaries then, so whoever asks later
    /// never gets the days that ended while nobody did.
    async fn summary_days(&self, now: Timestamp) -> Result<Vec<Date>> {
        let latest = now
            .to_zoned(TimeZone::UTC)
            .date()
            .yesterday()
            .map_err(invalid)?;
        let mark = self
            .store
            .notify()
            .notice_mark(DAILY_SUMMARY)
            .await?
            .and_then(|m| m.parse::<Date>().ok());
        if mark.is_some_and(|done| done >= latest) {
            return Ok(Vec::new());
        }
        if !self.daily_summary_wanted().await? {
            // Nobody receives the days ended so far: they are done.
            if mark.is_none_or(|done| done < latest) {
                self.store
                    .notify()
                    .set_notice_mark(DAILY_SUMMARY, &latest.to_string())
                    .await?;
            }
            return Ok(Vec::new());
        }
        let oldest = latest
            .checked_sub(Span::new().days(SUMMARY_BACKFILL_DAYS))
            .map_err(invalid)?;
        let first = match mark {
            None => latest,
            Some(done) => {
                let next = done.tomorrow().map_err(invalid)?;
                if next < oldest {
                    tracing::warn!(first_missed = %next, first_written = %oldest,
                        "daily summaries missed too long ago are skipped");
                    oldest
                } else {
                    next
                }
            }
        };
        let mut days = vec![first];
        while let Some(&last) = days.last()
            && last < latest
        {
            days.push(last.tomorrow().map_err(invalid)?);
        }
        Ok(days)
    }

    /// The daily summaries of the UTC `day` (ended before `now`). One summary
    /// per subscribed, live customer with usage recorded for that day (event
    /// time); figures of the current windows as of `now` (the engine's), so a
    /// day before the latest ended one is marked `backfilled`.
    async fn daily_summaries(&self, day: Date, now: Timestamp) -> Result<Vec<OutboxEvent>> {
        let next = day.tomorrow().map_err(invalid)?;
        let backfilled = next < now.to_zoned(TimeZone::UTC).date();
        let (from, to) = (day_start(day)?, day_start(next)?);
        let no_groups = Arc::new(HashMap::new());
        let windows: Vec<UsageWindow> = self
            .store
            .all_subscriptions()
            .await?
            .into_iter()
            .filter(|s| self.live(&s.customer_id))
            .map(|s| UsageWindow {
                customer_id: s.customer_id,
                from,
                to,
                group_by: no_groups.clone(),
            })
            .collect();
        let totals = self.store.billing().usage_totals(&windows).await?;
        let mut events = Vec::new();
        for (w, totals) in windows.iter().zip(totals) {
            if totals.iter().all(|t| t.records == 0) {
                continue;
            }
            let mut on_day: BTreeMap<&str, Decimal> = BTreeMap::new();
            for t in &totals {
                let sum: Decimal = t.buckets.values().sum();
                *on_day.entry(t.feature.as_str()).or_default() += sum;
            }
            match self.daily_summary(&w.customer_id, day, &on_day, backfilled, now) {
                Ok(e) => events.push(e),
                Err(e) => tracing::warn!(customer = %w.customer_id, error = %e,
                    "no daily summary for this customer"),
            }
        }
        Ok(events)
    }

    /// One customer's `usage.daily_summary` of `day`: per metered and gauge
    /// feature it may use or has used, the current window's used, limit and
    /// percent, and (metered) the usage recorded on the day.
    fn daily_summary(
        &self,
        customer: &str,
        day: Date,
        on_day: &BTreeMap<&str, Decimal>,
        backfilled: bool,
        now: Timestamp,
    ) -> Result<OutboxEvent> {
        let summary = self.engine.entitlements(customer)?;
        let mut features = Vec::new();
        for f in &summary.features {
            let metered = match f.kind.as_str() {
                "metered" => true,
                "gauge" => false,
                _ => continue,
            };
            let used = f.used.unwrap_or_default();
            let day_usage = on_day.get(f.feature.as_str()).copied();
            if !f.access && used.is_zero() && day_usage.is_none() {
                continue;
            }
            features.push(json!({
                "feature": f.feature,
                "kind": f.kind,
                "used": dec(used),
                "limit": f.limit.map(dec),
                "percent": f.limit.and_then(|l| percent_of_limit(used, l)).map(dec),
                "used_on_day": if metered { dec(day_usage.unwrap_or_default()) } else { Value::Null },
                "resets_at": f.resets_at,
            }));
        }
        let period = match (summary.period_start, summary.period_end) {
            (Some(start), Some(end)) => json!({"start": start, "end": end}),
            _ => Value::Null,
        };
        Ok(OutboxEvent {
            id: format!("evt_daily_summary_{customer}_{day}"),
            event_type: DAILY_SUMMARY.to_string(),
            customer_id: Some(customer.to_string()),
            object_key: format!("customer:{customer}"),
            object_seq: 0,
            dedup_key: Some(format!("{DAILY_SUMMARY}|{customer}|{day}")),
            payload: json!({
                "customer": customer,
                "day": day.to_string(),
                "plan": summary.plan_key,
                "period": period,
                "as_of": now,
                "backfilled": backfilled,
                "features": features,
            }),
            created_at: now,
            seq: 0,
        })
    }
}
