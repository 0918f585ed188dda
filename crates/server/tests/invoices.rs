//! The invoice API over real HTTP, on SQLite and PostgreSQL: draft edits,
//! issue, documents (HTML, PDF), payments (manual, partial, repeated
//! references; Stripe through a local fake and its signed webhook), void,
//! uncollectible, credit notes, reports, and customer-key isolation.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../billing/tests/fake_stripe/mod.rs"]
mod fake_stripe;

use common::*;
use fake_stripe::{FakeStripe, SECRET_KEY, WEBHOOK_SECRET};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_billing::providers::stripe::{StripeConfig, signature_header};
use tollgate_core::billing::{Invoice, InvoiceLine, InvoiceLineKind, Party, TaxMode, TaxRule};
use tollgate_core::money::Currency;
use tollgate_core::period::Period;
use tollgate_server::config::Settings;
use tollgate_store::billing::{InvoiceKind, NewInvoice};

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A draft for `customer`: the Pro base price, 20.00, VAT 20 % per line.
async fn draft(srv: &TestServer, id: &str, customer: &str) -> Invoice {
    let start = ts("2025-01-01T00:00:00Z");
    let end = ts("2025-02-01T00:00:00Z");
    let base = InvoiceLine::fee(
        InvoiceLineKind::Base,
        "Pro plan (monthly)",
        start,
        end,
        dec("20"),
        Currency::USD,
    );
    let mut inv = Invoice::off_cycle(
        id.to_string(),
        customer.to_string(),
        Currency::USD,
        Period::new(start, end).unwrap(),
        vec![base],
        TaxRule {
            rate: dec("0.2"),
            mode: TaxMode::PerLine,
            label: "VAT".to_string(),
        },
        srv.engine.now(),
    );
    inv.issuer = Party {
        name: "Tollgate Test Ltd".into(),
        ..Party::default()
    };
    inv.bill_to = Party {
        name: format!("{customer} & Co <b>"),
        email: Some(format!("{customer}@example.test")),
        ..Party::default()
    };
    srv.state
        .store
        .billing()
        .insert_invoice(&NewInvoice {
            invoice: inv.clone(),
            kind: InvoiceKind::Cycle,
            pending_items: Vec::new(),
        })
        .await
        .unwrap();
    inv
}

fn pdf_text(bytes: &[u8]) -> String {
    let doc = lopdf::Document::load_mem(bytes).unwrap();
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    doc.extract_text(&pages).unwrap()
}

