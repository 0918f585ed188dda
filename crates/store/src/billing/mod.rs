//! Invoices, gapless document numbers, payments, credit notes, processed
//! provider events, and the ledger aggregation an invoice run reads.
//!
//! CONTRACT shared by the invoice run (`crates/billing/src/run.rs`, which
//! writes drafts and issues them), the payment providers and the invoice HTTP
//! routes. Implemented for SQLite and PostgreSQL in `sqlite.rs` /
//! `postgres.rs` beside this file (one body for both, [`billing_store_impl`]);
//! reached from a `dyn Store` with [`crate::Store::billing`].
//!
//! Rules the store enforces, whoever calls it:
//! - **one cycle invoice per customer and period**: inserting a second
//!   [`InvoiceKind::Cycle`] invoice for the same `(customer, period_start)`
//!   returns the first one (`created = false`), also after a crash between
//!   two runs (a unique index, not a check in memory);
//! - **a draft is the only editable invoice**: [`BillingStore::update_draft`]
//!   of an issued one is a `Conflict`;
//! - **numbers are gapless per prefix and never reused**: a number is taken
//!   from `document_numbers` in the same transaction as the status change that
//!   needs it (issue, credit note), so a crash either keeps both or neither;
//!   voiding keeps the number;
//! - **payments are idempotent by `(provider, reference)`**, partial payments
//!   add up, and an invoice is `paid` when nothing is due any more;
//! - **credit notes never credit more than the invoice's total** (checked and
//!   written in one transaction with the invoice's `amount_credited`).
//!
//! Documents are the core crate's [`Invoice`] and [`CreditNote`] as JSON text;
//! the columns next to them (status, number, customer, period) are what lists
//! filter on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::billing::compute::UsageTotal;
use tollgate_core::billing::credit::CreditNote;
use tollgate_core::billing::discount::CustomerDiscount;
use tollgate_core::billing::{Invoice, InvoiceStatus};

use crate::codec;
use crate::{Result, StoreError};

mod postgres;
mod sqlite;

/// Why an invoice exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    /// The close of a billing period: at most one per customer and period.
    Cycle,
    /// Anything else (an "invoice now" proration): no uniqueness.
    OffCycle,
}

impl InvoiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceKind::Cycle => "cycle",
            InvoiceKind::OffCycle => "off_cycle",
        }
    }

    pub fn parse(s: &str) -> Option<InvoiceKind> {
        match s {
            "cycle" => Some(InvoiceKind::Cycle),
            "off_cycle" => Some(InvoiceKind::OffCycle),
            _ => None,
        }
    }
}

/// A draft to persist.
#[derive(Clone, Debug, PartialEq)]
pub struct NewInvoice {
    /// Must be a draft without a number.
    pub invoice: Invoice,
    pub kind: InvoiceKind,
    /// Ids of the pending items (plan-change prorations) whose lines this
    /// draft carries, so a rerun after a crash attaches exactly these.
    pub pending_items: Vec<String>,
}

/// An invoice as stored, with what only the store keeps about it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredInvoice {
    pub invoice: Invoice,
    pub kind: InvoiceKind,
    pub pending_items: Vec<String>,
    /// `false` when an insert found the cycle invoice of an earlier run.
    pub created: bool,
}

/// Filters for listing invoices (every filter optional, combined with AND).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InvoiceFilter {
    pub customer_id: Option<String>,
    pub status: Option<InvoiceStatus>,
    pub kind: Option<InvoiceKind>,
    /// Invoices whose period starts in `[period_from, period_to)`.
    pub period_from: Option<Timestamp>,
    pub period_to: Option<Timestamp>,
    /// Cursor: invoices with an id greater than this one.
    pub starting_after: Option<String>,
    /// At most this many, by id; 0 = no limit.
    pub limit: u32,
}

/// The identity of a cycle invoice, without its document (for runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceKey {
    pub id: String,
    pub customer_id: String,
    pub period_start: Timestamp,
    /// Short of the billing period's end for a cancellation's final invoice
    /// (the next part of the period, if any, is keyed by this instant).
    pub period_end: Timestamp,
    pub status: InvoiceStatus,
    /// The pending items the invoice carries.
    pub pending_items: Vec<String>,
}

/// A payment received for an invoice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// `pay_…`
    pub id: String,
    pub invoice_id: String,
    /// `manual`, `stripe`, …
    pub provider: String,
    /// The provider's reference (cheque number, payment intent id); unique per
    /// provider: recording it again returns the first payment.
    pub reference: String,
    /// Positive, in the invoice's currency.
    pub amount: Decimal,
    pub currency: String,
    pub received_at: Timestamp,
    pub metadata: serde_json::Value,
}

/// What recording a payment did.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentOutcome {
    /// The payment as stored (the first one for a repeated reference).
    pub payment: PaymentRecord,
    /// The invoice after the payment.
    pub invoice: Invoice,
    /// `false` when `(provider, reference)` was already recorded.
    pub created: bool,
}

/// One customer's span of time whose billable ledger totals a run needs: a
/// plan segment of a billing period.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageWindow {
    pub customer_id: String,
    /// Event time `[from, to)`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Feature → the record properties its charge groups by (dimensional
    /// charges). Features absent here are summed without dimensions.
    pub group_by: Arc<HashMap<String, Vec<String>>>,
}

/// A refund of (part of) a payment, made through the provider that took it
/// and credited on the invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub id: String,
    pub invoice_id: String,
    /// The payment refunded (`PaymentRecord::id`) and its provider reference.
    pub payment_id: String,
    pub payment_reference: String,
    pub provider: String,
    /// The provider's refund (`re_…` for Stripe).
    pub reference: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: String,
    /// The request's `Idempotency-Key`: one refund per invoice and key.
    pub idempotency_key: String,
    /// The credit note that credits it on the invoice.
    pub credit_note_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: Timestamp,
}

