//! Tollgate's billing service: the side effects around the pure billing core
//! (`tollgate_core::billing`).
//!
//! - [`run`]: closing billing periods into invoices (idempotent, crash-safe),
//!   issuing them with gapless numbers, payments and credit notes;
//! - [`worker`]: closes periods on time by the injected clock;
//! - [`changes`]: plan changes (preview, apply, schedule, trials, cancel,
//!   version migration) and their history;
//! - [`providers`]: the payment-provider trait, `manual` and `stripe`;
//! - [`render`]: an invoice as HTML and as PDF.

pub mod changes;
pub mod providers;
pub mod render;
pub mod run;
pub mod worker;