async fn raw(srv: &TestServer, path: &str, key: &str) -> (u16, String, Vec<u8>) {
    let r = srv
        .client
        .get(srv.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_lifecycle_documents_and_payments() {
    for backend in backends("invoices") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let admin = srv.admin_key.clone();
        srv.customer("acme", Some("pro")).await;
        srv.customer("globex", Some("business")).await;
        draft(&srv, "inv_acme_1", "acme").await;
        draft(&srv, "inv_globex_1", "globex").await;

        // A draft: add a manual line (rounded once: 25.005 → 25.01), adjust it.
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/lines",
                &admin,
                json!({"description": "Onboarding <setup>", "amount": "25.005"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["invoice"]["lines"][1]["amount"], "25.01");
        // 20.00 + 25.01 = 45.01; VAT 4.00 + 5.00 (25.01 × 0.2 = 5.002) = 9.00.
        assert_eq!(r.body["invoice"]["totals"]["total"], "54.01", "{r}");
        let r = srv
            .patch(
                "/v1/invoices/inv_acme_1/lines/1",
                &admin,
                json!({"amount": "30"}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        // 20.00 + 30.00 = 50.00; VAT 4.00 + 6.00 = 10.00; total 60.00.
        assert_eq!(r.body["invoice"]["totals"]["subtotal"], "50.00");
        assert_eq!(r.body["invoice"]["totals"]["tax"], "10.00");
        assert_eq!(r.body["invoice"]["totals"]["total"], "60.00");
        let r = srv
            .patch(
                "/v1/invoices/inv_acme_1/lines/7",
                &admin,
                json!({"amount": "1"}),
            )
            .await;
        assert_eq!(r.status, 404, "{r}");
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/lines",
                &admin,
                json!({"description": " ", "amount": "1"}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), vec!["description"]);
        // A draft takes no payment.
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &admin,
                json!({"reference": "X"}),
            )
            .await;
        assert_eq!(r.status, 409, "{r}");

        // Issue: numbered, due in 30 days; issuing again changes nothing.
        let r = srv
            .post("/v1/invoices/inv_acme_1/issue", &admin, json!({}))
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["invoice"]["number"], "INV-000001");
        assert_eq!(r.body["invoice"]["status"], "open");
        assert_eq!(r.body["invoice"]["due_at"], "2025-02-14T12:00:00Z");
        let r = srv
            .post("/v1/invoices/inv_acme_1/issue", &admin, json!({}))
            .await;
        assert_eq!(r.body["invoice"]["number"], "INV-000001");
        let r = srv
            .post("/v1/invoices/inv_globex_1/issue", &admin, json!({}))
            .await;
        assert_eq!(r.body["invoice"]["number"], "INV-000002");
        // Issued invoices never change.
        let r = srv
            .patch(
                "/v1/invoices/inv_acme_1/lines/0",
                &admin,
                json!({"amount": "1"}),
            )
            .await;
        assert_eq!(r.status, 409, "{r}");

        // Documents.
        let (status, ct, html) = raw(&srv, "/v1/invoices/inv_acme_1/html", &admin).await;
        assert_eq!(status, 200);
        assert_eq!(ct, "text/html; charset=utf-8");
        let html = String::from_utf8(html).unwrap();
        assert!(html.contains("INV-000001"));
        assert!(html.contains("Onboarding &lt;setup&gt;"), "escaped line");
        assert!(html.contains("acme &amp; Co &lt;b&gt;"), "escaped customer");
        assert!(html.contains("USD 60.00"));
        let (status, ct, pdf) = raw(&srv, "/v1/invoices/inv_acme_1/pdf", &admin).await;
        assert_eq!(status, 200);
        assert_eq!(ct, "application/pdf");
        let text = pdf_text(&pdf);
        assert!(
            text.contains("INV-000001") && text.contains("USD 60.00"),
            "{text}"
        );

        // Explain: every line, its amount and (usage lines) its ledger totals.
        let r = srv.get("/v1/invoices/inv_acme_1/explain", &admin).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["lines"].as_array().unwrap().len(), 2);
        assert_eq!(r.body["lines"][1]["kind"], "adjustment");

        // Lists and filters.
        let r = srv
            .get("/v1/invoices?status=open&period=2025-01", &admin)
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
        let r = srv.get("/v1/invoices?limit=1", &admin).await;
        assert_eq!(r.body["has_more"], true);
        let next = r.body["next_cursor"].as_str().unwrap().to_string();
        let r = srv
            .get(
                &format!("/v1/invoices?limit=1&starting_after={next}"),
                &admin,
            )
            .await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
        assert_eq!(r.body["has_more"], false);
        let r = srv.get("/v1/invoices?period=2025-02", &admin).await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 0);
        let r = srv.get("/v1/invoices?status=late", &admin).await;
        assert_eq!(r.status, 422);
        assert_eq!(r.error_fields(), vec!["status"]);
        let r = srv.get("/v1/invoices?period=2025-13", &admin).await;
        assert_eq!(r.error_fields(), vec!["period"]);
        let r = srv.get("/v1/customers/globex/invoices", &admin).await;
        assert_eq!(r.body["data"][0]["id"], "inv_globex_1");

        // A customer key sees its own invoices only.
        let acme_key = srv.customer_key("acme").await;
        // The upcoming invoice: a preview of the current period (Pro, 20.00).
        let r = srv
            .get("/v1/customers/acme/upcoming-invoice", &acme_key)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["invoice"]["status"], "draft");
        assert!(r.body["invoice"]["number"].is_null());
        assert_eq!(r.body["invoice"]["lines"][0]["amount"], "20.00", "{r}");
        let r = srv
            .get("/v1/customers/globex/upcoming-invoice", &acme_key)
            .await;
        assert_eq!(r.status, 404, "{r}");
        let r = srv.get("/v1/invoices", &acme_key).await;
        let ids: Vec<&str> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["inv_acme_1"]);
        assert_eq!(
            srv.get("/v1/invoices/inv_acme_1", &acme_key).await.status,
            200
        );
        let r = srv.get("/v1/invoices/inv_globex_1", &acme_key).await;
        assert_eq!(r.status, 404, "{r}");
        assert!(!r.body.to_string().contains("globex &"), "{r}");
        assert_eq!(
            raw(&srv, "/v1/invoices/inv_globex_1/pdf", &acme_key)
                .await
                .0,
            404
        );
        assert_eq!(
            srv.get("/v1/invoices?customer=globex", &acme_key)
                .await
                .status,
            404
        );
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &acme_key,
                json!({"reference": "X"}),
            )
            .await;
        assert_eq!(r.status, 403, "{r}");

        // Manual payments: partial, a repeated reference counts once, no
        // overpayment, a reference is required.
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &admin,
                json!({"amount": "25.00", "reference": "BANK-1"}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["created"], true);
        assert_eq!(r.body["invoice"]["totals"]["amount_due"], "35.00");
        assert_eq!(r.body["invoice"]["status"], "open");
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &admin,
                json!({"amount": "25.00", "reference": "BANK-1"}),
            )
            .await;
        assert_eq!(r.body["created"], false, "{r}");
        assert_eq!(r.body["invoice"]["totals"]["amount_due"], "35.00");
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &admin,
                json!({"amount": "35.01", "reference": "BANK-2"}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), vec!["amount"]);
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &admin,
                json!({"amount": "1.00"}),
            )
            .await;
        assert_eq!(r.error_fields(), vec!["reference"]);
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &admin,
                json!({"provider": "paypal", "reference": "x"}),
            )
            .await;
        assert_eq!(r.error_fields(), vec!["provider"]);
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/pay",
                &admin,
                json!({"reference": "BANK-2"}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["invoice"]["status"], "paid");
        assert_eq!(r.body["invoice"]["totals"]["amount_paid"], "60.00");
        let r = srv.get("/v1/invoices/inv_acme_1", &admin).await;
        assert_eq!(r.body["payments"].as_array().unwrap().len(), 2);
        let (_, _, html) = raw(&srv, "/v1/invoices/inv_acme_1/html", &admin).await;
        assert!(String::from_utf8(html).unwrap().contains(">PAID</div>"));

        // Paid invoices are not voided; they are credited.
        let r = srv
            .post("/v1/invoices/inv_acme_1/void", &admin, json!({}))
            .await;
        assert_eq!(r.status, 409, "{r}");
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/credit-notes",
                &admin,
                json!({"type": "amount", "amount": "12.00", "reason": "Outage"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        assert_eq!(r.body["credit_note"]["number"], "CN-000001");
        assert_eq!(r.body["credit_note"]["total"], "12.00");
        assert_eq!(r.body["invoice"]["totals"]["amount_credited"], "12.00");
        let cn = r.body["credit_note"]["id"].as_str().unwrap().to_string();
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/credit-notes",
                &admin,
                json!({"type": "full", "reason": "Goodwill"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        assert_eq!(r.body["credit_note"]["number"], "CN-000002");
        assert_eq!(r.body["credit_note"]["total"], "48.00");
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/credit-notes",
                &admin,
                json!({"type": "full", "reason": "Again"}),
            )
            .await;
        assert_eq!(r.status, 409, "{name}: nothing left to credit: {r}");
        let r = srv
            .post(
                "/v1/invoices/inv_acme_1/credit-notes",
                &admin,
                json!({"type": "half", "reason": "x"}),
            )
            .await;
        assert_eq!(r.error_fields(), vec!["type"]);
        let r = srv
            .get("/v1/invoices/inv_acme_1/credit-notes", &admin)
            .await;
        assert_eq!(r.body.as_array().unwrap().len(), 2);
        let (status, ct, pdf) = raw(&srv, &format!("/v1/credit-notes/{cn}/pdf"), &acme_key).await;
        assert_eq!((status, ct.as_str()), (200, "application/pdf"));
        assert!(pdf_text(&pdf).contains("CN-000001"));

        // Uncollectible, then void; reports.
        let r = srv
            .post(
                "/v1/invoices/inv_globex_1/mark-uncollectible",
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(r.body["invoice"]["status"], "uncollectible", "{r}");
        srv.clock.advance(jiff::SignedDuration::from_hours(24 * 31));
        let r = srv.get("/v1/admin/billing/outstanding", &admin).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["currencies"][0]["currency"], "USD");
        assert_eq!(r.body["currencies"][0]["invoices"], 1);
        assert_eq!(r.body["currencies"][0]["amount_due"], "24.00");
        // Uncollectible is not "open": not counted overdue.
        assert_eq!(r.body["currencies"][0]["overdue_invoices"], 0);
        let r = srv.get("/v1/admin/billing/revenue?by=month", &admin).await;
        assert_eq!(r.status, 200, "{r}");
        // Jan 2025: 60.00 + 24.00 invoiced, 60.00 paid, 60.00 credited.
        assert_eq!(r.body[0]["month"], "2025-01");
        assert_eq!(r.body[0]["invoices"], 2);
        assert_eq!(r.body[0]["invoiced"], "84.00");
        assert_eq!(r.body[0]["tax"], "14.00");
        assert_eq!(r.body[0]["paid"], "60.00");
        assert_eq!(r.body[0]["credited"], "60.00");
        assert_eq!(r.body[0]["net"], "24.00");
        let r = srv.get("/v1/admin/billing/revenue?by=week", &admin).await;
        assert_eq!(r.error_fields(), vec!["by"]);
        let r = srv
            .post("/v1/invoices/inv_globex_1/void", &admin, json!({}))
            .await;
        assert_eq!(r.body["invoice"]["status"], "void", "{r}");
        assert_eq!(
            r.body["invoice"]["number"], "INV-000002",
            "a void keeps its number"
        );
        let r = srv.get("/v1/admin/billing/outstanding", &admin).await;
        assert_eq!(r.body["currencies"].as_array().unwrap().len(), 0, "{r}");
        // MRR: Pro 20 + Business 100.
        let r = srv.get("/v1/admin/billing/mrr", &admin).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body[0]["mrr"], "120.00", "{r}");
        assert_eq!(r.body[0]["subscriptions"], 2);
        assert_eq!(
            srv.get("/v1/admin/billing/mrr", &acme_key).await.status,
            403
        );
        srv.stop().await;
    }
}

