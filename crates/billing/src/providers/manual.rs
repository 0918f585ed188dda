//! Manual payments: an operator records money received outside Tollgate (bank
//! transfer, cheque) with its reference. Partial payments are allowed; the
//! billing service keeps the invoice's balance. Nothing is sent anywhere, so
//! there is no provider-side status and no webhook.

use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::header::HeaderMap;
use rust_decimal::Decimal;
use tollgate_core::billing::Invoice;
use tollgate_core::money::Currency;

use super::{
    PaymentProvider, PaymentStatus, ProviderError, ProviderEvent, ProviderPayment, ProviderRefund,
    check_amount,
};

#[derive(Clone, Copy, Debug, Default)]
pub struct ManualProvider;

const NAME: &str = "manual";

fn unsupported(what: &str) -> ProviderError {
    ProviderError::Unsupported {
        provider: NAME.to_string(),
        what: what.to_string(),
    }
}

fn check_reference(reference: &str) -> Result<(), ProviderError> {
    if reference.trim().is_empty() || reference.len() > 200 {
        return Err(ProviderError::invalid(
            "reference",
            "a manual payment needs a reference of 1 to 200 characters (e.g. the bank transfer id)"
                .to_string(),
        ));
    }
    Ok(())
}

#[async_trait]
impl PaymentProvider for ManualProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// A pending payment the payer settles by transfer, quoting the invoice
    /// number (the reference).
    async fn create_payment(
        &self,
        invoice: &Invoice,
        amount: Decimal,
        _idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        check_amount("amount", amount, invoice.currency)?;
        Ok(ProviderPayment {
            provider: NAME.to_string(),
            reference: invoice.number.clone().unwrap_or_else(|| invoice.id.clone()),
            invoice_id: Some(invoice.id.clone()),
            amount,
            currency: invoice.currency,
            amount_received: Decimal::ZERO,
            status: PaymentStatus::Pending,
            client_secret: None,
        })
    }

    /// Money received: succeeded at once, for any positive amount up to what the
    /// service allows (the balance check is the service's).
    async fn record_payment(
        &self,
        invoice: &Invoice,
        amount: Decimal,
        reference: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        check_amount("amount", amount, invoice.currency)?;
        check_reference(reference)?;
        Ok(ProviderPayment {
            provider: NAME.to_string(),
            reference: reference.trim().to_string(),
            invoice_id: Some(invoice.id.clone()),
            amount,
            currency: invoice.currency,
            amount_received: amount,
            status: PaymentStatus::Succeeded,
            client_secret: None,
        })
    }

    /// A refund paid back by hand: recorded as done.
    async fn refund(
        &self,
        payment_reference: &str,
        amount: Option<Decimal>,
        currency: Currency,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let Some(amount) = amount else {
            return Err(ProviderError::invalid(
                "amount",
                "a manual refund needs its amount".to_string(),
            ));
        };
        check_amount("amount", amount, currency)?;
        Ok(ProviderRefund {
            provider: NAME.to_string(),
            reference: idempotency_key.to_string(),
            payment_reference: payment_reference.to_string(),
            amount,
            currency,
            status: PaymentStatus::Succeeded,
        })
    }

    async fn status(&self, _payment_reference: &str) -> Result<ProviderPayment, ProviderError> {
        Err(unsupported(
            "payment status (manual payments live only on the invoice)",
        ))
    }

    fn verify_webhook(
        &self,
        _headers: &HeaderMap,
        _body: &[u8],
        _now: Timestamp,
    ) -> Result<ProviderEvent, ProviderError> {
        Err(unsupported("webhooks"))
    }
}