#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Persists a draft. For a cycle invoice whose `(customer, period_start)`
    /// already has one, returns that one with `created = false` and writes
    /// nothing. `Conflict` on a duplicate id, `NotFound` if the customer does
    /// not exist, `Refused` if the invoice is not a draft without a number.
    async fn insert_invoice(&self, new: &NewInvoice) -> Result<StoredInvoice>;
    /// [`BillingStore::insert_invoice`] for many drafts in one transaction
    /// (one fsync for a whole chunk of an invoice run): all or nothing.
    async fn insert_invoices(&self, new: &[NewInvoice]) -> Result<Vec<StoredInvoice>>;
    /// Writes drafts already issued, in one transaction: each new invoice
    /// takes the next number of `prefix` (`open`, `issued_at`, `due_at`) and
    /// is inserted in the same transaction, so a crash keeps both or neither.
    /// A cycle invoice whose `(customer, period_start)` already has one is
    /// not written: the existing one is returned (`created = false`) and no
    /// number is taken. A concurrent writer of the same period makes the
    /// whole call a `Conflict` (nothing written; the caller retries).
    async fn insert_issued_invoices(
        &self,
        new: &[NewInvoice],
        prefix: &str,
        issued_at: Timestamp,
        due_at: Option<Timestamp>,
    ) -> Result<Vec<StoredInvoice>>;
    /// Replaces a draft's document (and its pending item ids when given).
    /// `NotFound` if absent, `Conflict` if it is no longer a draft.
    async fn update_draft(&self, invoice: &Invoice, pending_items: Option<&[String]>)
    -> Result<()>;
    /// Issues a draft: status `open`, the next number of `prefix`
    /// (`PREFIX-000001`), `issued_at` and `due_at`, in one transaction.
    /// Issuing an invoice that is already issued returns it unchanged (its
    /// number is kept); a voided draft is a `Conflict`.
    async fn issue_invoice(
        &self,
        id: &str,
        prefix: &str,
        issued_at: Timestamp,
        due_at: Option<Timestamp>,
    ) -> Result<Invoice>;
    /// [`BillingStore::issue_invoice`] for many invoices in one transaction,
    /// numbered in the order given: all or nothing.
    async fn issue_invoices(
        &self,
        ids: &[String],
        prefix: &str,
        issued_at: Timestamp,
        due_at: Option<Timestamp>,
    ) -> Result<Vec<Invoice>>;
    /// Moves an invoice to `paid`, `void` or `uncollectible` (see
    /// [`transition`]); the same status again is a no-op.
    async fn set_invoice_status(
        &self,
        id: &str,
        status: InvoiceStatus,
        at: Timestamp,
    ) -> Result<Invoice>;
    async fn get_invoice(&self, id: &str) -> Result<Option<StoredInvoice>>;
    async fn list_invoices(&self, filter: &InvoiceFilter) -> Result<Vec<Invoice>>;
    /// Cycle invoices whose period starts in `[from, to)`, without documents.
    async fn invoice_keys(&self, from: Timestamp, to: Timestamp) -> Result<Vec<InvoiceKey>>;

    /// Records a payment (see [`apply_payment`]). Idempotent by
    /// `(provider, reference)`: a repeat returns the first payment and the
    /// current invoice with `created = false`, or `Conflict` if it names
    /// another invoice or amount. `NotFound` if the invoice does not exist.
    async fn record_payment(&self, payment: &PaymentRecord) -> Result<PaymentOutcome>;
    /// An invoice's payments by `received_at`, then id.
    async fn payments(&self, invoice_id: &str) -> Result<Vec<PaymentRecord>>;

    /// Numbers and stores a credit note and adds its total to the invoice's
    /// `amount_credited` in one transaction (see [`apply_credit`]). Returns
    /// the numbered note and the invoice after it. `Conflict` on a duplicate
    /// id, `NotFound` if the invoice does not exist.
    async fn insert_credit_note(
        &self,
        note: &CreditNote,
        prefix: &str,
    ) -> Result<(CreditNote, Invoice)>;
    /// An invoice's credit notes by creation time, then id.
    async fn credit_notes(&self, invoice_id: &str) -> Result<Vec<CreditNote>>;
    async fn get_credit_note(&self, id: &str) -> Result<Option<CreditNote>>;

    /// Remembers a processed provider webhook event; `true` the first time,
    /// `false` for a repeated delivery.
    async fn remember_provider_event(
        &self,
        provider: &str,
        event_id: &str,
        at: Timestamp,
    ) -> Result<bool>;

    /// Attaches a discount to its customer. `Conflict` on a duplicate id,
    /// `NotFound` if the customer does not exist.
    async fn insert_discount(&self, discount: &CustomerDiscount) -> Result<()>;
    /// A customer's discounts, oldest first (by creation time, then id).
    async fn discounts(&self, customer_id: &str) -> Result<Vec<CustomerDiscount>>;
    /// Every customer's discounts (the invoice run reads them once).
    async fn all_discounts(&self) -> Result<Vec<CustomerDiscount>>;
    /// Removes a customer's discount; whether it existed.
    async fn delete_discount(&self, customer_id: &str, id: &str) -> Result<bool>;

    /// Records a refund; `false` (nothing written) when the invoice already
    /// has a refund with its idempotency key (the first one stands, with its
    /// credit note). `Refused` when the payment is not the invoice's, the
    /// amount is not positive, or the payment's refunds would exceed what it
    /// paid; `NotFound` if the invoice does not exist.
    async fn insert_refund(&self, refund: &RefundRecord) -> Result<bool>;
    /// An invoice's refunds, oldest first.
    async fn refunds(&self, invoice_id: &str) -> Result<Vec<RefundRecord>>;

    /// The stored answer of a request made with an idempotency key:
    /// `(request, response)` as JSON.
    async fn idempotent_response(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<(serde_json::Value, serde_json::Value)>>;
    /// Stores the answer of a request made with an idempotency key; `false`
    /// (nothing written) when the key already has one.
    async fn save_idempotent_response(
        &self,
        scope: &str,
        key: &str,
        request: &serde_json::Value,
        response: &serde_json::Value,
        at: Timestamp,
    ) -> Result<bool>;

    /// Billable ledger totals of each window, in one pass over the ledger
    /// between the earliest `from` and the latest `to`: per feature and
    /// dimension group, the allocation buckets summed (like
    /// [`crate::Store::sum_usage`]). `result[i]` belongs to `windows[i]`,
    /// ordered by feature then dimensions. Windows of one customer must not
    /// overlap (a record counts in the first window containing it).
    async fn usage_totals(&self, windows: &[UsageWindow]) -> Result<Vec<Vec<UsageTotal>>>;
}

// ---- rules shared by both backends ---------------------------------------------------

