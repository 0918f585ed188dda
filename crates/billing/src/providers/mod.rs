//! Payment providers: how money for an invoice is collected.
//!
//! A [`PaymentProvider`] talks to the outside world only (a payment processor,
//! or nobody for [`manual`]); what was paid is recorded by the billing service
//! (the invoice's payments, its `amount_paid` and status). Two implementations:
//!
//! - [`manual::ManualProvider`]: an operator marks an invoice paid with a
//!   reference (bank transfer, cheque); partial payments are allowed.
//! - [`stripe::StripeProvider`]: PaymentIntents over Stripe's REST API, refunds,
//!   and signed webhooks (`Stripe-Signature`) turned into [`ProviderEvent`]s.
//!
//! Amounts cross this boundary as exact decimals in major units with their
//! currency; the Stripe implementation converts to integer minor units
//! (`Money::to_minor_units`: 1,309.77 USD → 130977, 12,100 JPY → 12100).

pub mod collect;
pub mod manual;
pub mod stripe;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::header::HeaderMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::billing::Invoice;
use tollgate_core::money::Currency;

/// Where a payment stands at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Created, waiting for the payer (a payment method, a confirmation, a transfer).
    Pending,
    /// The payer must act (3-D Secure, …).
    RequiresAction,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

/// A payment as the provider knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPayment {
    /// `manual`, `stripe`.
    pub provider: String,
    /// The provider's id for it (`pi_…` for Stripe; the operator's reference for
    /// manual payments).
    pub reference: String,
    pub invoice_id: Option<String>,
    pub amount: Decimal,
    pub currency: Currency,
    /// What was actually received so far.
    pub amount_received: Decimal,
    pub status: PaymentStatus,
    /// For a client-side confirmation (Stripe's `client_secret`).
    pub client_secret: Option<String>,
}

/// A refund as the provider knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRefund {
    pub provider: String,
    /// `re_…` for Stripe.
    pub reference: String,
    /// The payment refunded.
    pub payment_reference: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub status: PaymentStatus,
}

/// A verified provider webhook, typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProviderEvent {
    /// Money arrived (`payment_intent.succeeded`).
    PaymentSucceeded {
        event_id: String,
        payment_reference: String,
        invoice_id: Option<String>,
        amount: Decimal,
        currency: Currency,
    },
    /// An attempt failed (`payment_intent.payment_failed`): nothing changes on
    /// the invoice, the failure is reported.
    PaymentFailed {
        event_id: String,
        payment_reference: String,
        invoice_id: Option<String>,
        message: String,
    },
    /// Money went back (`charge.refunded`): `amount_refunded` is the charge's
    /// cumulative refunded amount.
    Refunded {
        event_id: String,
        payment_reference: String,
        invoice_id: Option<String>,
        amount_refunded: Decimal,
        currency: Currency,
    },
    /// A well-signed event of a type we do not act on.
    Ignored { event_id: String, kind: String },
}

impl ProviderError {
    /// A field of the request is wrong.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ProviderError {
        ProviderError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ProviderEvent {
    /// The provider's event id: deliveries of one event share it.
    pub fn event_id(&self) -> &str {
        match self {
            ProviderEvent::PaymentSucceeded { event_id, .. }
            | ProviderEvent::PaymentFailed { event_id, .. }
            | ProviderEvent::Refunded { event_id, .. }
            | ProviderEvent::Ignored { event_id, .. } => event_id,
        }
    }
}

/// What went wrong with a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request is wrong before anything is sent (names the field).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the {provider} provider does not support {what}")]
    Unsupported { provider: String, what: String },
    /// The webhook's signature is missing, malformed, wrong or too old.
    #[error("webhook signature rejected: {0}")]
    Signature(String),
    /// The provider answered with an error (Stripe's `error` object).
    #[error("{provider} answered {status}: {message}")]
    Api {
        provider: String,
        status: u16,
        kind: String,
        code: Option<String>,
        message: String,
    },
    /// The provider could not be reached or answered something unreadable.
    #[error("{provider} could not be reached: {message}")]
    Transport { provider: String, message: String },
}

/// A way to collect money for invoices.
#[async_trait]
pub trait PaymentProvider: Send + Sync + Debug {
    /// `manual`, `stripe`.
    fn name(&self) -> &'static str;

    /// Starts collecting `amount` (major units, the invoice's currency) for
    /// `invoice`. `idempotency_key` makes a retried call create one payment.
    async fn create_payment(
        &self,
        invoice: &Invoice,
        amount: Decimal,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError>;

    /// Records a payment received outside the provider's own flow (manual: a
    /// transfer with its reference) or processes a created one.
    async fn record_payment(
        &self,
        invoice: &Invoice,
        amount: Decimal,
        reference: &str,
    ) -> Result<ProviderPayment, ProviderError>;

    /// Refunds `amount` (all of it when `None`) of a payment.
    async fn refund(
        &self,
        payment_reference: &str,
        amount: Option<Decimal>,
        currency: Currency,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError>;

    /// The payment's current state at the provider.
    async fn status(&self, payment_reference: &str) -> Result<ProviderPayment, ProviderError>;

    /// Verifies an incoming webhook (headers and the raw body, as received)
    /// and returns its typed event. `now` is the injected clock's instant.
    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<ProviderEvent, ProviderError>;
}

/// The providers a server has: manual always, Stripe when configured.
#[derive(Clone, Debug)]
pub struct Providers {
    pub manual: Arc<manual::ManualProvider>,
    pub stripe: Option<Arc<stripe::StripeProvider>>,
}

impl Providers {
    pub fn new(stripe: Option<&stripe::StripeConfig>) -> Result<Providers, ProviderError> {
        Ok(Providers {
            manual: Arc::new(manual::ManualProvider),
            stripe: match stripe {
                Some(config) => Some(Arc::new(stripe::StripeProvider::new(config.clone())?)),
                None => None,
            },
        })
    }

    /// A provider by name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn PaymentProvider>> {
        match name {
            "manual" => Some(self.manual.clone()),
            "stripe" => self.stripe.clone().map(|s| s as Arc<dyn PaymentProvider>),
            _ => None,
        }
    }
}

/// A positive amount that is exact in the currency's minor unit.
pub(crate) fn check_amount(
    field: &str,
    amount: Decimal,
    currency: Currency,
) -> Result<(), ProviderError> {
    let invalid = |message: String| ProviderError::invalid(field, message);
    if amount <= Decimal::ZERO {
        return Err(invalid(format!("must be positive, got {amount}")));
    }
    if amount.normalize().scale() > currency.minor_units() {
        return Err(invalid(format!(
            "{amount} has more decimals than {currency} allows ({})",
            currency.minor_units()
        )));
    }
    Ok(())
}
