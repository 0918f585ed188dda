//! Stripe: PaymentIntents over Stripe's REST API (form-encoded requests,
//! `Authorization: Bearer <secret key>`, an `Idempotency-Key` on every POST),
//! and Stripe's signed webhooks.
//!
//! - The Stripe customer of a Tollgate customer is found by the metadata
//!   `tollgate_customer` (`GET /v1/customers/search`), created when missing.
//! - A payment is a PaymentIntent for the amount due in minor units
//!   (`amount=130977&currency=usd`), with `metadata[tollgate_invoice_id]`, so
//!   its webhooks name the invoice.
//! - Webhooks: `Stripe-Signature: t=<unix seconds>,v1=<hex>` where the hex is
//!   HMAC-SHA256 of `"<t>.<raw body>"` keyed with the endpoint secret; any `v1`
//!   may match (secret rotation), compared in constant time, and `t` must be
//!   within the tolerance (300 s by default) of the injected clock.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use reqwest::header::HeaderMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tollgate_core::billing::Invoice;
use tollgate_core::money::{Currency, Money};

use super::{
    PaymentProvider, PaymentStatus, ProviderError, ProviderEvent, ProviderPayment, ProviderRefund,
    check_amount,
};

const NAME: &str = "stripe";

/// `[billing.stripe]` in the server configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// `sk_live_…` / `sk_test_…`.
    pub secret_key: String,
    /// The webhook endpoint's signing secret, `whsec_…`.
    pub webhook_secret: String,
    /// Stripe's API root (tests point it at a local fake).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// How far a webhook's `t=` may be from now.
    #[serde(default = "default_tolerance")]
    pub webhook_tolerance_secs: u64,
    /// Per request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_base_url() -> String {
    "https://api.stripe.com".to_string()
}
fn default_tolerance() -> u64 {
    300
}
fn default_timeout() -> u64 {
    20
}

impl StripeConfig {
    pub fn new(secret_key: &str, webhook_secret: &str, base_url: &str) -> StripeConfig {
        StripeConfig {
            secret_key: secret_key.to_string(),
            webhook_secret: webhook_secret.to_string(),
            base_url: base_url.to_string(),
            webhook_tolerance_secs: default_tolerance(),
            timeout_secs: default_timeout(),
        }
    }
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field("secret_key", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .finish()
    }
}

#[derive(Debug)]
pub struct StripeProvider {
    config: StripeConfig,
    http: reqwest::Client,
}

fn transport(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Transport {
        provider: NAME.to_string(),
        message: e.to_string(),
    }
}

fn signature(message: &str) -> ProviderError {
    ProviderError::Signature(message.to_string())
}

/// Integer minor units of a major-unit amount (1,309.77 USD → 130977).
fn minor_units(field: &str, amount: Decimal, currency: Currency) -> Result<i64, ProviderError> {
    Money::new(amount, currency)
        .to_minor_units()
        .map_err(|e| ProviderError::invalid(field, e.to_string()))
}

fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// A major-unit amount from a Stripe object's minor-unit field and currency.
fn amount_of(object: &Value, key: &str) -> Result<(Decimal, Currency), ProviderError> {
    let code = str_field(object, "currency").ok_or_else(|| transport("no currency in object"))?;
    let currency = Currency::from_code(code).map_err(transport)?;
    let units = object
        .get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| transport(format!("no integer {key} in object")))?;
    Ok((Money::from_minor_units(units, currency).amount, currency))
}

fn invoice_of(object: &Value) -> Option<String> {
    object
        .get("metadata")
        .and_then(|m| str_field(m, "tollgate_invoice_id"))
        .map(str::to_string)
}

fn status_of(s: &str) -> PaymentStatus {
    match s {
        "succeeded" => PaymentStatus::Succeeded,
        "processing" | "requires_capture" | "pending" => PaymentStatus::Processing,
        "requires_action" => PaymentStatus::RequiresAction,
        "canceled" => PaymentStatus::Canceled,
        "failed" => PaymentStatus::Failed,
        _ => PaymentStatus::Pending,
    }
}

/// A PaymentIntent object as a [`ProviderPayment`].
fn payment_of(pi: &Value) -> Result<ProviderPayment, ProviderError> {
    let (amount, currency) = amount_of(pi, "amount")?;
    let (amount_received, _) =
        amount_of(pi, "amount_received").unwrap_or((Decimal::ZERO, currency));
    Ok(ProviderPayment {
        provider: NAME.to_string(),
        reference: str_field(pi, "id")
            .ok_or_else(|| transport("PaymentIntent without id"))?
            .to_string(),
        invoice_id: invoice_of(pi),
        amount,
        currency,
        amount_received,
        status: status_of(str_field(pi, "status").unwrap_or("")),
        client_secret: str_field(pi, "client_secret").map(str::to_string),
    })
}

