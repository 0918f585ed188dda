//! Tollgate's billing service: the side effects around the pure billing core
//! (`tollgate_core::billing`).
//!
//! - [`run`]: closing billing periods into invoices (idempotent, crash-safe),
//!   issuing them with gapless numbers, payments and credit notes;
//! - [`worker`]: closes periods on time by the injected clock;
//! - [`changes`]: plan changes (preview, apply, schedule, trials, cancel,
//!   version migration) and their history;
//! - [`discounts`]: discounts attached to customers, applied by the run;
//! - [`providers`]: the payment-provider trait, `manual` and `stripe`;
//! - [`render`]: an invoice as HTML and as PDF.

pub mod changes;
pub mod discounts;
pub mod notices;
pub mod providers;
pub mod render;
pub mod run;
pub mod worker;

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::billing::{Party, TaxMode};
use tollgate_engine::Engine;
use tollgate_store::Store;

/// Billing settings (the `[billing]` table of the server configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Printed as the issuer on every invoice.
    pub issuer: Party,
    /// Invoice numbers are `PREFIX-000001`, gapless per prefix.
    pub invoice_prefix: String,
    /// Credit note numbers are `PREFIX-000001`, gapless per prefix.
    pub credit_note_prefix: String,
    /// Days from issue to due date.
    pub payment_terms_days: u32,
    /// Tax rate (fraction: 0.2 = 20 %) for customers without their own.
    pub default_tax_rate: Decimal,
    pub tax_mode: TaxMode,
    pub tax_label: String,
    /// Issue drafts as soon as a period closes (else they wait as drafts).
    pub auto_issue: bool,
    /// `[billing.stripe]`: collect payments with Stripe (absent: manual only).
    pub stripe: Option<providers::stripe::StripeConfig>,
    /// How many ended periods per subscription a scheduled run looks back
    /// for a missing invoice (after downtime); a manual run for a month
    /// closes that month whatever this says.
    pub catch_up_periods: u32,
    /// Seconds of real time between two ticks of the billing worker (what is
    /// due is decided by the engine's clock); 0 disables the worker.
    pub worker_interval_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> BillingConfig {
        BillingConfig {
            issuer: Party {
                name: "Tollgate".to_string(),
                ..Party::default()
            },
            invoice_prefix: "INV".to_string(),
            credit_note_prefix: "CN".to_string(),
            payment_terms_days: 30,
            default_tax_rate: Decimal::ZERO,
            tax_mode: TaxMode::PerLine,
            tax_label: "Tax".to_string(),
            auto_issue: true,
            stripe: None,
            catch_up_periods: 3,
            worker_interval_secs: 60,
        }
    }
}

/// The billing service: invoice runs ([`run`]), plan changes ([`changes`]),
/// payments ([`providers`]). Each module adds its methods in its own
/// `impl Billing` block. Time comes from the engine's injected clock.
#[derive(Debug)]
pub struct Billing {
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub config: BillingConfig,
    /// Whether `usage.daily_summary` is e-mailed (the delivery settings list
    /// it in `email_event_types` and have an SMTP relay): with it, or with an
    /// endpoint subscribed to it, the worker writes daily summaries
    /// ([`notices`]). Off after [`Billing::new`]; the server sets it.
    pub daily_summary_by_email: bool,
    /// Fault injection for crash tests ([`Billing::crash_after_next_history_entry`]).
    crash_after_history: std::sync::atomic::AtomicBool,
}

impl Billing {
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>, config: BillingConfig) -> Billing {
        Billing {
            engine,
            store,
            config,
            daily_summary_by_email: false,
            crash_after_history: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// For crash tests: the next subscription change (subscribe, trial
    /// conversion, cancellation, reactivation, a plan change now, scheduled
    /// or migrated) fails right after writing its history entry, before the
    /// engine's change, as a crash there would
    /// leave it. Recovery then completes it (`docs/plan-changes.md`,
    /// "Crashes between the writes"). A change at period end fails right
    /// after writing its scheduled change, before its answer is stored.
    #[doc(hidden)]
    pub fn crash_after_next_history_entry(&self) {
        self.crash_after_history
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fails once after [`Billing::crash_after_next_history_entry`].
    pub(crate) fn crash_point(&self) -> Result<(), tollgate_store::StoreError> {
        if self
            .crash_after_history
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(tollgate_store::StoreError::Refused(
                "injected crash after the history entry".to_string(),
            ));
        }
        Ok(())
    }
}