/// The outbox event `invoice.issued` or `invoice.paid` (`what` = `issued` or
/// `paid`) of an invoice, written in the transaction that issues it or
/// records what makes it paid; fires once per invoice (dedup key
/// `invoice.<what>|<id>`). Amounts are decimal strings. The billing worker
/// writes `invoice.overdue` with it too.
pub fn invoice_event(what: &str, inv: &Invoice, at: Timestamp) -> crate::notify::OutboxEvent {
    let money = |d: Decimal| serde_json::Value::String(d.normalize().to_string());
    let event_type = format!("invoice.{what}");
    crate::notify::OutboxEvent {
        id: format!("evt_{what}_{}", inv.id),
        dedup_key: Some(format!("{event_type}|{}", inv.id)),
        event_type,
        customer_id: Some(inv.customer_id.clone()),
        object_key: format!("invoice:{}", inv.id),
        object_seq: 0,
        payload: serde_json::json!({
            "invoice": inv.id,
            "number": inv.number,
            "customer": inv.customer_id,
            "currency": inv.currency.code(),
            "total": money(inv.totals.total),
            "amount_due": money(inv.totals.amount_due),
            "period": {"start": inv.period_start, "end": inv.period_end},
            "due_at": inv.due_at,
        }),
        created_at: at,
        seq: 0,
    }
}

fn refused(msg: impl Into<String>) -> StoreError {
    StoreError::Refused(msg.into())
}

/// The status rules: `paid` from `open` or `uncollectible`; `void` from
/// `draft`, `open` or `uncollectible`; `uncollectible` from `open`. The same
/// status again changes nothing. Anything else is a `Conflict`.
pub fn transition(invoice: &mut Invoice, status: InvoiceStatus, at: Timestamp) -> Result<()> {
    use InvoiceStatus as S;
    if invoice.status == status {
        return Ok(());
    }
    let allowed = matches!(
        (invoice.status, status),
        (S::Open | S::Uncollectible, S::Paid)
            | (S::Draft | S::Open | S::Uncollectible, S::Void)
            | (S::Open, S::Uncollectible)
    );
    if !allowed {
        return Err(StoreError::Conflict {
            what: "invoice status change",
            id: format!(
                "{}: {} -> {}",
                invoice.id,
                invoice.status.as_str(),
                status.as_str()
            ),
        });
    }
    invoice.status = status;
    match status {
        S::Paid => invoice.paid_at = Some(at),
        S::Void => invoice.voided_at = Some(at),
        _ => {}
    }
    Ok(())
}

/// Adds a payment to an invoice: it must be `open` or `uncollectible`, the
/// amount positive and at most the amount due (no overpayment); the invoice
/// becomes `paid` when nothing is due any more.
pub fn apply_payment(invoice: &mut Invoice, amount: Decimal, at: Timestamp) -> Result<()> {
    if !matches!(
        invoice.status,
        InvoiceStatus::Open | InvoiceStatus::Uncollectible
    ) {
        return Err(refused(format!(
            "invoice {} is {}: only open or uncollectible invoices take payments",
            invoice.id,
            invoice.status.as_str()
        )));
    }
    if amount <= Decimal::ZERO {
        return Err(refused(format!("payment amount {amount} is not positive")));
    }
    if amount > invoice.totals.amount_due {
        return Err(refused(format!(
            "payment of {amount} exceeds the {} due on invoice {}",
            invoice.totals.amount_due, invoice.id
        )));
    }
    invoice.record_payment(amount);
    if invoice.totals.amount_due.is_zero() {
        transition(invoice, InvoiceStatus::Paid, at)?;
    }
    Ok(())
}

/// Adds a credit note's total to an invoice: it must be issued (`open`,
/// `paid` or `uncollectible`), and everything credited must stay within the
/// invoice's total. An open invoice credited down to nothing due is `paid`
/// (as Stripe does).
pub fn apply_credit(invoice: &mut Invoice, note: &CreditNote) -> Result<()> {
    if !matches!(
        invoice.status,
        InvoiceStatus::Open | InvoiceStatus::Paid | InvoiceStatus::Uncollectible
    ) {
        return Err(refused(format!(
            "invoice {} is {}: only issued invoices take credit notes",
            invoice.id,
            invoice.status.as_str()
        )));
    }
    if note.invoice_id != invoice.id || note.customer_id != invoice.customer_id {
        return Err(refused(format!(
            "credit note {} does not reference invoice {} of customer {}",
            note.id, invoice.id, invoice.customer_id
        )));
    }
    if note.total <= Decimal::ZERO {
        return Err(refused(format!(
            "credit note total {} is not positive",
            note.total
        )));
    }
    let credited = invoice.totals.amount_credited + note.total;
    if credited > invoice.totals.total {
        return Err(refused(format!(
            "credit of {} would bring the credited amount to {credited}, above the invoice total {}",
            note.total, invoice.totals.total
        )));
    }
    invoice.record_credit(note.total);
    if invoice.status == InvoiceStatus::Open && invoice.totals.amount_due.is_zero() {
        transition(invoice, InvoiceStatus::Paid, note.created_at)?;
    }
    Ok(())
}

fn check_new_draft(new: &NewInvoice) -> Result<()> {
    if new.invoice.status != InvoiceStatus::Draft || new.invoice.number.is_some() {
        return Err(refused(format!(
            "invoice {} must be stored as a draft without a number",
            new.invoice.id
        )));
    }
    Ok(())
}

/// The columns of an invoice row as bound on insert.
struct InvoiceRow {
    id: String,
    customer_id: String,
    kind: &'static str,
    status: &'static str,
    number: Option<String>,
    currency: String,
    period_start: i64,
    period_end: i64,
    created_at: i64,
    pending_items: String,
    document: String,
}

impl InvoiceRow {
    fn new(inv: &Invoice, kind: InvoiceKind, pending_items: &[String]) -> Result<InvoiceRow> {
        Ok(InvoiceRow {
            id: inv.id.clone(),
            customer_id: inv.customer_id.clone(),
            kind: kind.as_str(),
            status: inv.status.as_str(),
            number: inv.number.clone(),
            currency: inv.currency.code().to_string(),
            period_start: codec::micros(inv.period_start),
            period_end: codec::micros(inv.period_end),
            created_at: codec::micros(inv.created_at),
            pending_items: codec::to_json("invoices.pending_items", &pending_items)?,
            document: codec::to_json("invoices.document", inv)?,
        })
    }
}

/// An invoice row as read back.
#[derive(Debug, sqlx::FromRow)]
struct RawInvoice {
    kind: String,
    pending_items: String,
    document: String,
}

