//! Collecting money through the billing service: a provider's payment becomes
//! a payment of the invoice in the store, a provider's refund a credit note.
//!
//! Idempotency: payments are unique per `(provider, reference)` in the store
//! (the PaymentIntent id for Stripe, the operator's reference for manual
//! payments), so a webhook delivered twice, or a `pay` call retried, records
//! one payment. Provider events are also remembered by id
//! (`BillingStore::remember_provider_event`) so repeats are reported as such.
//! Refunds carry Stripe's cumulative `amount_refunded`; only the part not yet
//! credited for that payment becomes a credit note.

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::billing::Invoice;
use tollgate_core::billing::credit::{CreditNote, CreditRequest};
use tollgate_store::StoreError;
use tollgate_store::billing::{PaymentRecord, RefundRecord, StoredInvoice};

use super::{PaymentProvider, ProviderError, ProviderEvent, ProviderPayment, Providers};
use crate::Billing;

/// Why collecting failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Invoice(#[from] crate::run::InvoiceError),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    /// The invoice cannot take this (a draft, a void invoice, nothing due…).
    #[error("{0}")]
    Refused(String),
}

/// What a `pay` did.
#[derive(Clone, Debug, Serialize)]
pub struct PayOutcome {
    /// The provider's view (status, client secret for Stripe).
    pub payment: ProviderPayment,
    /// The stored payment when money was received (manual), `None` while the
    /// provider collects (Stripe: recorded by its webhook).
    pub recorded: Option<PaymentRecord>,
    /// `false` when the same reference was already recorded.
    pub created: bool,
    pub invoice: Invoice,
}

/// What a provider event did.
#[derive(Clone, Debug, Serialize)]
pub struct EventOutcome {
    pub event_id: String,
    /// `payment_recorded`, `credit_note_issued`, `already_processed`,
    /// `payment_failed`, `ignored`.
    pub action: String,
    /// A repeated delivery of an event already processed.
    pub duplicate: bool,
    pub invoice_id: Option<String>,
    pub payment_id: Option<String>,
    pub credit_note_id: Option<String>,
}

/// A refund as asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefundRequest {
    /// The payment to refund (`pay_…`); default: the invoice's only payment.
    pub payment_id: Option<String>,
    /// Default: what is left to refund of the payment.
    pub amount: Option<Decimal>,
    pub reason: Option<String>,
    /// One refund per invoice and key: a retried request refunds once.
    pub idempotency_key: String,
}

/// What a refund did.
#[derive(Clone, Debug, Serialize)]
pub struct RefundOutcome {
    pub refund: RefundRecord,
    /// `false` when the key had already refunded (the first refund is answered).
    pub created: bool,
    pub invoice: Invoice,
}

