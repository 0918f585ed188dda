//! Payment providers: manual payments, and Stripe against a local fake that
//! answers with Stripe's documented payloads.

mod fake_stripe;
mod sample;

use fake_stripe::{FakeStripe, SECRET_KEY, WEBHOOK_SECRET};
use jiff::Timestamp;
use reqwest::header::{HeaderMap, HeaderValue};
use rust_decimal_macros::dec;
use tollgate_billing::providers::stripe::{StripeConfig, StripeProvider, signature_header};
use tollgate_billing::providers::{
    PaymentProvider, PaymentStatus, ProviderError, ProviderEvent, Providers,
};
use tollgate_core::money::Currency;

type R = Result<(), Box<dyn std::error::Error>>;

fn signed(body: &[u8], secret: &str, t: i64) -> Result<HeaderMap, Box<dyn std::error::Error>> {
    let mut h = HeaderMap::new();
    h.insert(
        "stripe-signature",
        HeaderValue::from_str(&signature_header(secret, t, body))?,
    );
    Ok(h)
}

async fn stripe() -> Result<(FakeStripe, StripeProvider), Box<dyn std::error::Error>> {
    let fake = FakeStripe::start().await?;
    let provider = StripeProvider::new(StripeConfig::new(
        SECRET_KEY,
        WEBHOOK_SECRET,
        &fake.base_url,
    ))?;
    Ok((fake, provider))
}