/// Single-quoted value in Stripe's search query language.
fn search_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl StripeProvider {
    pub fn new(config: StripeConfig) -> Result<StripeProvider, ProviderError> {
        if config.secret_key.trim().is_empty() {
            return Err(ProviderError::invalid(
                "billing.stripe.secret_key",
                "must not be empty".to_string(),
            ));
        }
        if config.webhook_secret.trim().is_empty() {
            return Err(ProviderError::invalid(
                "billing.stripe.webhook_secret",
                "must not be empty".to_string(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(transport)?;
        Ok(StripeProvider { config, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// Sends a request; a Stripe error object becomes [`ProviderError::Api`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ProviderError> {
        let response = request
            .bearer_auth(&self.config.secret_key)
            .header("Stripe-Version", "2024-06-20")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(transport)?;
        if status.is_success() {
            return Ok(body);
        }
        let error = body.get("error").cloned().unwrap_or(Value::Null);
        Err(ProviderError::Api {
            provider: NAME.to_string(),
            status: status.as_u16(),
            kind: str_field(&error, "type").unwrap_or("api_error").to_string(),
            code: str_field(&error, "code").map(str::to_string),
            message: str_field(&error, "message")
                .unwrap_or("no message")
                .to_string(),
        })
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ProviderError> {
        self.send(self.http.get(self.url(path)).query(query)).await
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<Value, ProviderError> {
        self.send(
            self.http
                .post(self.url(path))
                .header("Idempotency-Key", idempotency_key)
                .form(form),
        )
        .await
    }

    /// The Stripe customer (`cus_…`) of the invoice's customer: found by its
    /// `tollgate_customer` metadata, created (name, e-mail) when missing.
    pub async fn ensure_customer(&self, invoice: &Invoice) -> Result<String, ProviderError> {
        let query = format!(
            "metadata['tollgate_customer']:{}",
            search_literal(&invoice.customer_id)
        );
        let found = self
            .get("/v1/customers/search", &[("query", query.as_str())])
            .await?;
        if let Some(id) = found
            .get("data")
            .and_then(Value::as_array)
            .and_then(|d| d.first())
            .and_then(|c| str_field(c, "id"))
        {
            return Ok(id.to_string());
        }
        let mut form = vec![
            ("name", invoice.bill_to.name.clone()),
            ("metadata[tollgate_customer]", invoice.customer_id.clone()),
        ];
        if let Some(email) = &invoice.bill_to.email {
            form.push(("email", email.clone()));
        }
        let created = self
            .post(
                "/v1/customers",
                &form,
                &format!("tollgate-customer-{}", invoice.customer_id),
            )
            .await?;
        str_field(&created, "id")
            .map(str::to_string)
            .ok_or_else(|| transport("customer without id"))
    }

    fn check_signature(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(), ProviderError> {
        let header = headers
            .get("stripe-signature")
            .ok_or_else(|| signature("no Stripe-Signature header"))?
            .to_str()
            .map_err(|_| signature("Stripe-Signature is not text"))?;
        let mut t = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => t = value.parse::<i64>().ok(),
                Some(("v1", value)) => v1.push(value),
                _ => {}
            }
        }
        let t = t.ok_or_else(|| signature("no t= timestamp in Stripe-Signature"))?;
        if v1.is_empty() {
            return Err(signature("no v1= signature in Stripe-Signature"));
        }
        let age = now.as_second().saturating_sub(t).unsigned_abs();
        if age > self.config.webhook_tolerance_secs {
            return Err(signature(&format!(
                "timestamp is {age} s away from now (tolerance {} s)",
                self.config.webhook_tolerance_secs
            )));
        }
        let expected = sign(&self.config.webhook_secret, t, body);
        let ok = v1.iter().any(|candidate| {
            hex::decode(candidate)
                .map(|c| c.ct_eq(&expected).into())
                .unwrap_or(false)
        });
        if !ok {
            return Err(signature("no v1 signature matches the endpoint secret"));
        }
        Ok(())
    }
}

/// HMAC-SHA256 of `"<t>.<body>"` with the endpoint secret: what Stripe puts
/// (hex) in `v1=`. Public so tests and tools can sign fake deliveries.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this branch cannot be taken.
        return Vec::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The `Stripe-Signature` header value for `body` signed at `t`.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(sign(secret, t, body)))
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// A PaymentIntent for `amount` (`automatic_payment_methods[enabled]`),
    /// for the invoice's Stripe customer; its `client_secret` is returned for
    /// a client-side confirmation.
    async fn create_payment(
        &self,
        invoice: &Invoice,
        amount: Decimal,
        idempotency_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        check_amount("amount", amount, invoice.currency)?;
        let units = minor_units("amount", amount, invoice.currency)?;
        let customer = self.ensure_customer(invoice).await?;
        let number = invoice.number.clone().unwrap_or_else(|| invoice.id.clone());
        let form = vec![
            ("amount", units.to_string()),
            ("currency", invoice.currency.code().to_ascii_lowercase()),
            ("customer", customer),
            ("description", format!("Invoice {number}")),
            ("automatic_payment_methods[enabled]", "true".to_string()),
            ("metadata[tollgate_invoice_id]", invoice.id.clone()),
            ("metadata[tollgate_invoice_number]", number),
            ("metadata[tollgate_customer]", invoice.customer_id.clone()),
        ];
        let pi = self
            .post("/v1/payment_intents", &form, idempotency_key)
            .await?;
        payment_of(&pi)
    }

    /// Reads the PaymentIntent `reference` back and checks it is this
    /// invoice's (a reconciliation path besides webhooks).
    async fn record_payment(
        &self,
        invoice: &Invoice,
        _amount: Decimal,
        reference: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let payment = self.status(reference).await?;
        if payment.invoice_id.as_deref() != Some(invoice.id.as_str()) {
            return Err(ProviderError::invalid(
                "reference",
                format!(
                    "PaymentIntent {reference} is not for invoice {}",
                    invoice.id
                ),
            ));
        }
        Ok(payment)
    }

    async fn refund(
        &self,
        payment_reference: &str,
        amount: Option<Decimal>,
        currency: Currency,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let mut form = vec![("payment_intent", payment_reference.to_string())];
        if let Some(amount) = amount {
            check_amount("amount", amount, currency)?;
            form.push((
                "amount",
                minor_units("amount", amount, currency)?.to_string(),
            ));
        }
        let refund = self.post("/v1/refunds", &form, idempotency_key).await?;
        let (amount, currency) = amount_of(&refund, "amount")?;
        Ok(ProviderRefund {
            provider: NAME.to_string(),
            reference: str_field(&refund, "id")
                .ok_or_else(|| transport("refund without id"))?
                .to_string(),
            payment_reference: payment_reference.to_string(),
            amount,
            currency,
            status: status_of(str_field(&refund, "status").unwrap_or("")),
        })
    }

    async fn status(&self, payment_reference: &str) -> Result<ProviderPayment, ProviderError> {
        if payment_reference.is_empty()
            || !payment_reference
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ProviderError::invalid(
                "reference",
                "a Stripe PaymentIntent id (pi_…)".to_string(),
            ));
        }
        let pi = self
            .get(&format!("/v1/payment_intents/{payment_reference}"), &[])
            .await?;
        payment_of(&pi)
    }

    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<ProviderEvent, ProviderError> {
        self.check_signature(headers, body, now)?;
        let event: Value = serde_json::from_slice(body)
            .map_err(|e| signature(&format!("signed body is not a JSON event: {e}")))?;
        let event_id = str_field(&event, "id")
            .ok_or_else(|| signature("event without id"))?
            .to_string();
        let kind = str_field(&event, "type").unwrap_or("").to_string();
        let object = event
            .get("data")
            .and_then(|d| d.get("object"))
            .cloned()
            .unwrap_or(Value::Null);
        let reference = |key: &str| -> Result<String, ProviderError> {
            str_field(&object, key)
                .map(str::to_string)
                .ok_or_else(|| transport(format!("{kind} event without {key}")))
        };
        Ok(match kind.as_str() {
            "payment_intent.succeeded" => {
                let (amount, currency) = amount_of(&object, "amount_received")?;
                ProviderEvent::PaymentSucceeded {
                    event_id,
                    payment_reference: reference("id")?,
                    invoice_id: invoice_of(&object),
                    amount,
                    currency,
                }
            }
            "payment_intent.payment_failed" => ProviderEvent::PaymentFailed {
                event_id,
                payment_reference: reference("id")?,
                invoice_id: invoice_of(&object),
                message: object
                    .get("last_payment_error")
                    .and_then(|e| str_field(e, "message"))
                    .unwrap_or("payment failed")
                    .to_string(),
            },
            "charge.refunded" => {
                let (amount_refunded, currency) = amount_of(&object, "amount_refunded")?;
                ProviderEvent::Refunded {
                    event_id,
                    payment_reference: reference("payment_intent")?,
                    invoice_id: invoice_of(&object),
                    amount_refunded,
                    currency,
                }
            }
            _ => ProviderEvent::Ignored { event_id, kind },
        })
    }
}