impl Billing {
    /// Refunds (part of) a payment of an invoice through the provider that
    /// took it (manual: recorded as done; Stripe: `POST /v1/refunds`, with an
    /// idempotency key derived from the request's), credits the refunded
    /// amount on the invoice with a credit note "Refund of <payment>" (the
    /// one Stripe's `charge.refunded` webhook would write, so the webhook
    /// credits nothing twice) and records the refund. A repeat with the same
    /// `idempotency_key` answers the first refund and refunds nothing.
    pub async fn refund_invoice(
        &self,
        providers: &Providers,
        invoice_id: &str,
        req: &RefundRequest,
    ) -> Result<RefundOutcome, PaymentError> {
        let store = self.store.billing();
        let refunds = store.refunds(invoice_id).await?;
        if let Some(first) = refunds
            .iter()
            .find(|r| r.idempotency_key == req.idempotency_key)
        {
            let invoice = self.invoice_for_payment(invoice_id).await?.invoice;
            return Ok(RefundOutcome {
                refund: first.clone(),
                created: false,
                invoice,
            });
        }
        let invoice = self.invoice_for_payment(invoice_id).await?.invoice;
        // A refund is credited on the invoice: on a paid invoice that lowers
        // the total and what was kept alike; on an open one it would instead
        // lower what is still due.
        if invoice.status != tollgate_core::billing::InvoiceStatus::Paid {
            return Err(PaymentError::Refused(format!(
                "invoice {invoice_id} is {}: only paid invoices are refunded (credit an open one)",
                invoice.status.as_str()
            )));
        }
        let payments = store.payments(invoice_id).await?;
        let payment = match &req.payment_id {
            Some(id) => payments.iter().find(|p| &p.id == id).ok_or_else(|| {
                ProviderError::invalid(
                    "payment_id",
                    format!("{id:?} is not a payment of {invoice_id}"),
                )
            })?,
            None => match payments.as_slice() {
                [] => {
                    return Err(PaymentError::Refused(format!(
                        "invoice {invoice_id} has no payment to refund"
                    )));
                }
                [one] => one,
                many => {
                    return Err(ProviderError::invalid(
                        "payment_id",
                        format!(
                            "the invoice has {} payments: name the one to refund",
                            many.len()
                        ),
                    )
                    .into());
                }
            },
        };
        let refunded: Decimal = refunds
            .iter()
            .filter(|r| r.payment_id == payment.id)
            .map(|r| r.amount)
            .sum();
        let left = payment.amount - refunded;
        let amount = req.amount.unwrap_or(left);
        if amount <= Decimal::ZERO || amount > left {
            return Err(ProviderError::invalid(
                "amount",
                format!(
                    "{amount} is not between 0 (excluded) and what is left to refund of {} ({left} {})",
                    payment.id, payment.currency
                ),
            )
            .into());
        }
        let provider = providers.get(&payment.provider).ok_or_else(|| {
            PaymentError::Refused(format!(
                "the payment was made with {:?}, which is not configured",
                payment.provider
            ))
        })?;
        let key = format!("tollgate-refund-{invoice_id}-{}", req.idempotency_key);
        let done = provider
            .refund(&payment.reference, Some(amount), invoice.currency, &key)
            .await?;
        // Cumulative, as Stripe reports refunds: a retry after a crash
        // between the credit and the record credits nothing twice.
        let note = self
            .credit_refund(invoice_id, &payment.reference, refunded + amount)
            .await?;
        let refund = RefundRecord {
            id: crate::changes::mint("ref"),
            invoice_id: invoice_id.to_string(),
            payment_id: payment.id.clone(),
            payment_reference: payment.reference.clone(),
            provider: payment.provider.clone(),
            reference: done.reference,
            amount,
            currency: invoice.currency.code().to_string(),
            idempotency_key: req.idempotency_key.clone(),
            credit_note_id: note.map(|n| n.id),
            reason: req.reason.clone(),
            created_at: self.engine.now(),
        };
        let created = store.insert_refund(&refund).await?;
        let refund = if created {
            refund
        } else {
            store
                .refunds(invoice_id)
                .await?
                .into_iter()
                .find(|r| r.idempotency_key == req.idempotency_key)
                .unwrap_or(refund)
        };
        let invoice = self.invoice_for_payment(invoice_id).await?.invoice;
        Ok(RefundOutcome {
            refund,
            created,
            invoice,
        })
    }

    async fn invoice_for_payment(&self, id: &str) -> Result<StoredInvoice, PaymentError> {
        self.store
            .billing()
            .get_invoice(id)
            .await?
            .ok_or_else(|| PaymentError::NotFound {
                what: "invoice",
                id: id.to_string(),
            })
    }

    /// Pays an invoice through `provider`: `manual` records `amount` (default:
    /// the amount due; partial payments allowed) with its `reference` at once;
    /// `stripe` creates a PaymentIntent for it, recorded when its
    /// `payment_intent.succeeded` webhook arrives.
    pub async fn pay_invoice(
        &self,
        provider: &dyn PaymentProvider,
        invoice_id: &str,
        amount: Option<Decimal>,
        reference: Option<&str>,
    ) -> Result<PayOutcome, PaymentError> {
        let stored = self.invoice_for_payment(invoice_id).await?;
        let invoice = stored.invoice;
        let amount = amount.unwrap_or(invoice.totals.amount_due);
        if amount > invoice.totals.amount_due {
            return Err(ProviderError::invalid(
                "amount",
                format!(
                    "{amount} is more than the amount due ({} {})",
                    invoice.totals.amount_due, invoice.currency
                ),
            )
            .into());
        }
        if provider.name() == "manual" {
            let Some(reference) = reference else {
                return Err(ProviderError::invalid(
                    "reference",
                    "a manual payment needs its reference (e.g. the bank transfer id)".to_string(),
                )
                .into());
            };
            let payment = provider.record_payment(&invoice, amount, reference).await?;
            let (recorded, created, invoice) = self.record(&invoice, &payment, None).await?;
            return Ok(PayOutcome {
                payment,
                recorded: Some(recorded),
                created,
                invoice,
            });
        }
        if !matches!(
            invoice.status,
            tollgate_core::billing::InvoiceStatus::Open
                | tollgate_core::billing::InvoiceStatus::Uncollectible
        ) {
            return Err(PaymentError::Refused(format!(
                "invoice {} is {}: only open or uncollectible invoices take payments",
                invoice.id,
                invoice.status.as_str()
            )));
        }
        // One PaymentIntent per invoice and amount due: a retried call gets the same.
        let key = format!("tollgate-{}-{}", invoice.id, amount);
        let payment = provider.create_payment(&invoice, amount, &key).await?;
        Ok(PayOutcome {
            payment,
            recorded: None,
            created: true,
            invoice,
        })
    }

