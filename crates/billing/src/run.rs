//! The invoice run: closing ended billing periods into invoices, idempotently
//! and crash-safely; the upcoming invoice; and the invoice operations the API
//! uses (issue, pay, void, mark uncollectible, credit, edit a draft).
//!
//! Rules (documented with numbers in `docs/billing.md`):
//! - a period closes when its end is at or before the engine clock's `now`;
//! - one cycle invoice per customer and period, enforced by the store's unique
//!   index, so a rerun (after a crash, or twice at once) finds the first draft
//!   and finishes it (pending items attached, issued) instead of writing a
//!   second one;
//! - numbers are taken when an invoice is issued, in the same transaction, so
//!   a crash leaves no gap;
//! - work is done in chunks ([`RunOptions::chunk`]): one pass over the ledger
//!   for the whole run, then per chunk one transaction writing the invoices
//!   already issued (or as drafts without `auto_issue`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::billing::compute::{
    BillingError, Discount, EarlierParts, InvoiceInput, Segment, UsageTotal, compute_invoice,
    earlier_parts_billed, first_period_base, project_upcoming,
};
use tollgate_core::billing::credit::{CreditNote, CreditRequest, credit_note};
use tollgate_core::billing::discount::CustomerDiscount;
use tollgate_core::billing::{Invoice, InvoiceLine, InvoiceStatus, Party, TaxRule};
use tollgate_core::catalog::{BaseBilling, Plan};
use tollgate_core::money::Currency;
use tollgate_core::period::{BillingCycle, Period};
use tollgate_core::pricing::ChargePrice;
use tollgate_engine::EngineError;
use tollgate_store::billing::{
    InvoiceFilter, InvoiceKey, InvoiceKind, NewInvoice, PaymentOutcome, PaymentRecord,
    StoredInvoice, UsageWindow,
};
use tollgate_store::changes::{PendingItemRecord, PlanChangeRecord};
use tollgate_store::{CustomerRecord, StoreError, SubscriptionRecord, SubscriptionStatus};

use crate::Billing;
use crate::changes::mint;

/// Why an invoice operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvoiceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("billing: {0}")]
    Billing(#[from] BillingError),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    /// Only drafts can be edited.
    #[error(
        "invoice {id} is {status}: only drafts can be edited (correct an issued invoice with a credit note)"
    )]
    NotDraft { id: String, status: &'static str },
    /// A field of the request is wrong (named).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

pub type Result<T, E = InvoiceError> = std::result::Result<T, E>;

/// What a run closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Close only the periods that end in this month (the CLI's
    /// `--period 2026-11`, see [`parse_month`]): periods whose end, on the
    /// customer's wall clock, is after the 1st at 00:00 and at or before the
    /// next month's 1st at 00:00 (so `[Nov 1, Dec 1)` is November's).
    /// `None`: every ended period without an invoice, looking back at most
    /// [`crate::BillingConfig::catch_up_periods`].
    pub month: Option<jiff::civil::Date>,
    /// Invoices per transaction (default 1,000).
    pub chunk: usize,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            month: None,
            chunk: 1_000,
        }
    }
}

/// Progress of a run, for a progress bar: `done` of `total` periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunProgress {
    pub done: usize,
    pub total: usize,
}

/// A period that could not be closed (the others still are).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailure {
    pub customer_id: String,
    pub period_start: Timestamp,
    pub error: String,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// The clock's `now` the run closed periods against.
    pub now: Option<Timestamp>,
    /// Subscriptions looked at.
    pub subscriptions: usize,
    /// Periods due (ended, in the requested range).
    pub periods: usize,
    /// Drafts written by this run.
    pub created: usize,
    /// Drafts of an earlier (interrupted) run finished by this one.
    pub resumed: usize,
    /// Periods that already had an issued invoice.
    pub already_invoiced: usize,
    /// Invoices issued by this run.
    pub issued: usize,
    pub failed: Vec<RunFailure>,
    /// Where the run's time went (wall-clock milliseconds, for benchmarks
    /// and logs; no rule reads them).
    pub timings: RunTimings,
}

/// Milliseconds per phase of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimings {
    /// Customers, subscriptions, plans, existing invoices, finishing drafts.
    pub load_ms: u64,
    /// Plan history and pending items per period.
    pub prepare_ms: u64,
    /// The one pass over the ledger.
    pub ledger_ms: u64,
    /// `compute_invoice` for every period.
    pub compute_ms: u64,
    /// Writing drafts, attaching pending items, issuing.
    pub write_ms: u64,
}

