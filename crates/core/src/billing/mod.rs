//! Billing: invoices as a pure function of (catalog, plan history, ledger totals).
//!
//! This module is the one home of every rule that turns usage into money on an
//! invoice. Nothing here does I/O or reads a clock: the billing service
//! (`crates/billing`) gathers the inputs (plan segments, ledger totals, pending
//! proration items, tax rule) and persists what comes out.
//!
//! - [`invoice`]: the invoice document itself (lines, totals, status), shared by
//!   the store, the renderers (HTML/PDF), the payment providers and the API.
//! - [`compute`]: [`compute::compute_invoice`], the period close.
//! - [`change`]: plan-change previews: proration lines, features gained and lost,
//!   limits before and after, blockers.
//! - [`credit`]: credit notes against issued invoices.
//! - [`discount`]: discounts attached to a customer and the periods they apply to.
//!
//! See `docs/billing-semantics.md` ("Invoices", "Plan changes", "Credit
//! notes") for the rules
//! with worked numbers.

pub mod change;
pub mod compute;
pub mod credit;
pub mod discount;
pub mod invoice;

pub use invoice::{
    Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus, InvoiceTotals, LineSource, Party,
    TaxMode, TaxRule,
};