    async fn record(
        &self,
        invoice: &Invoice,
        payment: &ProviderPayment,
        event_id: Option<&str>,
    ) -> Result<(PaymentRecord, bool, Invoice), PaymentError> {
        let outcome = self
            .record_payment(
                &invoice.id,
                &payment.provider,
                &payment.reference,
                Some(payment.amount_received),
                serde_json::json!({ "event_id": event_id }),
            )
            .await?;
        Ok((outcome.payment, outcome.created, outcome.invoice))
    }

    /// Applies a verified provider event. Safe to call again with the same
    /// event (Stripe retries deliveries): one payment, one credit per amount.
    pub async fn handle_provider_event(
        &self,
        provider: &str,
        event: &ProviderEvent,
    ) -> Result<EventOutcome, PaymentError> {
        let now = self.engine.now();
        let mut out = EventOutcome {
            event_id: event.event_id().to_string(),
            action: "ignored".to_string(),
            duplicate: false,
            invoice_id: None,
            payment_id: None,
            credit_note_id: None,
        };
        match event {
            ProviderEvent::PaymentSucceeded {
                payment_reference,
                invoice_id,
                amount,
                currency,
                event_id,
            } => {
                let Some(invoice_id) = invoice_id else {
                    out.action = "ignored: no tollgate_invoice_id in the metadata".to_string();
                    return self.remember(provider, out, now).await;
                };
                let invoice = self.invoice_for_payment(invoice_id).await?.invoice;
                let payment = ProviderPayment {
                    provider: provider.to_string(),
                    reference: payment_reference.clone(),
                    invoice_id: Some(invoice_id.clone()),
                    amount: *amount,
                    currency: *currency,
                    amount_received: *amount,
                    status: super::PaymentStatus::Succeeded,
                    client_secret: None,
                };
                let (record, created, _) = self.record(&invoice, &payment, Some(event_id)).await?;
                out.action = if created {
                    "payment_recorded"
                } else {
                    "already_processed"
                }
                .to_string();
                out.duplicate = !created;
                out.invoice_id = Some(invoice_id.clone());
                out.payment_id = Some(record.id);
            }
            ProviderEvent::PaymentFailed {
                invoice_id,
                message,
                payment_reference,
                ..
            } => {
                tracing::warn!(provider, payment_reference, message, "payment failed");
                out.action = "payment_failed".to_string();
                out.invoice_id = invoice_id.clone();
            }
            ProviderEvent::Refunded {
                payment_reference,
                invoice_id,
                amount_refunded,
                ..
            } => {
                let Some(invoice_id) = invoice_id else {
                    out.action = "ignored: no tollgate_invoice_id in the metadata".to_string();
                    return self.remember(provider, out, now).await;
                };
                out.invoice_id = Some(invoice_id.clone());
                let note = self
                    .credit_refund(invoice_id, payment_reference, *amount_refunded)
                    .await?;
                match note {
                    Some(n) => {
                        out.action = "credit_note_issued".to_string();
                        out.credit_note_id = Some(n.id);
                    }
                    None => {
                        out.action = "already_processed".to_string();
                        out.duplicate = true;
                    }
                }
            }
            ProviderEvent::Ignored { kind, .. } => {
                out.action = format!("ignored: {kind}");
            }
        }
        self.remember(provider, out, now).await
    }

    async fn remember(
        &self,
        provider: &str,
        mut out: EventOutcome,
        now: Timestamp,
    ) -> Result<EventOutcome, PaymentError> {
        let first = self
            .store
            .billing()
            .remember_provider_event(provider, &out.event_id, now)
            .await?;
        if !first {
            out.duplicate = true;
        }
        Ok(out)
    }

    /// Credits what a payment's cumulative refunds add beyond the refunds
    /// already credited for it (`None`: nothing new).
    async fn credit_refund(
        &self,
        invoice_id: &str,
        payment_reference: &str,
        amount_refunded: Decimal,
    ) -> Result<Option<CreditNote>, PaymentError> {
        let notes = self.store.billing().credit_notes(invoice_id).await?;
        let reason = format!("Refund of {payment_reference}");
        let refunded_before: Decimal = notes
            .iter()
            .filter(|n| n.reason == reason)
            .map(|n| n.total)
            .sum();
        let new = amount_refunded - refunded_before;
        if new <= Decimal::ZERO {
            return Ok(None);
        }
        let (note, _) = self
            .credit_invoice(invoice_id, &CreditRequest::Amount { amount: new }, &reason)
            .await?;
        Ok(Some(note))
    }
}