#[tokio::test]
async fn manual_payments_take_a_reference_and_partial_amounts() -> R {
    let providers = Providers::new(None)?;
    let manual = providers.get("manual").ok_or("manual provider")?;
    assert!(providers.get("stripe").is_none());
    let invoice = sample::invoice()?;
    let part = manual
        .record_payment(&invoice, dec!(500.00), "BANK-2026-1187")
        .await?;
    assert_eq!(part.status, PaymentStatus::Succeeded);
    assert_eq!(part.amount_received, dec!(500.00));
    assert_eq!(part.reference, "BANK-2026-1187");
    // No reference, zero or sub-cent amounts: refused, naming the field.
    match manual.record_payment(&invoice, dec!(5), " ").await {
        Err(ProviderError::Invalid { field, .. }) => assert_eq!(field, "reference"),
        other => panic!("blank reference accepted: {other:?}"),
    }
    match manual.record_payment(&invoice, dec!(0.001), "X").await {
        Err(ProviderError::Invalid { field, .. }) => assert_eq!(field, "amount"),
        other => panic!("0.001 USD accepted: {other:?}"),
    }
    assert!(
        manual
            .verify_webhook(&HeaderMap::new(), b"{}", Timestamp::now())
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn stripe_payment_intent_for_the_amount_due_in_minor_units() -> R {
    let (fake, stripe) = stripe().await?;
    let invoice = sample::invoice()?;
    let payment = stripe
        .create_payment(&invoice, invoice.totals.amount_due, "inv_01JD7Q3-pay-1")
        .await?;
    assert_eq!(payment.amount, dec!(1309.77));
    assert_eq!(payment.currency, Currency::USD);
    assert_eq!(payment.status, PaymentStatus::Pending);
    assert_eq!(payment.invoice_id.as_deref(), Some("inv_01JD7Q3"));
    assert!(payment.client_secret.is_some());
    {
        let s = fake.state();
        assert_eq!(s.intents.len(), 1);
        assert_eq!(s.intents[0]["amount"], 130977);
        assert_eq!(s.intents[0]["currency"], "usd");
        assert_eq!(s.customers.len(), 1);
        assert_eq!(s.customers[0]["name"], "Smith & Sons <Ltd>");
    }
    // Retried with the same idempotency key: the same intent.
    let again = stripe
        .create_payment(&invoice, invoice.totals.amount_due, "inv_01JD7Q3-pay-1")
        .await?;
    assert_eq!(again.reference, payment.reference);
    // A second payment reuses the Stripe customer (found by metadata).
    let second = stripe
        .create_payment(&invoice, dec!(9.99), "inv_01JD7Q3-pay-2")
        .await?;
    assert_ne!(second.reference, payment.reference);
    {
        let s = fake.state();
        assert_eq!(s.intents.len(), 2);
        assert_eq!(s.customers.len(), 1);
    }

    // Paid: status reads it back; a refund of 100.00 is 10000 minor units.
    fake.succeed(&payment.reference, 0).ok_or("no intent")?;
    let status = stripe.status(&payment.reference).await?;
    assert_eq!(status.status, PaymentStatus::Succeeded);
    assert_eq!(status.amount_received, dec!(1309.77));
    let synced = stripe
        .record_payment(&invoice, dec!(1309.77), &payment.reference)
        .await?;
    assert_eq!(synced.status, PaymentStatus::Succeeded);
    let refund = stripe
        .refund(
            &payment.reference,
            Some(dec!(100)),
            Currency::USD,
            "refund-1",
        )
        .await?;
    assert_eq!(refund.amount, dec!(100.00));
    assert_eq!(refund.status, PaymentStatus::Succeeded);
    assert_eq!(fake.state().refunds[0]["amount"], 10000);
    Ok(())
}

#[tokio::test]
async fn stripe_zero_decimal_currency_is_sent_in_yen() -> R {
    let (fake, stripe) = stripe().await?;
    let invoice = sample::jpy_invoice()?;
    stripe
        .create_payment(&invoice, invoice.totals.amount_due, "jpy-1")
        .await?;
    assert_eq!(fake.state().intents[0]["amount"], 12100);
    assert_eq!(fake.state().intents[0]["currency"], "jpy");
    Ok(())
}

#[tokio::test]
async fn stripe_errors_are_typed() -> R {
    let fake = FakeStripe::start().await?;
    let wrong_key = StripeProvider::new(StripeConfig::new(
        "sk_test_wrong",
        WEBHOOK_SECRET,
        &fake.base_url,
    ))?;
    match wrong_key.status("pi_123").await {
        Err(ProviderError::Api { status, code, .. }) => {
            assert_eq!(status, 401);
            assert_eq!(code.as_deref(), Some("api_key_invalid"));
        }
        other => panic!("expected a 401 from Stripe: {other:?}"),
    }
    let (_fake, stripe) = stripe().await?;
    match stripe.status("pi_missing").await {
        Err(ProviderError::Api { status, .. }) => assert_eq!(status, 404),
        other => panic!("expected a 404 from Stripe: {other:?}"),
    }
    // Nothing listens there: a transport error, not a panic.
    let gone = StripeProvider::new(StripeConfig::new(
        SECRET_KEY,
        WEBHOOK_SECRET,
        "http://127.0.0.1:9",
    ))?;
    assert!(matches!(
        gone.status("pi_1").await,
        Err(ProviderError::Transport { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn stripe_webhooks_are_verified_and_typed() -> R {
    let (fake, stripe) = stripe().await?;
    let invoice = sample::invoice()?;
    let payment = stripe
        .create_payment(&invoice, invoice.totals.amount_due, "k1")
        .await?;
    let now: Timestamp = "2026-12-02T10:00:00Z".parse()?;
    let t = now.as_second();
    let event = fake.succeed(&payment.reference, t).ok_or("no intent")?;
    let body = serde_json::to_vec(&event)?;

    match stripe.verify_webhook(&signed(&body, WEBHOOK_SECRET, t)?, &body, now)? {
        ProviderEvent::PaymentSucceeded {
            payment_reference,
            invoice_id,
            amount,
            currency,
            event_id,
        } => {
            assert_eq!(payment_reference, payment.reference);
            assert_eq!(invoice_id.as_deref(), Some("inv_01JD7Q3"));
            assert_eq!(amount, dec!(1309.77));
            assert_eq!(currency, Currency::USD);
            assert!(event_id.starts_with("evt_"));
        }
        other => panic!("expected payment_intent.succeeded: {other:?}"),
    }

    // Wrong secret, tampered body, stale or future timestamp, missing header.
    let rejected = |h: HeaderMap, b: &[u8], at: Timestamp| {
        matches!(
            stripe.verify_webhook(&h, b, at),
            Err(ProviderError::Signature(_))
        )
    };
    assert!(rejected(signed(&body, "whsec_other", t)?, &body, now));
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert!(rejected(signed(&body, WEBHOOK_SECRET, t)?, &tampered, now));
    assert!(rejected(
        signed(&body, WEBHOOK_SECRET, t - 301)?,
        &body,
        now
    ));
    assert!(rejected(
        signed(&body, WEBHOOK_SECRET, t + 301)?,
        &body,
        now
    ));
    assert!(!rejected(
        signed(&body, WEBHOOK_SECRET, t - 299)?,
        &body,
        now
    ));
    assert!(rejected(HeaderMap::new(), &body, now));
    // A rotated secret: any v1 may match.
    let mut h = HeaderMap::new();
    let good = signature_header(WEBHOOK_SECRET, t, &body);
    let v1 = good.split_once(",v1=").map(|(_, v)| v).ok_or("v1")?;
    h.insert(
        "stripe-signature",
        HeaderValue::from_str(&format!("t={t},v1={},v1={v1}", "00".repeat(32)))?,
    );
    assert!(!rejected(h, &body, now));

    // Failure and refund events.
    let failed = serde_json::to_vec(&fake.fail(&payment.reference, t).ok_or("pi")?)?;
    match stripe.verify_webhook(&signed(&failed, WEBHOOK_SECRET, t)?, &failed, now)? {
        ProviderEvent::PaymentFailed { message, .. } => {
            assert_eq!(message, "Your card was declined.")
        }
        other => panic!("expected payment_failed: {other:?}"),
    }
    let refunded = serde_json::to_vec(&fake.refunded(&payment.reference, 5000, t).ok_or("pi")?)?;
    match stripe.verify_webhook(&signed(&refunded, WEBHOOK_SECRET, t)?, &refunded, now)? {
        ProviderEvent::Refunded {
            payment_reference,
            amount_refunded,
            ..
        } => {
            assert_eq!(payment_reference, payment.reference);
            assert_eq!(amount_refunded, dec!(50.00));
        }
        other => panic!("expected charge.refunded: {other:?}"),
    }
    let other = br#"{"id":"evt_x","type":"customer.created","data":{"object":{}}}"#;
    assert_eq!(
        stripe.verify_webhook(&signed(other, WEBHOOK_SECRET, t)?, other, now)?,
        ProviderEvent::Ignored {
            event_id: "evt_x".to_string(),
            kind: "customer.created".to_string()
        }
    );
    Ok(())
}