/// Microseconds (summed per period, then turned into milliseconds).
fn ms_micros(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn ms(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One period to close.
#[derive(Debug)]
struct Due {
    customer: Arc<CustomerRecord>,
    sub: Arc<SubscriptionRecord>,
    cycle: Arc<BillingCycle>,
    index: u32,
    period: Period,
    /// The period up to this instant is already billed by the final
    /// invoice(s) of a cancellation since undone: only the rest is billed
    /// (`InvoiceInput::settled_until`).
    settled: Option<Timestamp>,
}

/// A period's plans: `[from, to)` spans with the plan in force.
#[derive(Debug)]
struct Span {
    plan: Arc<Plan>,
    from: Timestamp,
    to: Timestamp,
    /// Canceled (and settled) during the span, until a reactivation.
    canceled: bool,
}

/// Feature → the properties its dimensional charge groups by.
type GroupBy = HashMap<String, Vec<String>>;

/// Published plan versions by (key, version).
pub(crate) type Plans = HashMap<(String, u32), Arc<Plan>>;

/// A period ready to compute: its spans, in-advance plan, pending items.
#[derive(Debug)]
struct Prepared {
    due: Due,
    spans: Vec<Span>,
    advance: Option<(Arc<Plan>, Period)>,
    pending: Vec<PendingItemRecord>,
    /// The customer's discounts that cover this period.
    discounts: Vec<Discount>,
    /// The period's earlier parts (`due.settled`), invoices neither void
    /// nor fully credited: their spans, usage and minimum lines, and what
    /// credit notes naming those minimum lines gave back.
    earlier: EarlierParts,
}

/// Customer id → its discounts.
type Discounts = HashMap<String, Vec<CustomerDiscount>>;

fn discounts_by_customer(all: Vec<CustomerDiscount>) -> Discounts {
    let mut by: Discounts = HashMap::new();
    for d in all {
        by.entry(d.customer_id.clone()).or_default().push(d);
    }
    by
}

/// The plan in force at `t` for a customer whose history from the run's
/// earliest period on is `changes` (by `effective_at`), `current` otherwise.
fn plan_at<'c>(
    changes: &'c [PlanChangeRecord],
    current: (&'c str, u32),
    t: Timestamp,
) -> (&'c str, u32) {
    if let Some(c) = changes.iter().rev().find(|c| c.effective_at <= t) {
        return (c.to_plan.as_str(), c.to_version);
    }
    match changes.first() {
        Some(c) => match (&c.from_plan, c.from_version) {
            (Some(p), Some(v)) => (p.as_str(), v),
            _ => (c.to_plan.as_str(), c.to_version),
        },
        None => current,
    }
}

/// The spans of `period`: split at every plan change strictly inside it.
fn spans_of(
    plans: &Plans,
    changes: &[PlanChangeRecord],
    sub: &SubscriptionRecord,
    period: Period,
) -> Result<Vec<Span>> {
    let current = (sub.plan_key.as_str(), sub.plan_version);
    let mut cuts = vec![period.start];
    cuts.extend(
        changes
            .iter()
            .map(|c| c.effective_at)
            .filter(|t| *t > period.start && *t < period.end),
    );
    cuts.push(period.end);
    cuts.dedup();
    let mut spans = Vec::with_capacity(cuts.len() - 1);
    for w in cuts.windows(2) {
        let (key, version) = plan_at(changes, current, w[0]);
        // Between a cancellation now that was settled (its final invoice
        // closed the period so far) and a reactivation, nothing is served.
        let canceled = changes
            .iter()
            .rev()
            .find(|c| c.effective_at <= w[0])
            .is_some_and(|c| c.kind == "cancel" && c.details["invoice_id"].is_string());
        spans.push(Span {
            plan: plan_of(plans, key, version)?,
            from: w[0],
            to: w[1],
            canceled,
        });
    }
    Ok(spans)
}

/// A base owed in advance now (see [`Billing::base_owed_from`]).
#[derive(Debug)]
pub(crate) struct BaseOwed {
    pub customer: CustomerRecord,
    /// The whole period containing `from`.
    pub whole: Period,
    /// `[from, period end)`.
    pub period: Period,
    pub line: InvoiceLine,
    pub plan_name: String,
}

impl BaseOwed {
    pub fn first_period_memo(&self) -> String {
        format!(
            "First period of the {} subscription, billed in advance",
            self.plan_name
        )
    }

    pub fn reactivation_memo(&self) -> String {
        format!(
            "The {} subscription reactivated: the rest of the period, billed in advance",
            self.plan_name
        )
    }
}

/// Splits the span containing `at` strictly inside it in two (same plan),
/// so that `at` is a span boundary.
fn split_spans_at(spans: &mut Vec<Span>, at: Timestamp) {
    if let Some(i) = spans.iter().position(|s| s.from < at && at < s.to) {
        let tail = Span {
            plan: spans[i].plan.clone(),
            from: at,
            to: spans[i].to,
            canceled: spans[i].canceled,
        };
        spans[i].to = at;
        spans.insert(i + 1, tail);
    }
}

/// Joins adjacent spans of the same plan version (both canceled or both
/// not), except at `keep`.
fn merge_same_plan(spans: &mut Vec<Span>, keep: Timestamp) {
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans.drain(..) {
        match merged.last_mut() {
            Some(last)
                if last.to != keep
                    && last.canceled == s.canceled
                    && last.plan.key == s.plan.key
                    && last.plan.version == s.plan.version =>
            {
                last.to = s.to;
            }
            _ => merged.push(s),
        }
    }
    *spans = merged;
}

fn plan_of(plans: &Plans, key: &str, version: u32) -> Result<Arc<Plan>> {
    plans
        .get(&(key.to_string(), version))
        .cloned()
        .ok_or_else(|| InvoiceError::NotFound {
            what: "plan version",
            id: format!("{key}@{version}"),
        })
}

/// Feature → the properties its charge groups by, for every dimensional
/// charge of a plan.
fn group_by(plan: &Plan) -> GroupBy {
    plan.charges
        .iter()
        .filter_map(|c| match &c.price {
            ChargePrice::Dimensional(d) => Some((c.metric.clone(), d.group_by.clone())),
            ChargePrice::Single(_) => None,
        })
        .collect()
}

/// The periods of a subscription the run closes, oldest first.
fn due_periods(
    cycle: &BillingCycle,
    sub: &SubscriptionRecord,
    now: Timestamp,
    month: Option<jiff::civil::Date>,
    catch_up: u32,
) -> Vec<(u32, Period)> {
    let Ok(current) = cycle.index_containing(now) else {
        return Vec::new();
    };
    let ends_between = match month.map(|m| month_bounds(m, &cycle.time_zone)) {
        Some(Some(b)) => Some(b),
        Some(None) => return Vec::new(),
        None => None,
    };
    let mut out = Vec::new();
    let mut n = current;
    while n > 0 {
        n -= 1;
        let Ok(p) = cycle.period_index(n) else { break };
        match ends_between {
            Some((from, to)) => {
                if p.end <= from {
                    break;
                }
                if p.end > to {
                    continue;
                }
            }
            None => {
                if current - n > catch_up.max(1) {
                    break;
                }
            }
        }
        // Nothing is billed for a period that starts after a cancellation or
        // lies entirely in a trial.
        if sub.canceled_at.is_some_and(|c| p.start >= c) {
            continue;
        }
        if sub.trial_ends_at.is_some_and(|t| p.end <= t) {
            continue;
        }
        out.push((n, p));
    }
    out.reverse();
    out
}

/// The tax rule of a customer: `metadata.tax_rate` (a fraction, as a string
/// or a number) or the configured default.
pub(crate) fn tax_rule(billing: &Billing, customer: &CustomerRecord) -> Result<TaxRule> {
    let rate = match customer.metadata.get("tax_rate") {
        None | Some(serde_json::Value::Null) => billing.config.default_tax_rate,
        Some(v) => {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let rate = Decimal::from_str_exact(&text).map_err(|_| InvoiceError::Invalid {
                field: "metadata.tax_rate",
                message: format!("{text:?} is not a decimal fraction"),
            })?;
            if rate < Decimal::ZERO || rate > Decimal::ONE {
                return Err(InvoiceError::Invalid {
                    field: "metadata.tax_rate",
                    message: format!("{rate} is not between 0 and 1"),
                });
            }
            rate
        }
    };
    Ok(TaxRule {
        rate,
        mode: billing.config.tax_mode,
        label: billing.config.tax_label.clone(),
    })
}

/// The customer as printed on the invoice (name, e-mail, and from metadata
/// `address` (lines) and `tax_id`).
pub(crate) fn bill_to(customer: &CustomerRecord) -> Party {
    let address = customer
        .metadata
        .get("address")
        .and_then(|a| a.as_array())
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Party {
        name: customer.name.clone().unwrap_or_else(|| customer.id.clone()),
        email: customer.email.clone(),
        address,
        tax_id: customer
            .metadata
            .get("tax_id")
            .and_then(|t| t.as_str())
            .map(str::to_string),
    }
}

pub(crate) fn currency_of(customer: &CustomerRecord) -> Result<Currency> {
    Currency::from_code(&customer.currency).map_err(|e| InvoiceError::Invalid {
        field: "currency",
        message: e.to_string(),
    })
}

fn pending_lines(items: &[PendingItemRecord]) -> Result<Vec<InvoiceLine>> {
    items
        .iter()
        .map(|i| {
            serde_json::from_value(i.line.clone()).map_err(|e| {
                InvoiceError::Store(StoreError::Corrupt(format!("pending item {}: {e}", i.id)))
            })
        })
        .collect()
}

pub(crate) fn cycle_of(
    plan: &Plan,
    sub: &SubscriptionRecord,
    customer: &CustomerRecord,
) -> BillingCycle {
    let tz = TimeZone::get(&customer.time_zone).unwrap_or(TimeZone::UTC);
    BillingCycle::new(plan.interval, plan.anchoring, sub.anchor, tz)
}

impl Billing {
    /// Every published plan version, by (key, version).
    pub(crate) async fn all_plans(&self) -> Result<Plans> {
        let mut plans = HashMap::new();
        for r in self.store.plan_versions().await? {
            match serde_json::from_value::<Plan>(r.definition) {
                Ok(mut p) => {
                    p.version = r.version;
                    plans.insert((r.plan_key, r.version), Arc::new(p));
                }
                Err(e) => {
                    tracing::warn!(plan = %r.plan_key, version = r.version, error = %e,
                        "a published plan version is not readable");
                }
            }
        }
        Ok(plans)
    }

    /// The due date of an invoice issued at `at`.
    pub(crate) fn due_at(&self, at: Timestamp) -> Option<Timestamp> {
        at.checked_add(SignedDuration::from_hours(
            24 * i64::from(self.config.payment_terms_days),
        ))
        .ok()
    }

    /// Closes every ended billing period that has no invoice yet (see the
    /// module rules). `progress` is called after each chunk.
    pub async fn run_invoices(
        &self,
        opts: &RunOptions,
        progress: &(dyn Fn(RunProgress) + Send + Sync),
    ) -> Result<RunReport> {
        let now = self.engine.now();
        let mut report = RunReport {
            now: Some(now),
            ..RunReport::default()
        };
        let started = std::time::Instant::now();
        let plans = self.all_plans().await?;
        let customers: HashMap<String, Arc<CustomerRecord>> = self
            .store
            .all_customers()
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), Arc::new(c)))
            .collect();

        // ---- which periods are due ----------------------------------------------
        let mut due = Vec::new();
        for sub in self.store.all_subscriptions().await? {
            report.subscriptions += 1;
            let Some(customer) = customers.get(&sub.customer_id) else {
                continue;
            };
            let plan = match plan_of(&plans, &sub.plan_key, sub.plan_version) {
                Ok(p) => p,
                Err(e) => {
                    report.failed.push(RunFailure {
                        customer_id: sub.customer_id.clone(),
                        period_start: sub.anchor,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let cycle = Arc::new(cycle_of(&plan, &sub, customer));
            let sub = Arc::new(sub);
            for (index, period) in
                due_periods(&cycle, &sub, now, opts.month, self.config.catch_up_periods)
            {
                due.push(Due {
                    customer: customer.clone(),
                    sub: sub.clone(),
                    cycle: cycle.clone(),
                    index,
                    period,
                    settled: None,
                });
            }
        }
        due.sort_by(|a, b| (a.period.start, &a.customer.id).cmp(&(b.period.start, &b.customer.id)));
        report.periods = due.len();
        let total = due.len();
        progress(RunProgress { done: 0, total });
        let Some(earliest) = due.iter().map(|d| d.period.start).min() else {
            return Ok(report);
        };
        // Keys inside the periods too: a period closed in parts (final
        // invoices of cancellations since undone) has one per part.
        let end_of_keys = due.iter().map(|d| d.period.end).max().unwrap_or(earliest);

        // ---- the plan history of the periods -------------------------------------------
        let history_end = now
            .checked_add(SignedDuration::from_micros(1))
            .unwrap_or(now);
        let mut history: HashMap<String, Vec<PlanChangeRecord>> = HashMap::new();
        for c in self
            .store
            .changes()
            .plan_changes_between(earliest, history_end)
            .await?
        {
            history.entry(c.customer_id.clone()).or_default().push(c);
        }
        for h in history.values_mut() {
            h.sort_by(|a, b| (a.effective_at, &a.id).cmp(&(b.effective_at, &b.id)));
        }

        // ---- what earlier runs did ------------------------------------------------
        let existing: HashMap<(String, Timestamp), InvoiceKey> = self
            .store
            .billing()
            .invoice_keys(earliest, end_of_keys)
            .await?
            .into_iter()
            .map(|k| ((k.customer_id.clone(), k.period_start), k))
            .collect();
        let mut done = 0;
        let mut to_resume = Vec::new();
        let mut fresh = Vec::new();
        for d in due {
            let Some(mut k) = existing.get(&(d.customer.id.clone(), d.period.start)) else {
                fresh.push(d);
                continue;
            };
            // The period's invoices, part after part (a part ends short of
            // the period at a cancellation now; the next starts there).
            loop {
                if k.status == InvoiceStatus::Draft {
                    to_resume.push(k.id.clone());
                } else if !k.pending_items.is_empty() {
                    // Issued with its pending items in one step: a crash
                    // before they were attached is repaired here (attaching
                    // to the same invoice again changes nothing).
                    if let Err(e) = self
                        .store
                        .changes()
                        .attach_pending_items(&k.pending_items, &k.id)
                        .await
                    {
                        report.failed.push(RunFailure {
                            customer_id: k.customer_id.clone(),
                            period_start: k.period_start,
                            error: format!("pending items: {e}"),
                        });
                    }
                }
                if k.period_end >= d.period.end {
                    break;
                }
                match existing.get(&(d.customer.id.clone(), k.period_end)) {
                    Some(next) => k = next,
                    None => break,
                }
            }
            // Billed up to a cancellation that was undone by a reactivation
            // inside the period: the rest of the period is closed now, from
            // there.
            let billed_to = k.period_end;
            let reactivated = history.get(&d.customer.id).is_some_and(|h| {
                h.iter().any(|c| {
                    c.kind == "reactivate"
                        && c.effective_at >= billed_to
                        && c.effective_at < d.period.end
                })
            });
            if billed_to < d.period.end && reactivated {
                fresh.push(Due {
                    settled: Some(billed_to),
                    ..d
                });
                continue;
            }
            if k.status != InvoiceStatus::Draft {
                report.already_invoiced += 1;
                done += 1;
            }
        }
        if !to_resume.is_empty() {
            let mut stored = Vec::new();
            for id in &to_resume {
                if let Some(s) = self.store.billing().get_invoice(id).await? {
                    stored.push(s);
                }
            }
            report.resumed += stored.len();
            let (issued, failed) = self.finish(stored, now).await?;
            report.issued += issued;
            report.failed.extend(failed);
            done += to_resume.len();
        }
        progress(RunProgress { done, total });

        // ---- pending items -------------------------------------------------------------
        let mut claimed: HashSet<String> = HashSet::new();
        let discounts = discounts_by_customer(self.store.billing().all_discounts().await?);
        report.timings.load_ms = ms(started);
        let started = std::time::Instant::now();
        let mut prepared = Vec::with_capacity(fresh.len());
        for d in fresh {
            match self
                .prepare(d, &plans, &history, &mut claimed, &discounts)
                .await
            {
                Ok(p) => prepared.push(p),
                Err((d, e)) => {
                    report.failed.push(RunFailure {
                        customer_id: d.customer.id.clone(),
                        period_start: d.period.start,
                        error: e.to_string(),
                    });
                    done += 1;
                }
            }
        }

        // ---- one pass over the ledger ----------------------------------------------------
        report.timings.prepare_ms = ms(started);
        let started = std::time::Instant::now();
        let mut windows = Vec::new();
        let mut group_bys: HashMap<(String, u32), Arc<GroupBy>> = HashMap::new();
        for p in &prepared {
            for s in &p.spans {
                let g = group_bys
                    .entry((s.plan.key.clone(), s.plan.version))
                    .or_insert_with(|| Arc::new(group_by(&s.plan)))
                    .clone();
                windows.push(UsageWindow {
                    customer_id: p.due.customer.id.clone(),
                    from: s.from,
                    to: s.to,
                    group_by: g,
                });
            }
        }
        let mut totals = self
            .store
            .billing()
            .usage_totals(&windows)
            .await?
            .into_iter();
        drop(windows);

        // ---- compute, persist, issue: chunk by chunk --------------------------------------
        report.timings.ledger_ms = ms(started);
        let chunk = opts.chunk.max(1);
        let mut batch: Vec<NewInvoice> = Vec::with_capacity(chunk);
        let mut batch_len = 0;
        for p in prepared {
            let usage: Vec<Vec<UsageTotal>> = p
                .spans
                .iter()
                .map(|_| totals.next().unwrap_or_default())
                .collect();
            batch_len += 1;
            let started = std::time::Instant::now();
            let computed = self.compute(&p, usage, now);
            report.timings.compute_ms += ms_micros(started);
            match computed {
                Ok(new) => batch.push(new),
                Err(e) => report.failed.push(RunFailure {
                    customer_id: p.due.customer.id.clone(),
                    period_start: p.due.period.start,
                    error: e.to_string(),
                }),
            }
            if batch_len >= chunk {
                let started = std::time::Instant::now();
                self.flush_batch(&mut batch, now, &mut report).await?;
                report.timings.write_ms += ms(started);
                done += batch_len;
                batch_len = 0;
                progress(RunProgress { done, total });
            }
        }
        if batch_len > 0 {
            let started = std::time::Instant::now();
            self.flush_batch(&mut batch, now, &mut report).await?;
            report.timings.write_ms += ms(started);
            done += batch_len;
            progress(RunProgress { done, total });
        }
        report.timings.compute_ms /= 1_000;
        Ok(report)
    }

    /// Writes a chunk of drafts (one transaction), then finishes them.
    async fn flush_batch(
        &self,
        batch: &mut Vec<NewInvoice>,
        now: Timestamp,
        report: &mut RunReport,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let billing = self.store.billing();
        let stored = if self.config.auto_issue {
            // Issued as they are written: one transaction per chunk, each
            // number taken with its invoice.
            billing
                .insert_issued_invoices(batch, &self.config.invoice_prefix, now, self.due_at(now))
                .await?
        } else {
            billing.insert_invoices(batch).await?
        };
        batch.clear();
        let mut unfinished = Vec::new();
        for s in stored {
            if !s.created {
                report.resumed += 1;
                unfinished.push(s);
                continue;
            }
            report.created += 1;
            if s.invoice.status == InvoiceStatus::Draft {
                unfinished.push(s);
                continue;
            }
            report.issued += 1;
            if !s.pending_items.is_empty() {
                if let Err(e) = self
                    .store
                    .changes()
                    .attach_pending_items(&s.pending_items, &s.invoice.id)
                    .await
                {
                    report.failed.push(RunFailure {
                        customer_id: s.invoice.customer_id.clone(),
                        period_start: s.invoice.period_start,
                        error: format!("pending items: {e}"),
                    });
                }
            }
        }
        let (issued, failed) = self.finish(unfinished, now).await?;
        report.issued += issued;
        report.failed.extend(failed);
        Ok(())
    }

    /// Attaches each draft's pending items and, with `auto_issue`, issues the
    /// drafts (one transaction, numbered in order). Returns how many were
    /// issued and the drafts whose items could not be attached (left as
    /// drafts for an operator).
    async fn finish(
        &self,
        stored: Vec<StoredInvoice>,
        now: Timestamp,
    ) -> Result<(usize, Vec<RunFailure>)> {
        let mut failed = Vec::new();
        let mut to_issue = Vec::with_capacity(stored.len());
        for s in stored {
            if s.invoice.status != InvoiceStatus::Draft {
                continue;
            }
            if !s.pending_items.is_empty() {
                if let Err(e) = self
                    .store
                    .changes()
                    .attach_pending_items(&s.pending_items, &s.invoice.id)
                    .await
                {
                    failed.push(RunFailure {
                        customer_id: s.invoice.customer_id.clone(),
                        period_start: s.invoice.period_start,
                        error: format!("pending items: {e}"),
                    });
                    continue;
                }
            }
            to_issue.push(s.invoice.id);
        }
        if !self.config.auto_issue || to_issue.is_empty() {
            return Ok((0, failed));
        }
        let issued = self
            .store
            .billing()
            .issue_invoices(
                &to_issue,
                &self.config.invoice_prefix,
                now,
                self.due_at(now),
            )
            .await?;
        Ok((issued.len(), failed))
    }

    /// The spans, in-advance plan and pending items of a due period.
    async fn prepare(
        &self,
        due: Due,
        plans: &Plans,
        history: &HashMap<String, Vec<PlanChangeRecord>>,
        claimed: &mut HashSet<String>,
        discounts: &Discounts,
    ) -> std::result::Result<Prepared, (Due, InvoiceError)> {
        let changes = history.get(&due.customer.id).map_or(&[][..], Vec::as_slice);
        let covering: Vec<&CustomerDiscount> = discounts
            .get(&due.customer.id)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|d| d.applies_to(&due.cycle, due.index, &due.period))
            .collect();
        // A later part of a period billed in parts: a fixed amount comes off
        // at most once per period (what the earlier parts took is not taken
        // again), and volume tiers are those of the whole period.
        let earlier = match due.settled {
            Some(settled) => {
                match self
                    .earlier_parts(&due.customer.id, due.period.start, settled)
                    .await
                {
                    Ok(e) => e,
                    Err(e) => return Err((due, e)),
                }
            }
            None => Vec::new(),
        };
        let discounts = covering
            .into_iter()
            .filter_map(|d| d.discount_after(&earlier))
            .collect();
        // The spans, usage and minimum lines of the parts billed (neither
        // void nor fully credited), for the volume tier the whole period
        // reaches and the minimum over the parts billed so far.
        let notes = match self.credit_notes_of(&earlier).await {
            Ok(n) => n,
            Err(e) => return Err((due, e)),
        };
        let earlier = match earlier_parts_billed(&earlier, &notes) {
            Ok(billed) => billed,
            Err(e) => return Err((due, e.into())),
        };
        let mut spans = match spans_of(plans, changes, &due.sub, due.period) {
            Ok(s) => s,
            Err(e) => return Err((due, e)),
        };
        if let Some(settled) = due.settled {
            split_spans_at(&mut spans, settled);
            // One span per plan on each side of `settled` (a cancellation
            // and a reactivation cut the period without changing the plan).
            merge_same_plan(&mut spans, settled);
        }
        let mut advance = None;
        let last = spans.last().map(|s| s.plan.clone());
        if let Some(plan) = last.filter(|p| p.billing == BaseBilling::InAdvance) {
            let canceled = due.sub.canceled_at.is_some_and(|c| c <= due.period.end)
                || due.sub.status == SubscriptionStatus::Canceled && due.sub.canceled_at.is_none();
            if !canceled {
                let (key, version) =
                    plan_at(changes, (plan.key.as_str(), plan.version), due.period.end);
                let next_plan = plan_of(plans, key, version).unwrap_or(plan.clone());
                match due.cycle.period_index(due.index + 1) {
                    Ok(next) => advance = Some((next_plan, next)),
                    Err(e) => return Err((due, BillingError::Invalid(e.to_string()).into())),
                }
            }
        }
        // Pending items created before the period's end go on its invoice
        // (the earliest open one, when a run closes several periods).
        let items = match self.store.changes().pending_items(&due.customer.id).await {
            Ok(items) if items.is_empty() => items,
            Ok(items) => items
                .into_iter()
                .filter(|i| i.created_at < due.period.end && claimed.insert(i.id.clone()))
                .collect(),
            Err(e) => return Err((due, e.into())),
        };
        Ok(Prepared {
            due,
            spans,
            advance,
            pending: items,
            discounts,
            earlier,
        })
    }

    /// The core's input for a prepared period.
    fn input<'p>(
        &self,
        p: &'p Prepared,
        usage: Vec<Vec<UsageTotal>>,
        id: String,
        now: Timestamp,
    ) -> Result<InvoiceInput<'p>> {
        let d = &p.due;
        let nominal = match d.cycle.is_partial(d.index) {
            Ok(true) => Some(
                d.cycle
                    .nominal_period(d.index)
                    .map_err(|e| BillingError::Invalid(e.to_string()))?,
            ),
            _ => None,
        };
        Ok(InvoiceInput {
            invoice_id: id,
            customer_id: d.customer.id.clone(),
            currency: currency_of(&d.customer)?,
            period: d.period,
            nominal_period: nominal,
            segments: p
                .spans
                .iter()
                .zip(usage)
                .map(|(s, usage)| Segment {
                    plan: &s.plan,
                    from: s.from,
                    to: s.to,
                    usage,
                    canceled: s.canceled,
                })
                .collect(),
            advance: p.advance.as_ref().map(|(plan, period)| (&**plan, *period)),
            pending: pending_lines(&p.pending)?,
            discounts: p.discounts.clone(),
            settled_until: d.settled,
            earlier_usage: p.earlier.usage.clone(),
            earlier_parts: p.earlier.parts.clone(),
            earlier_minimum_credited: p.earlier.minimum_credited.clone(),
            tax: tax_rule(self, &d.customer)?,
            issuer: self.config.issuer.clone(),
            bill_to: bill_to(&d.customer),
            created_at: now,
        })
    }

    fn compute(
        &self,
        p: &Prepared,
        usage: Vec<Vec<UsageTotal>>,
        now: Timestamp,
    ) -> Result<NewInvoice> {
        let input = self.input(p, usage, mint("inv"), now)?;
        let invoice = compute_invoice(&input)?;
        Ok(NewInvoice {
            invoice,
            kind: InvoiceKind::Cycle,
            pending_items: p.pending.iter().map(|i| i.id.clone()).collect(),
        })
    }

    // ---- the upcoming invoice ----------------------------------------------------------

    /// What the customer's next invoice for the current period will come to
    /// if usage continues at its present pace (see `project_upcoming` in the
    /// core): from the end of the period's earlier parts, when a final
    /// invoice already billed the period up to a cancellation since undone
    /// (`InvoiceInput::settled_until`), so nothing billed is projected again.
    pub async fn upcoming_invoice(&self, customer_id: &str) -> Result<Invoice> {
        let plans = self.all_plans().await?;
        self.upcoming_invoice_at(customer_id, self.engine.now(), &plans)
            .await
    }

    /// [`Billing::upcoming_invoice`] at `now` with the published plans given
    /// (the worker's tick loads them once for every customer it projects).
    pub(crate) async fn upcoming_invoice_at(
        &self,
        customer_id: &str,
        now: Timestamp,
        plans: &Plans,
    ) -> Result<Invoice> {
        let customer = self.customer_record(customer_id).await?;
        let sub = self
            .store
            .get_subscription(customer_id)
            .await?
            .ok_or_else(|| InvoiceError::NotFound {
                what: "subscription",
                id: customer_id.to_string(),
            })?;
        let plan = plan_of(plans, &sub.plan_key, sub.plan_version)?;
        let cycle = cycle_of(&plan, &sub, &customer);
        let index = cycle
            .index_containing(now)
            .map_err(|e| BillingError::Invalid(e.to_string()))?;
        let period = cycle
            .period_index(index)
            .map_err(|e| BillingError::Invalid(e.to_string()))?;
        let mut changes = self.store.changes().plan_changes(customer_id).await?;
        changes.retain(|c| c.effective_at >= period.start);
        // The next invoice bills only what the earlier parts of the period
        // (final invoices of cancellations since undone) did not.
        let settled = self.settled_until(customer_id, period, now).await?;
        let due = Due {
            customer: Arc::new(customer),
            sub: Arc::new(sub),
            cycle: Arc::new(cycle),
            index,
            period,
            settled: (settled > period.start && settled < period.end).then_some(settled),
        };
        let history = HashMap::from([(customer_id.to_string(), changes)]);
        let discounts = discounts_by_customer(self.store.billing().discounts(customer_id).await?);
        let p = self
            .prepare(due, plans, &history, &mut HashSet::new(), &discounts)
            .await
            .map_err(|(_, e)| e)?;
        // Usage so far: each span cut at `now`.
        let windows: Vec<UsageWindow> = p
            .spans
            .iter()
            .map(|s| UsageWindow {
                customer_id: customer_id.to_string(),
                from: s.from,
                to: s.to.min(now).max(s.from),
                group_by: Arc::new(group_by(&s.plan)),
            })
            .collect();
        let usage = self.store.billing().usage_totals(&windows).await?;
        let input = self.input(&p, usage, "upcoming".to_string(), now)?;
        Ok(project_upcoming(&input, now)?)
    }

    // ---- invoices at a subscription's start and end -------------------------------------

    /// Writes an off-cycle invoice `id` of `lines` over `period` now (the
    /// customer's tax rule, issuer and bill-to as on cycle invoices), attaches
    /// `pending_items` to it, and issues it when `[billing] auto_issue` is on
    /// (else it waits as a draft). An invoice `id` that already exists is
    /// left as it is (a retry after a crash): it is only finished (items
    /// attached, issued). Returns the id.
    pub(crate) async fn invoice_lines_now(
        &self,
        customer: &CustomerRecord,
        period: Period,
        lines: Vec<InvoiceLine>,
        memo: String,
        pending_items: Vec<String>,
        id: String,
    ) -> Result<String> {
        let now = self.engine.now();
        if self.store.billing().get_invoice(&id).await?.is_none() {
            let mut invoice = Invoice::off_cycle(
                id.clone(),
                customer.id.clone(),
                currency_of(customer)?,
                period,
                lines,
                tax_rule(self, customer)?,
                now,
            );
            invoice.issuer = self.config.issuer.clone();
            invoice.bill_to = bill_to(customer);
            invoice.memo = Some(memo);
            self.store
                .billing()
                .insert_invoice(&NewInvoice {
                    invoice,
                    kind: InvoiceKind::OffCycle,
                    pending_items: pending_items.clone(),
                })
                .await?;
        }
        if !pending_items.is_empty() {
            self.store
                .changes()
                .attach_pending_items(&pending_items, &id)
                .await?;
        }
        if self.config.auto_issue {
            self.issue(&id).await?;
        }
        Ok(id)
    }

    /// What a subscription that starts (or restarts) at `at` owes now for the
    /// rest of the period containing `at`, on a plan whose base is billed in
    /// advance (core `first_period_base`: from `at` to the period's end,
    /// prorated against the whole nominal period): the customer, the period
    /// `[at, end)` and the line. `None` for a trialing or canceled
    /// subscription, a plan billed in arrears or free, or a period that has
    /// already ended.
    pub(crate) async fn base_owed_from(
        &self,
        sub: &SubscriptionRecord,
        at: Timestamp,
        even_if_ended: bool,
    ) -> Result<Option<BaseOwed>> {
        if matches!(
            sub.status,
            SubscriptionStatus::Trialing | SubscriptionStatus::Canceled
        ) {
            return Ok(None);
        }
        let customer = self.customer_record(&sub.customer_id).await?;
        let plans = self.all_plans().await?;
        let plan = plan_of(&plans, &sub.plan_key, sub.plan_version)?;
        let cycle = cycle_of(&plan, sub, &customer);
        let bad = |e: tollgate_core::period::PeriodError| BillingError::Invalid(e.to_string());
        let index = cycle.index_containing(at).map_err(bad)?;
        let period = cycle.period_index(index).map_err(bad)?;
        if period.end <= self.engine.now() && !even_if_ended {
            return Ok(None);
        }
        let nominal = cycle.nominal_period(index).map_err(bad)?;
        let Some(line) = first_period_base(&plan, &nominal, at)? else {
            return Ok(None);
        };
        let whole = period;
        let period = Period::new(at, period.end).map_err(bad)?;
        Ok(Some(BaseOwed {
            customer,
            whole,
            period,
            line,
            plan_name: plan.name.clone(),
        }))
    }

    /// The first period of a new subscription, `[start, first period end)`
    /// (see [`Billing::base_owed_from`]): later periods' bases are collected
    /// by the close of the period before each (`InvoiceInput::advance`), so
    /// no base is billed twice.
    pub(crate) async fn first_period_owed(
        &self,
        sub: &SubscriptionRecord,
        even_if_ended: bool,
    ) -> Result<Option<BaseOwed>> {
        let customer = self.customer_record(&sub.customer_id).await?;
        let plans = self.all_plans().await?;
        let plan = plan_of(&plans, &sub.plan_key, sub.plan_version)?;
        let cycle = cycle_of(&plan, sub, &customer);
        let first = cycle
            .period_index(0)
            .map_err(|e| BillingError::Invalid(e.to_string()))?;
        self.base_owed_from(sub, first.start, even_if_ended).await
    }

    /// Writes the invoice `id` of a base owed in advance (from
    /// [`Billing::base_owed_from`] or [`Billing::first_period_owed`]) with
    /// `memo`. Returns its id.
    pub(crate) async fn invoice_base_owed(
        &self,
        owed: BaseOwed,
        memo: String,
        id: String,
    ) -> Result<String> {
        self.invoice_lines_now(
            &owed.customer,
            owed.period,
            vec![owed.line],
            memo,
            Vec::new(),
            id,
        )
        .await
    }

    /// The invoice of a new subscription's first period, for a plan whose
    /// base is billed in advance ([`Billing::first_period_owed`]), on an
    /// off-cycle invoice issued now (a draft without `auto_issue`). Nothing
    /// for a trialing or canceled subscription, a plan billed in arrears or
    /// free, or a backdated subscription whose first period has already
    /// ended.
    pub async fn invoice_first_period(&self, sub: &SubscriptionRecord) -> Result<Option<String>> {
        let Some(owed) = self.first_period_owed(sub, false).await? else {
            return Ok(None);
        };
        let memo = owed.first_period_memo();
        Ok(Some(self.invoice_base_owed(owed, memo, mint("inv")).await?))
    }

    pub(crate) async fn customer_record(&self, id: &str) -> Result<CustomerRecord> {
        self.store
            .get_customer(id)
            .await?
            .ok_or_else(|| InvoiceError::NotFound {
                what: "customer",
                id: id.to_string(),
            })
    }

    /// The cycle invoices of `customer` that bill `[start, settled)`: the
    /// earlier parts of a period billed in parts (final invoices of
    /// cancellations since undone).
    async fn earlier_parts(
        &self,
        customer: &str,
        start: Timestamp,
        settled: Timestamp,
    ) -> Result<Vec<Invoice>> {
        let mut parts = self
            .list_invoices(&InvoiceFilter {
                customer_id: Some(customer.to_string()),
                kind: Some(InvoiceKind::Cycle),
                period_from: Some(start),
                period_to: Some(settled),
                ..InvoiceFilter::default()
            })
            .await?;
        parts.retain(|i| i.period_end <= settled);
        Ok(parts)
    }

    /// The credit notes of `invoices` that credited something (the
    /// earlier parts of a period billed in parts: what they credited of a
    /// minimum line is not handed back again, `earlier_parts_billed`).
    async fn credit_notes_of(&self, invoices: &[Invoice]) -> Result<Vec<CreditNote>> {
        let mut notes = Vec::new();
        for invoice in invoices
            .iter()
            .filter(|i| i.counts_as_billed() && !i.totals.amount_credited.is_zero())
        {
            notes.extend(self.store.billing().credit_notes(&invoice.id).await?);
        }
        Ok(notes)
    }

    /// Where the billing of the period `whole` already stops for `customer`
    /// at `at`: the end of the last final invoice of that period (a
    /// cancellation now, since reactivated), else the period's start. Final
    /// invoices are cycle invoices chained end to start inside the period.
    async fn settled_until(
        &self,
        customer: &str,
        whole: Period,
        at: Timestamp,
    ) -> Result<Timestamp> {
        let finals = self
            .list_invoices(&InvoiceFilter {
                customer_id: Some(customer.to_string()),
                kind: Some(InvoiceKind::Cycle),
                period_from: Some(whole.start),
                period_to: Some(at),
                ..InvoiceFilter::default()
            })
            .await?;
        Ok(finals
            .iter()
            .map(|i| i.period_end)
            .filter(|end| *end <= at)
            .max()
            .unwrap_or(whole.start)
            .max(whole.start))
    }

    /// The final invoice `id` of a subscription canceled now, at `at`: the
    /// current period closed at the cancellation as a cycle invoice of that
    /// period (so the run never closes the period again), over what was not
    /// billed yet: `[period start, at)`, or, when an earlier cancellation of
    /// the same period (since reactivated) already has its final invoice,
    /// `[that invoice's end, at)`. It carries the usage of that span (priced
    /// at its place in the period's cumulative count: included units used
    /// before are not given again), in-arrears bases prorated against the
    /// whole nominal period, and every pending item created up to `at`
    /// (among them the cancellation's credit for the unused in-advance base).
    /// `sub` is the subscription as canceled. When nothing of the period is
    /// left to close (a cancellation at the very start of a period, or at
    /// the instant the previous final invoice ends) the pending items, if
    /// any, go on an off-cycle invoice. Idempotent: an invoice `id` that
    /// exists is returned as it is (a retry after a crash), as is the
    /// period's cycle invoice that already starts where this one would.
    /// Returns the invoice id (`None`: nothing to bill).
    pub async fn final_invoice(
        &self,
        sub: &SubscriptionRecord,
        at: Timestamp,
        id: String,
    ) -> Result<Option<String>> {
        if self.store.billing().get_invoice(&id).await?.is_some() {
            return Ok(Some(id));
        }
        let now = self.engine.now();
        let customer = self.customer_record(&sub.customer_id).await?;
        let plans = self.all_plans().await?;
        let plan = plan_of(&plans, &sub.plan_key, sub.plan_version)?;
        let cycle = cycle_of(&plan, sub, &customer);
        let bad = |e: tollgate_core::period::PeriodError| BillingError::Invalid(e.to_string());
        let index = cycle.index_containing(at).map_err(bad)?;
        let whole = cycle.period_index(index).map_err(bad)?;
        let nominal = cycle.nominal_period(index).map_err(bad)?;
        let pending: Vec<PendingItemRecord> = self
            .store
            .changes()
            .pending_items(&customer.id)
            .await?
            .into_iter()
            .filter(|i| i.created_at <= at)
            .collect();
        let settled = self.settled_until(&customer.id, whole, at).await?;
        if at <= settled {
            if pending.is_empty() {
                return Ok(None);
            }
            let lines = pending_lines(&pending)?;
            let ids = pending.iter().map(|i| i.id.clone()).collect();
            let memo = format!("Final invoice: subscription canceled at {at}");
            let period = Period::new(at, whole.end).map_err(bad)?;
            return Ok(Some(
                self.invoice_lines_now(&customer, period, lines, memo, ids, id)
                    .await?,
            ));
        }
        let period = Period::new(whole.start, at).map_err(bad)?;
        let mut changes = self.store.changes().plan_changes(&customer.id).await?;
        changes.retain(|c| c.effective_at >= whole.start);
        let due = Due {
            customer: Arc::new(customer),
            sub: Arc::new(sub.clone()),
            cycle: Arc::new(cycle),
            index,
            period,
            settled: (settled > whole.start).then_some(settled),
        };
        let history = HashMap::from([(sub.customer_id.clone(), changes)]);
        let discounts =
            discounts_by_customer(self.store.billing().discounts(&sub.customer_id).await?);
        let mut p = self
            .prepare(due, &plans, &history, &mut HashSet::new(), &discounts)
            .await
            .map_err(|(_, e)| e)?;
        p.advance = None;
        p.pending = pending;
        let windows: Vec<UsageWindow> = p
            .spans
            .iter()
            .map(|s| UsageWindow {
                customer_id: sub.customer_id.clone(),
                from: s.from,
                to: s.to,
                group_by: Arc::new(group_by(&s.plan)),
            })
            .collect();
        let usage = self.store.billing().usage_totals(&windows).await?;
        let mut input = self.input(&p, usage, id.clone(), now)?;
        input.nominal_period = Some(nominal);
        let mut invoice = compute_invoice(&input)?;
        invoice.memo = Some(format!("Final invoice: subscription canceled at {at}"));
        let mut batch = vec![NewInvoice {
            invoice,
            kind: InvoiceKind::Cycle,
            pending_items: p.pending.iter().map(|i| i.id.clone()).collect(),
        }];
        let mut report = RunReport::default();
        let billing = self.store.billing();
        let stored = if self.config.auto_issue {
            billing
                .insert_issued_invoices(&batch, &self.config.invoice_prefix, now, self.due_at(now))
                .await?
        } else {
            billing.insert_invoices(&batch).await?
        };
        batch.clear();
        let written = stored.first().map(|s| s.invoice.id.clone()).unwrap_or(id);
        // Attach the items (and issue a draft) whether this call wrote the
        // invoice or found it.
        let (_, failed) = self.finish(stored.clone(), now).await?;
        report.failed.extend(failed);
        for s in stored
            .iter()
            .filter(|s| s.invoice.status != InvoiceStatus::Draft)
        {
            if !s.pending_items.is_empty() {
                self.store
                    .changes()
                    .attach_pending_items(&s.pending_items, &s.invoice.id)
                    .await?;
            }
        }
        if let Some(f) = report.failed.first() {
            return Err(InvoiceError::Invalid {
                field: "pending_items",
                message: f.error.clone(),
            });
        }
        Ok(Some(written))
    }

    // ---- invoice operations (the API's) -------------------------------------------------

    pub async fn invoice(&self, id: &str) -> Result<StoredInvoice> {
        self.store
            .billing()
            .get_invoice(id)
            .await?
            .ok_or_else(|| InvoiceError::NotFound {
                what: "invoice",
                id: id.to_string(),
            })
    }

    pub async fn list_invoices(&self, filter: &InvoiceFilter) -> Result<Vec<Invoice>> {
        Ok(self.store.billing().list_invoices(filter).await?)
    }

    /// Adds a line to a draft (an operator's adjustment) and recomputes its
    /// totals. Only drafts change.
    pub async fn add_draft_line(
        &self,
        invoice_id: &str,
        description: &str,
        amount: Decimal,
    ) -> Result<Invoice> {
        self.edit_draft(invoice_id, |inv| {
            let line = InvoiceLine::adjustment(
                description,
                amount,
                inv.period_start,
                inv.period_end,
                inv.currency,
            );
            inv.add_line(line);
            Ok(())
        })
        .await
    }

    /// Loads a draft, applies `edit`, recomputes its totals and saves it: the
    /// one way a draft changes (`NotDraft` for any other status).
    pub async fn edit_draft(
        &self,
        invoice_id: &str,
        edit: impl FnOnce(&mut Invoice) -> Result<()>,
    ) -> Result<Invoice> {
        let mut inv = self.invoice(invoice_id).await?.invoice;
        if inv.status != InvoiceStatus::Draft {
            return Err(InvoiceError::NotDraft {
                id: invoice_id.to_string(),
                status: inv.status.as_str(),
            });
        }
        edit(&mut inv)?;
        inv.recompute_totals();
        self.store.billing().update_draft(&inv, None).await?;
        Ok(inv)
    }

    /// Issues a draft now (number, due date). Idempotent.
    pub async fn issue(&self, invoice_id: &str) -> Result<Invoice> {
        let now = self.engine.now();
        let inv = self
            .store
            .billing()
            .issue_invoice(
                invoice_id,
                &self.config.invoice_prefix,
                now,
                self.due_at(now),
            )
            .await?;
        Ok(inv)
    }

    /// Records a payment (partial allowed; `amount` `None` = everything due),
    /// idempotent by `(provider, reference)`.
    pub async fn record_payment(
        &self,
        invoice_id: &str,
        provider: &str,
        reference: &str,
        amount: Option<Decimal>,
        metadata: serde_json::Value,
    ) -> Result<PaymentOutcome> {
        if reference.trim().is_empty() {
            return Err(InvoiceError::Invalid {
                field: "reference",
                message: "is empty".to_string(),
            });
        }
        let inv = self.invoice(invoice_id).await?.invoice;
        let amount = amount.unwrap_or(inv.totals.amount_due);
        if amount.normalize().scale() > inv.currency.minor_units() {
            return Err(InvoiceError::Invalid {
                field: "amount",
                message: format!(
                    "{amount} has more decimals than {} allows",
                    inv.currency.code()
                ),
            });
        }
        let payment = PaymentRecord {
            id: mint("pay"),
            invoice_id: invoice_id.to_string(),
            provider: provider.to_string(),
            reference: reference.to_string(),
            amount,
            currency: inv.currency.code().to_string(),
            received_at: self.engine.now(),
            metadata,
        };
        Ok(self.store.billing().record_payment(&payment).await?)
    }

    pub async fn void_invoice(&self, invoice_id: &str) -> Result<Invoice> {
        self.set_status(invoice_id, InvoiceStatus::Void).await
    }

    pub async fn mark_uncollectible(&self, invoice_id: &str) -> Result<Invoice> {
        self.set_status(invoice_id, InvoiceStatus::Uncollectible)
            .await
    }

    async fn set_status(&self, invoice_id: &str, status: InvoiceStatus) -> Result<Invoice> {
        Ok(self
            .store
            .billing()
            .set_invoice_status(invoice_id, status, self.engine.now())
            .await?)
    }

    /// Issues a credit note against an issued invoice (numbered, never more
    /// than what is left to credit). Returns the note and the invoice after it.
    pub async fn credit_invoice(
        &self,
        invoice_id: &str,
        request: &CreditRequest,
        reason: &str,
    ) -> Result<(CreditNote, Invoice)> {
        let inv = self.invoice(invoice_id).await?.invoice;
        let note = credit_note(
            &inv,
            inv.totals.amount_credited,
            request,
            mint("cn"),
            reason.to_string(),
            self.engine.now(),
        )?;
        Ok(self
            .store
            .billing()
            .insert_credit_note(&note, &self.config.credit_note_prefix)
            .await?)
    }

    /// Open invoices past their due date (overdue is derived, never stored).
    pub async fn overdue_invoices(&self) -> Result<Vec<Invoice>> {
        let now = self.engine.now();
        let open = self
            .list_invoices(&InvoiceFilter {
                status: Some(InvoiceStatus::Open),
                ..InvoiceFilter::default()
            })
            .await?;
        Ok(open.into_iter().filter(|i| i.is_overdue(now)).collect())
    }
}

/// Parses a `YYYY-MM` month (the CLI's `--period`) into its first day.
pub fn parse_month(month: &str) -> Result<jiff::civil::Date> {
    let bad = || InvoiceError::Invalid {
        field: "period",
        message: format!("{month:?} is not a month like 2026-11"),
    };
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i16, i8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    jiff::civil::Date::new(y, m, 1).map_err(|_| bad())
}

/// `(1st 00:00, next 1st 00:00)` of a month on a wall clock.
fn month_bounds(first: jiff::civil::Date, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
    let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
    let at = |d: jiff::civil::Date| d.to_zoned(tz.clone()).ok().map(|z| z.timestamp());
    Some((at(first)?, at(next)?))
}