async fn webhook(srv: &TestServer, body: &Value, signature: Option<String>) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap();
    let t = srv.engine.now().as_second();
    let sig = signature.unwrap_or_else(|| signature_header(WEBHOOK_SECRET, t, &bytes));
    let r = srv
        .client
        .post(srv.url("/v1/providers/stripe/webhook"))
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(bytes)
        .send()
        .await
        .unwrap();
    TestServer::reply(r).await
}

/// The server with `[billing.stripe]` pointing at a fresh fake Stripe.
async fn with_fake_stripe(backend: Backend) -> (FakeStripe, TestServer) {
    let fake = FakeStripe::start().await.unwrap();
    let mut settings = Settings::embedded();
    settings.billing.stripe = Some(StripeConfig::new(
        SECRET_KEY,
        WEBHOOK_SECRET,
        &fake.base_url,
    ));
    let srv = TestServer::start_with(backend, CATALOG, settings).await;
    (fake, srv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_payment_webhook_delivered_twice_pays_once() {
    for backend in backends("invoices_stripe") {
        let name = backend.name;
        let (fake, srv) = with_fake_stripe(backend).await;
        let admin = srv.admin_key.clone();
        srv.customer("acme", Some("pro")).await;
        draft(&srv, "inv_s1", "acme").await;
        let r = srv
            .post("/v1/invoices/inv_s1/issue", &admin, json!({}))
            .await;
        assert_eq!(r.body["invoice"]["totals"]["total"], "24.00", "{r}");

        // Create the payment: a PaymentIntent of 2400 cents for the invoice.
        let r = srv
            .post(
                "/v1/invoices/inv_s1/pay",
                &admin,
                json!({"provider": "stripe"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["payment"]["status"], "pending");
        assert!(r.body["payment"]["client_secret"].is_string());
        assert!(r.body["recorded"].is_null());
        let pi = r.body["payment"]["reference"].as_str().unwrap().to_string();
        assert_eq!(fake.state().intents[0]["amount"], 2400);
        assert_eq!(
            fake.state().intents[0]["metadata"]["tollgate_invoice_id"],
            "inv_s1"
        );
        // Retried: the same PaymentIntent (idempotency key).
        let r = srv
            .post(
                "/v1/invoices/inv_s1/pay",
                &admin,
                json!({"provider": "stripe"}),
            )
            .await;
        assert_eq!(r.body["payment"]["reference"], pi.as_str());
        assert_eq!(fake.state().intents.len(), 1);

        // A forged or stale delivery is refused and changes nothing.
        let now = srv.engine.now().as_second();
        let event = fake.succeed(&pi, now).unwrap();
        let r = webhook(
            &srv,
            &event,
            Some(format!("t={now},v1={}", "ab".repeat(32))),
        )
        .await;
        assert_eq!(r.status, 400, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        let bytes = serde_json::to_vec(&event).unwrap();
        let stale = signature_header(WEBHOOK_SECRET, now - 600, &bytes);
        assert_eq!(webhook(&srv, &event, Some(stale)).await.status, 400);
        let r = srv.get("/v1/invoices/inv_s1", &admin).await;
        assert_eq!(r.body["invoice"]["status"], "open");

        // payment_intent.succeeded delivered twice: paid once.
        let r = webhook(&srv, &event, None).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["outcome"]["action"], "payment_recorded");
        assert_eq!(r.body["outcome"]["duplicate"], false);
        let r = webhook(&srv, &event, None).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["outcome"]["duplicate"], true);
        let r = srv.get("/v1/invoices/inv_s1", &admin).await;
        assert_eq!(r.body["invoice"]["status"], "paid", "{r}");
        assert_eq!(r.body["invoice"]["totals"]["amount_paid"], "24.00");
        assert_eq!(r.body["payments"].as_array().unwrap().len(), 1);
        assert_eq!(r.body["payments"][0]["provider"], "stripe");
        assert_eq!(r.body["payments"][0]["reference"], pi.as_str());

        // charge.refunded (10.00 of it), twice: one credit note of 10.00.
        let refund = fake.refunded(&pi, 1000, now).unwrap();
        let r = webhook(&srv, &refund, None).await;
        assert_eq!(r.body["outcome"]["action"], "credit_note_issued", "{r}");
        let r = webhook(&srv, &refund, None).await;
        assert_eq!(r.body["outcome"]["duplicate"], true, "{r}");
        let r = srv.get("/v1/invoices/inv_s1", &admin).await;
        assert_eq!(r.body["credit_notes"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r.body["credit_notes"][0]["total"], "10.00");
        assert_eq!(r.body["invoice"]["totals"]["amount_credited"], "10.00");

        // Other events are acknowledged and ignored; without a key is fine
        // (the signature is the authentication).
        let other = json!({"id": "evt_other", "type": "customer.created", "data": {"object": {}}});
        let r = webhook(&srv, &other, None).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["outcome"]["action"], "ignored: customer.created");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stripe_settings_the_webhook_is_not_found() {
    let backend = backends("invoices_nostripe").remove(0);
    let srv = TestServer::start(backend, CATALOG).await;
    let r = webhook(&srv, &json!({"id": "evt_1"}), None).await;
    assert_eq!(r.status, 404, "{r}");
    let _: Option<Timestamp> = None;
    srv.stop().await;
}

const METERED: &str = r#"
[catalog]
name = "Metered"
currency = "USD"

[features.api_calls]
kind = "metered"
name = "API calls"
reset = "billing_period"

[plans.metered]
name = "Metered"
tier = 0
base_price = "10"

[plans.metered.entitlements]
api_calls = "unlimited"

[[plans.metered.charges]]
metric = "api_calls"
name = "API calls"
price = { model = "graduated", tiers = [ { up_to = 1000, unit_price = "0" }, { up_to = 10000, unit_price = "0.002" }, { unit_price = "0.001" } ] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_period_is_explained_from_the_ledger() {
    use tollgate_engine::UsageRequest;
    for backend in backends("invoices_explain") {
        let name = backend.name;
        let srv = TestServer::start(backend, METERED).await;
        let admin = srv.admin_key.clone();
        srv.customer("acme", Some("metered")).await;
        for (i, q) in [5_000, 7_000, 500].into_iter().enumerate() {
            srv.engine
                .consume(
                    UsageRequest::new("acme", "api_calls", Decimal::from(q)).key(format!("k{i}")),
                )
                .await
                .unwrap();
        }
        srv.engine.flush().await.unwrap();
        srv.clock.advance(jiff::SignedDuration::from_hours(24 * 32));
        let report = srv
            .state
            .billing
            .run_invoices(&tollgate_billing::run::RunOptions::default(), &|_| {})
            .await
            .unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.created, 1, "{report:?}");
        let r = srv.get("/v1/customers/acme/invoices", &admin).await;
        let id = r.body["data"][0]["id"].as_str().unwrap().to_string();

        // 12,500 calls: 1,000 free, 9,000 × 0.002 = 18.00, 2,500 × 0.001 = 2.50.
        let r = srv.get(&format!("/v1/invoices/{id}/explain"), &admin).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let usage = r.body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == "usage")
            .unwrap_or_else(|| panic!("no usage line: {r}"))
            .clone();
        assert_eq!(usage["amount"], "20.50", "{usage}");
        assert_eq!(usage["quantity"], "12500");
        assert_eq!(usage["source"]["records"], 3, "{usage}");
        assert_eq!(usage["source"]["buckets"]["plan"], "12500", "{usage}");
        assert_eq!(usage["tiers"].as_array().unwrap().len(), 3);
        assert!(
            usage["explanation"]
                .as_str()
                .unwrap()
                .starts_with("12500 api_calls from 3 ledger records"),
            "{usage}"
        );

        // The real invoice as documents (TOLLGATE_RENDER_DIR keeps them to look at).
        let (_, _, html) = raw(&srv, &format!("/v1/invoices/{id}/html"), &admin).await;
        let html = String::from_utf8(html).unwrap();
        assert!(
            html.contains("Tier 3 (above 10,000): 2,500 × 0.001 = 2.50"),
            "{html}"
        );
        let (_, _, pdf) = raw(&srv, &format!("/v1/invoices/{id}/pdf"), &admin).await;
        assert!(pdf_text(&pdf).contains("20.50"));
        if let Ok(dir) = std::env::var("TOLLGATE_RENDER_DIR") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(format!("{dir}/run-invoice-{name}.html"), html).unwrap();
            std::fs::write(format!("{dir}/run-invoice-{name}.pdf"), pdf).unwrap();
        }
        srv.stop().await;
    }
}

/// `POST /v1/invoices/{id}/refund` with an `Idempotency-Key`.
async fn refund(srv: &TestServer, id: &str, key: Option<&str>, body: Value) -> Reply {
    let mut req = srv
        .client
        .post(srv.url(&format!("/v1/invoices/{id}/refund")))
        .bearer_auth(&srv.admin_key)
        .json(&body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    TestServer::reply(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_go_through_the_provider_and_credit_the_invoice_once_per_key() {
    for backend in backends("invoices_refund") {
        let name = backend.name;
        let (fake, srv) = with_fake_stripe(backend).await;
        let admin = srv.admin_key.clone();
        srv.customer("acme", Some("pro")).await;

        // Manual: 24.00 paid by transfer.
        draft(&srv, "inv_r1", "acme").await;
        srv.post("/v1/invoices/inv_r1/issue", &admin, json!({}))
            .await;
        let r = srv
            .post(
                "/v1/invoices/inv_r1/pay",
                &admin,
                json!({"reference": "BANK-1"}),
            )
            .await;
        assert_eq!(r.body["invoice"]["status"], "paid", "{name}: {r}");

        // No key, more than was paid: 422 naming the field, nothing refunded.
        let r = refund(&srv, "inv_r1", None, json!({"amount": "10.00"})).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["Idempotency-Key"]);
        let r = refund(&srv, "inv_r1", Some("k1"), json!({"amount": "24.01"})).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["amount"]);

        // 10.00 refunded and credited; the same key again refunds nothing.
        let r = refund(
            &srv,
            "inv_r1",
            Some("k1"),
            json!({"amount": "10.00", "reason": "goodwill"}),
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["created"], true);
        assert_eq!(r.body["refund"]["amount"], "10.00");
        assert_eq!(r.body["refund"]["provider"], "manual");
        assert_eq!(r.body["invoice"]["totals"]["amount_credited"], "10.00");
        let first = r.body["refund"]["id"].clone();
        let r = refund(&srv, "inv_r1", Some("k1"), json!({"amount": "10.00"})).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["created"], false);
        assert_eq!(r.body["refund"]["id"], first);
        let r = srv.get("/v1/invoices/inv_r1", &admin).await;
        assert_eq!(r.body["credit_notes"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r.body["credit_notes"][0]["reason"], "Refund of BANK-1");
        // The rest (14.00) with another key; then nothing is left.
        let r = refund(&srv, "inv_r1", Some("k2"), json!({})).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["refund"]["amount"], "14.00");
        assert_eq!(r.body["invoice"]["totals"]["amount_credited"], "24.00");
        let r = refund(&srv, "inv_r1", Some("k3"), json!({})).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["amount"]);

        // An open invoice is not refunded (credit it instead).
        srv.customer("bob", Some("pro")).await;
        draft(&srv, "inv_r2", "bob").await;
        srv.post("/v1/invoices/inv_r2/issue", &admin, json!({}))
            .await;
        let r = refund(&srv, "inv_r2", Some("k1"), json!({})).await;
        assert_eq!(r.status, 409, "{name}: {r}");

        // Stripe: paid through a PaymentIntent, refunded 10.00 through
        // POST /v1/refunds once; Stripe's charge.refunded then credits nothing
        // more.
        srv.customer("carl", Some("pro")).await;
        draft(&srv, "inv_r3", "carl").await;
        srv.post("/v1/invoices/inv_r3/issue", &admin, json!({}))
            .await;
        let r = srv
            .post(
                "/v1/invoices/inv_r3/pay",
                &admin,
                json!({"provider": "stripe"}),
            )
            .await;
        let pi = r.body["payment"]["reference"].as_str().unwrap().to_string();
        let now = srv.engine.now().as_second();
        let event = fake.succeed(&pi, now).unwrap();
        assert_eq!(webhook(&srv, &event, None).await.status, 200);
        let r = refund(&srv, "inv_r3", Some("s1"), json!({"amount": "10.00"})).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["refund"]["provider"], "stripe");
        assert!(
            r.body["refund"]["reference"]
                .as_str()
                .unwrap()
                .starts_with("re_")
        );
        let r = refund(&srv, "inv_r3", Some("s1"), json!({"amount": "10.00"})).await;
        assert_eq!(r.body["created"], false, "{name}: {r}");
        assert_eq!(fake.state().refunds.len(), 1, "{name}: refunded once");
        assert_eq!(fake.state().refunds[0]["amount"], 1000);
        let event = fake.refunded(&pi, 1000, now).unwrap();
        let r = webhook(&srv, &event, None).await;
        assert_eq!(
            r.body["outcome"]["action"], "already_processed",
            "{name}: {r}"
        );
        let r = srv.get("/v1/invoices/inv_r3", &admin).await;
        assert_eq!(r.body["credit_notes"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r.body["invoice"]["totals"]["amount_credited"], "10.00");
        srv.stop().await;
    }
}

/// A catalog whose `pro` plan costs `pro` a month (a changed price publishes
/// a new version at the next start).
fn priced_catalog(pro: &str) -> String {
    format!(
        r#"
[catalog]
name = "Prices"
currency = "USD"

[features.api_calls]
kind = "metered"
reset = "billing_period"

[plans.basic]
tier = 0
base_price = "10"

[plans.basic.entitlements]
api_calls = 100

[plans.pro]
tier = 1
base_price = "{pro}"

[plans.pro.entitlements]
api_calls = 1000
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mrr_counts_each_subscription_at_its_plan_version() {
    for backend in backends("inv_mrr_versions") {
        let name = backend.name;
        let srv = TestServer::start(backend, &priced_catalog("30")).await;
        for (id, plan) in [("a", "pro"), ("b", "pro"), ("c", "basic")] {
            srv.customer(id, Some(plan)).await;
        }
        let r = mrr(&srv).await;
        assert_eq!(r.body[0]["mrr"], "70.00", "{name}: 30 + 30 + 10: {r}");

        // Pro now costs 45 (version 2); a and b keep version 1's price.
        let mut srv = srv;
        srv.catalog_toml = priced_catalog("45");
        let srv = srv.restart().await;
        assert_eq!(srv.engine.plan_versions("pro"), [1, 2], "{name}");
        let r = mrr(&srv).await;
        assert_eq!(r.body[0]["mrr"], "70.00", "{name}: grandfathered: {r}");
        assert_eq!(r.body[0]["by_plan"]["pro"], "60.00", "{name}: {r}");

        // A new pro subscriber pays version 2's price.
        srv.customer("d", Some("pro")).await;
        let r = mrr(&srv).await;
        assert_eq!(r.body[0]["mrr"], "115.00", "{name}: 30 + 30 + 45 + 10: {r}");
        assert_eq!(r.body[0]["subscriptions"], 4, "{name}: {r}");
        srv.stop().await;
    }
}

async fn mrr(srv: &TestServer) -> Reply {
    srv.get("/v1/admin/billing/mrr", &srv.admin_key).await
}