impl RawInvoice {
    fn stored(self, created: bool) -> Result<StoredInvoice> {
        Ok(StoredInvoice {
            invoice: codec::json("invoices.document", &self.document)?,
            kind: InvoiceKind::parse(&self.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("invoices.kind: {:?}", self.kind)))?,
            pending_items: codec::json("invoices.pending_items", &self.pending_items)?,
            created,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct RawInvoiceKey {
    id: String,
    customer_id: String,
    period_start: i64,
    period_end: i64,
    status: String,
    pending_items: String,
}

impl TryFrom<RawInvoiceKey> for InvoiceKey {
    type Error = StoreError;
    fn try_from(r: RawInvoiceKey) -> Result<InvoiceKey> {
        Ok(InvoiceKey {
            status: InvoiceStatus::parse(&r.status)
                .ok_or_else(|| StoreError::Corrupt(format!("invoices.status: {:?}", r.status)))?,
            period_start: codec::timestamp("invoices.period_start", r.period_start)?,
            period_end: codec::timestamp("invoices.period_end", r.period_end)?,
            pending_items: codec::json("invoices.pending_items", &r.pending_items)?,
            id: r.id,
            customer_id: r.customer_id,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct RawPayment {
    id: String,
    invoice_id: String,
    provider: String,
    reference: String,
    amount: String,
    currency: String,
    received_at: i64,
    metadata: String,
}

const PAYMENT_COLUMNS: &str =
    "id, invoice_id, provider, reference, amount, currency, received_at, metadata";

impl TryFrom<RawPayment> for PaymentRecord {
    type Error = StoreError;
    fn try_from(r: RawPayment) -> Result<PaymentRecord> {
        Ok(PaymentRecord {
            amount: codec::decimal("payments.amount", &r.amount)?,
            received_at: codec::timestamp("payments.received_at", r.received_at)?,
            metadata: codec::json("payments.metadata", &r.metadata)?,
            id: r.id,
            invoice_id: r.invoice_id,
            provider: r.provider,
            reference: r.reference,
            currency: r.currency,
        })
    }
}

fn documents<T: serde::de::DeserializeOwned>(what: &str, rows: Vec<String>) -> Result<Vec<T>> {
    rows.iter().map(|d| codec::json(what, d)).collect()
}

/// A repeated payment must be the same payment.
fn same_payment(stored: &PaymentRecord, new: &PaymentRecord) -> Result<()> {
    if stored.invoice_id != new.invoice_id || stored.amount != new.amount {
        return Err(StoreError::Conflict {
            what: "payment reference",
            id: format!("{}/{}", new.provider, new.reference),
        });
    }
    Ok(())
}

// ---- one-pass usage aggregation -----------------------------------------------------------

/// (feature, dimensions) of a usage total.
type TotalKey = (String, BTreeMap<String, String>);

/// Sums ledger rows into the windows they fall in (shared by both backends;
/// the backends only stream the rows of the time range).
struct Aggregator<'w> {
    windows: &'w [UsageWindow],
    /// customer → its window indices, by `from`.
    by_customer: HashMap<&'w str, Vec<usize>>,
    sums: Vec<BTreeMap<TotalKey, UsageTotal>>,
}

impl<'w> Aggregator<'w> {
    fn new(windows: &'w [UsageWindow]) -> Aggregator<'w> {
        let mut by_customer: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, w) in windows.iter().enumerate() {
            by_customer
                .entry(w.customer_id.as_str())
                .or_default()
                .push(i);
        }
        for idx in by_customer.values_mut() {
            idx.sort_by_key(|i| windows[*i].from);
        }
        Aggregator {
            windows,
            by_customer,
            sums: vec![BTreeMap::new(); windows.len()],
        }
    }

    /// The overall time range, `None` when there is no window.
    fn range(&self) -> Option<(i64, i64)> {
        let from = self.windows.iter().map(|w| w.from).min()?;
        let to = self.windows.iter().map(|w| w.to).max()?;
        Some((codec::micros(from), codec::micros(to)))
    }

    fn add(
        &mut self,
        customer: &str,
        feature: &str,
        ts: i64,
        properties: &str,
        allocation: &str,
    ) -> Result<()> {
        let Some(idx) = self.by_customer.get(customer) else {
            return Ok(());
        };
        let Some(&i) = idx.iter().find(|&&i| {
            let w = &self.windows[i];
            codec::micros(w.from) <= ts && ts < codec::micros(w.to)
        }) else {
            return Ok(());
        };
        let mut dimensions = BTreeMap::new();
        if let Some(keys) = self.windows[i]
            .group_by
            .get(feature)
            .filter(|k| !k.is_empty())
        {
            let props: BTreeMap<String, serde_json::Value> =
                codec::json("usage.properties", properties)?;
            for k in keys {
                match props.get(k) {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::String(s)) => {
                        dimensions.insert(k.clone(), s.clone());
                    }
                    Some(v) => {
                        dimensions.insert(k.clone(), v.to_string());
                    }
                }
            }
        }
        let total = self.sums[i]
            .entry((feature.to_string(), dimensions))
            .or_insert_with_key(|(f, d)| UsageTotal {
                feature: f.clone(),
                dimensions: d.clone(),
                buckets: BTreeMap::new(),
                records: 0,
            });
        codec::add_allocation(&mut total.buckets, allocation)?;
        total.records += 1;
        Ok(())
    }

    fn finish(self) -> Vec<Vec<UsageTotal>> {
        self.sums
            .into_iter()
            .map(|m| m.into_values().collect())
            .collect()
    }
}

/// A ledger row as the aggregation reads it.
#[derive(Debug, sqlx::FromRow)]
struct RawTotalRow {
    customer_id: String,
    feature: String,
    ts: i64,
    properties: String,
    allocation: String,
}

/// The body of [`BillingStore`] for a backend, written once. `$store` has
/// `begin_write()` (a write transaction), `write_pool()` and `read_pool()`;
/// `$lock` is appended to reads of rows a transaction then rewrites
/// (`" FOR UPDATE"` on PostgreSQL, `""` on SQLite, whose single writer
/// connection already serializes them); `$usage` is an async fn
/// `(&$store, &mut Aggregator) -> Result<()>` streaming the ledger rows.
macro_rules! billing_store_impl {
    ($store:ty, $lock:literal, $usage:path) => {
        #[async_trait::async_trait]
        impl $crate::billing::BillingStore for $store {
            async fn insert_invoice(
                &self,
                new: &$crate::billing::NewInvoice,
            ) -> $crate::Result<$crate::billing::StoredInvoice> {
                let mut all = self.insert_invoices(std::slice::from_ref(new)).await?;
                all.pop().ok_or_else(|| {
                    $crate::StoreError::Corrupt("an insert returned no invoice".to_string())
                })
            }

            async fn insert_invoices(
                &self,
                new: &[$crate::billing::NewInvoice],
            ) -> $crate::Result<Vec<$crate::billing::StoredInvoice>> {
                use $crate::billing::*;
                let mut rows = Vec::with_capacity(new.len());
                for n in new {
                    check_new_draft(n)?;
                    rows.push(InvoiceRow::new(&n.invoice, n.kind, &n.pending_items)?);
                }
                let mut tx = self.begin_write().await?;
                let mut out = Vec::with_capacity(new.len());
                for (n, row) in new.iter().zip(rows) {
                    if self.insert_row(&mut tx, &row).await? {
                        // Its pending items in its own transaction: an invoice
                        // is never written with them left pending (a crash in
                        // between would let the next invoice bill them again;
                        // an unknown item or one on another invoice fails it).
                        $crate::changes::rows::Tables::<BillingDb>::attach_in(
                            &mut tx, $lock, &n.pending_items, &row.id,
                        )
                        .await?;
                        out.push(StoredInvoice {
                            invoice: n.invoice.clone(),
                            kind: n.kind,
                            pending_items: n.pending_items.clone(),
                            created: true,
                        });
                        continue;
                    }
                    match self.existing_cycle(&mut tx, n).await? {
                        Some(existing) => out.push(existing),
                        None => {
                            return Err($crate::StoreError::Conflict {
                                what: "invoice",
                                id: row.id,
                            });
                        }
                    }
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn insert_issued_invoices(
                &self,
                new: &[$crate::billing::NewInvoice],
                prefix: &str,
                issued_at: jiff::Timestamp,
                due_at: Option<jiff::Timestamp>,
            ) -> $crate::Result<Vec<$crate::billing::StoredInvoice>> {
                use $crate::billing::*;
                for n in new {
                    check_new_draft(n)?;
                }
                let mut tx = self.begin_write().await?;
                let mut out = Vec::with_capacity(new.len());
                for n in new {
                    if let Some(existing) = self.existing_cycle(&mut tx, n).await? {
                        out.push(existing);
                        continue;
                    }
                    let number = self.next_number(&mut tx, prefix).await?;
                    let mut inv = n.invoice.clone();
                    inv.number = Some(tollgate_core::billing::invoice::format_number(
                        prefix,
                        number.unsigned_abs(),
                    ));
                    inv.status = tollgate_core::billing::InvoiceStatus::Open;
                    inv.issued_at = Some(issued_at);
                    inv.due_at = due_at;
                    inv.recompute_totals();
                    let row = InvoiceRow::new(&inv, n.kind, &n.pending_items)?;
                    if !self.insert_row(&mut tx, &row).await? {
                        // Written by someone else since the check: nothing
                        // of this transaction is kept, no number is lost.
                        return Err($crate::StoreError::Conflict {
                            what: "invoice (written concurrently)",
                            id: row.id,
                        });
                    }
                    // Its pending items in the same transaction (see above).
                    $crate::changes::rows::Tables::<BillingDb>::attach_in(
                        &mut tx, $lock, &n.pending_items, &row.id,
                    )
                    .await?;
                    self.invoice_event(&mut tx, "issued", &inv, issued_at).await?;
                    out.push(StoredInvoice {
                        invoice: inv,
                        kind: n.kind,
                        pending_items: n.pending_items.clone(),
                        created: true,
                    });
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn update_draft(
                &self,
                invoice: &tollgate_core::billing::Invoice,
                pending_items: Option<&[String]>,
            ) -> $crate::Result<()> {
                use $crate::billing::*;
                let mut tx = self.begin_write().await?;
                let current: Option<RawInvoice> = sqlx::query_as(concat!(
                    "SELECT kind, pending_items, document FROM invoices WHERE id = $1",
                    $lock
                ))
                .bind(&invoice.id)
                .fetch_optional(&mut *tx)
                .await?;
                let current = current
                    .ok_or_else(|| $crate::StoreError::NotFound {
                        what: "invoice",
                        id: invoice.id.clone(),
                    })?
                    .stored(false)?;
                if current.invoice.status != tollgate_core::billing::InvoiceStatus::Draft
                    || invoice.status != tollgate_core::billing::InvoiceStatus::Draft
                    || invoice.number.is_some()
                {
                    return Err($crate::StoreError::Conflict {
                        what: "invoice (not a draft)",
                        id: invoice.id.clone(),
                    });
                }
                let items = pending_items.unwrap_or(&current.pending_items);
                let row = InvoiceRow::new(invoice, current.kind, items)?;
                sqlx::query(
                    "UPDATE invoices SET currency = $2, period_start = $3, period_end = $4, \
                     pending_items = $5, document = $6 WHERE id = $1",
                )
                .bind(&row.id)
                .bind(&row.currency)
                .bind(row.period_start)
                .bind(row.period_end)
                .bind(&row.pending_items)
                .bind(&row.document)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn issue_invoice(
                &self,
                id: &str,
                prefix: &str,
                issued_at: jiff::Timestamp,
                due_at: Option<jiff::Timestamp>,
            ) -> $crate::Result<tollgate_core::billing::Invoice> {
                let mut all = self
                    .issue_invoices(&[id.to_string()], prefix, issued_at, due_at)
                    .await?;
                all.pop().ok_or_else(|| {
                    $crate::StoreError::Corrupt("an issue returned no invoice".to_string())
                })
            }

            async fn issue_invoices(
                &self,
                ids: &[String],
                prefix: &str,
                issued_at: jiff::Timestamp,
                due_at: Option<jiff::Timestamp>,
            ) -> $crate::Result<Vec<tollgate_core::billing::Invoice>> {
                use tollgate_core::billing::InvoiceStatus;
                let mut tx = self.begin_write().await?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let mut inv = self.locked_invoice(&mut tx, id).await?;
                    match inv.status {
                        InvoiceStatus::Draft => {}
                        _ if inv.number.is_some() => {
                            out.push(inv);
                            continue;
                        }
                        _ => {
                            return Err($crate::StoreError::Conflict {
                                what: "invoice (voided draft)",
                                id: id.to_string(),
                            });
                        }
                    }
                    let n = self.next_number(&mut tx, prefix).await?;
                    inv.number = Some(tollgate_core::billing::invoice::format_number(
                        prefix,
                        n.unsigned_abs(),
                    ));
                    inv.status = InvoiceStatus::Open;
                    inv.issued_at = Some(issued_at);
                    inv.due_at = due_at;
                    inv.recompute_totals();
                    self.write_invoice(&mut tx, &inv).await?;
                    self.invoice_event(&mut tx, "issued", &inv, issued_at).await?;
                    out.push(inv);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn set_invoice_status(
                &self,
                id: &str,
                status: tollgate_core::billing::InvoiceStatus,
                at: jiff::Timestamp,
            ) -> $crate::Result<tollgate_core::billing::Invoice> {
                let mut tx = self.begin_write().await?;
                let mut inv = self.locked_invoice(&mut tx, id).await?;
                if inv.status == status {
                    return Ok(inv);
                }
                $crate::billing::transition(&mut inv, status, at)?;
                self.write_invoice(&mut tx, &inv).await?;
                if status == tollgate_core::billing::InvoiceStatus::Paid {
                    self.invoice_event(&mut tx, "paid", &inv, at).await?;
                }
                tx.commit().await?;
                Ok(inv)
            }

            async fn get_invoice(
                &self,
                id: &str,
            ) -> $crate::Result<Option<$crate::billing::StoredInvoice>> {
                let row: Option<$crate::billing::RawInvoice> = sqlx::query_as(
                    "SELECT kind, pending_items, document FROM invoices WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.read_pool())
                .await?;
                row.map(|r| r.stored(false)).transpose()
            }

            async fn list_invoices(
                &self,
                f: &$crate::billing::InvoiceFilter,
            ) -> $crate::Result<Vec<tollgate_core::billing::Invoice>> {
                let mut qb = sqlx::QueryBuilder::new("SELECT document FROM invoices WHERE 1 = 1");
                if let Some(c) = &f.customer_id {
                    qb.push(" AND customer_id = ").push_bind(c.clone());
                }
                if let Some(s) = f.status {
                    qb.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(k) = f.kind {
                    qb.push(" AND kind = ").push_bind(k.as_str());
                }
                if let Some(t) = f.period_from {
                    qb.push(" AND period_start >= ")
                        .push_bind($crate::codec::micros(t));
                }
                if let Some(t) = f.period_to {
                    qb.push(" AND period_start < ")
                        .push_bind($crate::codec::micros(t));
                }
                if let Some(after) = &f.starting_after {
                    qb.push(" AND id > ").push_bind(after.clone());
                }
                qb.push(" ORDER BY id");
                if let Some(n) = $crate::codec::limit(f.limit) {
                    qb.push(" LIMIT ").push_bind(n);
                }
                let rows: Vec<String> = qb
                    .build_query_scalar()
                    .fetch_all(self.read_pool())
                    .await?;
                $crate::billing::documents("invoices.document", rows)
            }

            async fn invoice_keys(
                &self,
                from: jiff::Timestamp,
                to: jiff::Timestamp,
            ) -> $crate::Result<Vec<$crate::billing::InvoiceKey>> {
                let rows: Vec<$crate::billing::RawInvoiceKey> = sqlx::query_as(
                    "SELECT id, customer_id, period_start, period_end, status, pending_items \
                     FROM invoices WHERE kind = 'cycle' AND period_start >= $1 AND period_start < $2 \
                     ORDER BY customer_id, period_start",
                )
                .bind($crate::codec::micros(from))
                .bind($crate::codec::micros(to))
                .fetch_all(self.read_pool())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn record_payment(
                &self,
                p: &$crate::billing::PaymentRecord,
            ) -> $crate::Result<$crate::billing::PaymentOutcome> {
                use $crate::billing::*;
                let mut tx = self.begin_write().await?;
                let existing: Option<RawPayment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND reference = $2"
                )))
                .bind(&p.provider)
                .bind(&p.reference)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(raw) = existing {
                    let stored = PaymentRecord::try_from(raw)?;
                    same_payment(&stored, p)?;
                    let invoice = self.locked_invoice(&mut tx, &stored.invoice_id).await?;
                    return Ok(PaymentOutcome {
                        payment: stored,
                        invoice,
                        created: false,
                    });
                }
                let mut invoice = self.locked_invoice(&mut tx, &p.invoice_id).await?;
                if invoice.currency.code() != p.currency {
                    return Err($crate::StoreError::Refused(format!(
                        "payment in {} for invoice {} in {}",
                        p.currency,
                        invoice.id,
                        invoice.currency.code()
                    )));
                }
                apply_payment(&mut invoice, p.amount, p.received_at)?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                )))
                .bind(&p.id)
                .bind(&p.invoice_id)
                .bind(&p.provider)
                .bind(&p.reference)
                .bind(p.amount.to_string())
                .bind(&p.currency)
                .bind($crate::codec::micros(p.received_at))
                .bind($crate::codec::to_json("payments.metadata", &p.metadata)?)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::codec::insert_error(e, "payment", &p.id, ""))?;
                self.write_invoice(&mut tx, &invoice).await?;
                if invoice.status == tollgate_core::billing::InvoiceStatus::Paid {
                    self.invoice_event(&mut tx, "paid", &invoice, p.received_at).await?;
                }
                tx.commit().await?;
                Ok(PaymentOutcome {
                    payment: p.clone(),
                    invoice,
                    created: true,
                })
            }

            async fn payments(
                &self,
                invoice_id: &str,
            ) -> $crate::Result<Vec<$crate::billing::PaymentRecord>> {
                use $crate::billing::*;
                let rows: Vec<RawPayment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments WHERE invoice_id = $1 \
                     ORDER BY received_at, id"
                )))
                .bind(invoice_id)
                .fetch_all(self.read_pool())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn insert_credit_note(
                &self,
                note: &tollgate_core::billing::credit::CreditNote,
                prefix: &str,
            ) -> $crate::Result<(
                tollgate_core::billing::credit::CreditNote,
                tollgate_core::billing::Invoice,
            )> {
                let mut tx = self.begin_write().await?;
                let mut invoice = self.locked_invoice(&mut tx, &note.invoice_id).await?;
                let was_paid = invoice.status == tollgate_core::billing::InvoiceStatus::Paid;
                $crate::billing::apply_credit(&mut invoice, note)?;
                let n = self.next_number(&mut tx, prefix).await?;
                let mut note = note.clone();
                note.number = Some(tollgate_core::billing::invoice::format_number(
                    prefix,
                    n.unsigned_abs(),
                ));
                sqlx::query(
                    "INSERT INTO credit_notes (id, number, invoice_id, customer_id, created_at, \
                     document) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&note.id)
                .bind(&note.number)
                .bind(&note.invoice_id)
                .bind(&note.customer_id)
                .bind($crate::codec::micros(note.created_at))
                .bind($crate::codec::to_json("credit_notes.document", &note)?)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::codec::insert_error(e, "credit note", &note.id, ""))?;
                self.write_invoice(&mut tx, &invoice).await?;
                if !was_paid && invoice.status == tollgate_core::billing::InvoiceStatus::Paid {
                    self.invoice_event(&mut tx, "paid", &invoice, note.created_at).await?;
                }
                tx.commit().await?;
                Ok((note, invoice))
            }

            async fn credit_notes(
                &self,
                invoice_id: &str,
            ) -> $crate::Result<Vec<tollgate_core::billing::credit::CreditNote>> {
                self.documents_of(
                    "credit_notes.document",
                    "SELECT document FROM credit_notes WHERE invoice_id = $1 \
                     ORDER BY created_at, id",
                    invoice_id,
                )
                .await
            }

            async fn get_credit_note(
                &self,
                id: &str,
            ) -> $crate::Result<Option<tollgate_core::billing::credit::CreditNote>> {
                let row: Option<String> =
                    sqlx::query_scalar("SELECT document FROM credit_notes WHERE id = $1")
                        .bind(id)
                        .fetch_optional(self.read_pool())
                        .await?;
                row.map(|d| $crate::codec::json("credit_notes.document", &d))
                    .transpose()
            }

            async fn remember_provider_event(
                &self,
                provider: &str,
                event_id: &str,
                at: jiff::Timestamp,
            ) -> $crate::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO provider_events (provider, event_id, received_at) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(provider)
                .bind(event_id)
                .bind($crate::codec::micros(at))
                .execute(self.write_pool())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_discount(
                &self,
                discount: &tollgate_core::billing::discount::CustomerDiscount,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO customer_discounts (id, customer_id, created_at, document) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&discount.id)
                .bind(&discount.customer_id)
                .bind($crate::codec::micros(discount.created_at))
                .bind($crate::codec::to_json("customer_discounts.document", discount)?)
                .execute(self.write_pool())
                .await
                .map_err(|e| {
                    $crate::codec::insert_error(e, "discount", &discount.id, &discount.customer_id)
                })?;
                Ok(())
            }

            async fn discounts(
                &self,
                customer_id: &str,
            ) -> $crate::Result<Vec<tollgate_core::billing::discount::CustomerDiscount>> {
                self.documents_of(
                    "customer_discounts.document",
                    "SELECT document FROM customer_discounts WHERE customer_id = $1 \
                     ORDER BY created_at, id",
                    customer_id,
                )
                .await
            }

            async fn all_discounts(
                &self,
            ) -> $crate::Result<Vec<tollgate_core::billing::discount::CustomerDiscount>> {
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT document FROM customer_discounts ORDER BY customer_id, created_at, id",
                )
                .fetch_all(self.read_pool())
                .await?;
                $crate::billing::documents("customer_discounts.document", rows)
            }

            async fn delete_discount(&self, customer_id: &str, id: &str) -> $crate::Result<bool> {
                let done =
                    sqlx::query("DELETE FROM customer_discounts WHERE customer_id = $1 AND id = $2")
                        .bind(customer_id)
                        .bind(id)
                        .execute(self.write_pool())
                        .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_refund(
                &self,
                refund: &$crate::billing::RefundRecord,
            ) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                // The invoice's row lock serializes refunds of one invoice.
                self.locked_invoice(&mut tx, &refund.invoice_id).await?;
                let replay: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM refunds WHERE invoice_id = $1 AND idempotency_key = $2",
                )
                .bind(&refund.invoice_id)
                .bind(&refund.idempotency_key)
                .fetch_optional(&mut *tx)
                .await?;
                if replay.is_some() {
                    return Ok(false);
                }
                let paid: Option<String> = sqlx::query_scalar(
                    "SELECT amount FROM payments WHERE id = $1 AND invoice_id = $2",
                )
                .bind(&refund.payment_id)
                .bind(&refund.invoice_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(paid) = paid else {
                    return Err($crate::StoreError::Refused(format!(
                        "{} is not a payment of invoice {}",
                        refund.payment_id, refund.invoice_id
                    )));
                };
                let paid = $crate::codec::decimal("payments.amount", &paid)?;
                let earlier: Vec<String> =
                    sqlx::query_scalar("SELECT document FROM refunds WHERE invoice_id = $1")
                        .bind(&refund.invoice_id)
                        .fetch_all(&mut *tx)
                        .await?;
                let earlier: Vec<$crate::billing::RefundRecord> =
                    $crate::billing::documents("refunds.document", earlier)?;
                let refunded: rust_decimal::Decimal = earlier
                    .iter()
                    .filter(|r| r.payment_id == refund.payment_id)
                    .map(|r| r.amount)
                    .sum();
                if refund.amount <= rust_decimal::Decimal::ZERO || refunded + refund.amount > paid {
                    return Err($crate::StoreError::Refused(format!(
                        "a refund of {} of payment {} would bring its refunds to {} of the {paid} paid",
                        refund.amount,
                        refund.payment_id,
                        refunded + refund.amount
                    )));
                }
                sqlx::query(
                    "INSERT INTO refunds (id, invoice_id, idempotency_key, created_at, document) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&refund.id)
                .bind(&refund.invoice_id)
                .bind(&refund.idempotency_key)
                .bind($crate::codec::micros(refund.created_at))
                .bind($crate::codec::to_json("refunds.document", refund)?)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::codec::insert_error(e, "refund", &refund.id, ""))?;
                tx.commit().await?;
                Ok(true)
            }

            async fn refunds(
                &self,
                invoice_id: &str,
            ) -> $crate::Result<Vec<$crate::billing::RefundRecord>> {
                self.documents_of(
                    "refunds.document",
                    "SELECT document FROM refunds WHERE invoice_id = $1 ORDER BY created_at, id",
                    invoice_id,
                )
                .await
            }

            async fn idempotent_response(
                &self,
                scope: &str,
                key: &str,
            ) -> $crate::Result<Option<(serde_json::Value, serde_json::Value)>> {
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT request, response FROM idempotent_requests \
                     WHERE scope = $1 AND key = $2",
                )
                .bind(scope)
                .bind(key)
                .fetch_optional(self.read_pool())
                .await?;
                row.map(|(req, resp)| {
                    Ok((
                        $crate::codec::json("idempotent_requests.request", &req)?,
                        $crate::codec::json("idempotent_requests.response", &resp)?,
                    ))
                })
                .transpose()
            }

            async fn save_idempotent_response(
                &self,
                scope: &str,
                key: &str,
                request: &serde_json::Value,
                response: &serde_json::Value,
                at: jiff::Timestamp,
            ) -> $crate::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO idempotent_requests (scope, key, request, response, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(scope)
                .bind(key)
                .bind($crate::codec::to_json("idempotent_requests.request", request)?)
                .bind($crate::codec::to_json("idempotent_requests.response", response)?)
                .bind($crate::codec::micros(at))
                .execute(self.write_pool())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn usage_totals(
                &self,
                windows: &[$crate::billing::UsageWindow],
            ) -> $crate::Result<Vec<Vec<tollgate_core::billing::compute::UsageTotal>>> {
                let mut agg = $crate::billing::Aggregator::new(windows);
                if let Some((from, to)) = agg.range() {
                    $usage(self, &mut agg, from, to).await?;
                }
                Ok(agg.finish())
            }
        }

        impl $store {
            /// The JSON documents `sql` selects with `key` bound to `$1`.
            async fn documents_of<T: serde::de::DeserializeOwned>(
                &self,
                what: &str,
                sql: &'static str,
                key: &str,
            ) -> $crate::Result<Vec<T>> {
                let rows: Vec<String> = sqlx::query_scalar(sql)
                    .bind(key)
                    .fetch_all(self.read_pool())
                    .await?;
                $crate::billing::documents(what, rows)
            }

            /// Inserts an invoice row unless it conflicts; whether it was written.
            async fn insert_row(
                &self,
                tx: &mut sqlx::Transaction<'static, BillingDb>,
                row: &$crate::billing::InvoiceRow,
            ) -> $crate::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO invoices (id, customer_id, kind, status, number, currency, \
                     period_start, period_end, created_at, pending_items, document) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                )
                .bind(&row.id)
                .bind(&row.customer_id)
                .bind(row.kind)
                .bind(row.status)
                .bind(&row.number)
                .bind(&row.currency)
                .bind(row.period_start)
                .bind(row.period_end)
                .bind(row.created_at)
                .bind(&row.pending_items)
                .bind(&row.document)
                .execute(&mut **tx)
                .await
                .map_err(|e| $crate::codec::insert_error(e, "invoice", &row.id, &row.customer_id))?;
                Ok(done.rows_affected() == 1)
            }

            /// The cycle invoice of a new invoice's customer and period, if any.
            async fn existing_cycle(
                &self,
                tx: &mut sqlx::Transaction<'static, BillingDb>,
                n: &$crate::billing::NewInvoice,
            ) -> $crate::Result<Option<$crate::billing::StoredInvoice>> {
                if n.kind != $crate::billing::InvoiceKind::Cycle {
                    return Ok(None);
                }
                let existing: Option<$crate::billing::RawInvoice> = sqlx::query_as(
                    "SELECT kind, pending_items, document FROM invoices \
                     WHERE customer_id = $1 AND period_start = $2 AND kind = 'cycle'",
                )
                .bind(&n.invoice.customer_id)
                .bind($crate::codec::micros(n.invoice.period_start))
                .fetch_optional(&mut **tx)
                .await?;
                existing.map(|r| r.stored(false)).transpose()
            }

            /// Reads an invoice inside a write transaction (locking its row).
            async fn locked_invoice(
                &self,
                tx: &mut sqlx::Transaction<'static, BillingDb>,
                id: &str,
            ) -> $crate::Result<tollgate_core::billing::Invoice> {
                let doc: Option<String> = sqlx::query_scalar(concat!(
                    "SELECT document FROM invoices WHERE id = $1",
                    $lock
                ))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
                let doc = doc.ok_or_else(|| $crate::StoreError::NotFound {
                    what: "invoice",
                    id: id.to_string(),
                })?;
                $crate::codec::json("invoices.document", &doc)
            }

            /// Rewrites an invoice's document and the columns derived from it.
            async fn write_invoice(
                &self,
                tx: &mut sqlx::Transaction<'static, BillingDb>,
                inv: &tollgate_core::billing::Invoice,
            ) -> $crate::Result<()> {
                sqlx::query("UPDATE invoices SET status = $2, number = $3, document = $4 WHERE id = $1")
                    .bind(&inv.id)
                    .bind(inv.status.as_str())
                    .bind(&inv.number)
                    .bind($crate::codec::to_json("invoices.document", inv)?)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Writes [`$crate::billing::invoice_event`] in `tx` (the store's
            /// outbox insert, the one `append_batch` uses).
            async fn invoice_event(
                &self,
                tx: &mut sqlx::Transaction<'static, BillingDb>,
                what: &str,
                inv: &tollgate_core::billing::Invoice,
                at: jiff::Timestamp,
            ) -> $crate::Result<()> {
                let event = $crate::billing::invoice_event(what, inv, at);
                outbox::lock_outbox(&mut **tx).await?;
                outbox::insert_event(&mut **tx, &event).await?;
                Ok(())
            }

            /// The next number of `prefix` (1 for a new prefix), taken in `tx`.
            async fn next_number(
                &self,
                tx: &mut sqlx::Transaction<'static, BillingDb>,
                prefix: &str,
            ) -> $crate::Result<i64> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO document_numbers (prefix, last_number) VALUES ($1, 1) \
                     ON CONFLICT (prefix) DO UPDATE SET last_number = document_numbers.last_number + 1 \
                     RETURNING last_number",
                )
                .bind(prefix)
                .fetch_one(&mut **tx)
                .await?)
            }
        }
    };
}

pub(crate) use billing_store_impl;
