//! Isolation between customers, and key lifecycle, over real HTTP.
//!
//! The route list comes from the server's own OpenAPI document, so every
//! route added later is covered without touching this file: a customer key for
//! customer A calls every operation aimed at customer B (path ids, query
//! parameters and bodies naming B), and must get 403/404, see nothing of B,
//! and change nothing of B. Customer keys get 403 on every mutating route.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_engine::UsageRequest;
use tollgate_server::auth::CUSTOMER_READ_ONLY_POSTS;

const A: &str = "cust_a";
const B: &str = "cust_b";

/// Everything observable of customer B, read with an admin key and from the
/// engine.
async fn state_of_b(srv: &TestServer, doc: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Every readable sub-resource of a customer that needs no other parameter.
        if item.get("get").is_some()
            && path.starts_with("/v1/customers/{id}")
            && path.matches('{').count() == 1
        {
            let url = path.replace("{id}", B);
            let r = srv.get(&url, &srv.admin_key).await;
            out.push((url, json!({"status": r.status, "body": r.body})));
        }
    }
    out.push((
        "engine.entitlements".into(),
        serde_json::to_value(srv.engine.entitlements(B).unwrap()).unwrap(),
    ));
    out.push((
        "engine.reservations".into(),
        serde_json::to_value(srv.engine.reservations(B).unwrap()).unwrap(),
    ));
    out.push((
        "engine.leases".into(),
        json!(srv.engine.active_leases(B, "jobs").unwrap()),
    ));
    out
}

/// Gives B an issued invoice whose customer name carries B's marker, and a
/// credit note against it; returns their ids.
async fn invoice_of_b(srv: &TestServer) -> (String, String) {
    use tollgate_core::billing::{Invoice, InvoiceLine, InvoiceLineKind, Party, TaxRule};
    use tollgate_core::money::Currency;
    use tollgate_core::period::Period;
    use tollgate_store::billing::{InvoiceKind, NewInvoice};
    let (start, end) = (ts("2025-01-01T00:00:00Z"), ts("2025-02-01T00:00:00Z"));
    let line = InvoiceLine::fee(
        InvoiceLineKind::Base,
        "Pro",
        start,
        end,
        Decimal::from(20),
        Currency::USD,
    );
    let mut inv = Invoice::off_cycle(
        "inv_of_b".into(),
        B.into(),
        Currency::USD,
        Period::new(start, end).unwrap(),
        vec![line],
        TaxRule::none(),
        t0(),
    );
    inv.bill_to = Party {
        name: "Bee Marker Corp".into(),
        ..Party::default()
    };
    srv.state
        .store
        .billing()
        .insert_invoice(&NewInvoice {
            invoice: inv,
            kind: InvoiceKind::Cycle,
            pending_items: Vec::new(),
        })
        .await
        .unwrap();
    let r = srv
        .post("/v1/invoices/inv_of_b/issue", &srv.admin_key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = srv
        .post(
            "/v1/invoices/inv_of_b/credit-notes",
            &srv.admin_key,
            json!({"type": "amount", "amount": "5", "reason": "b-marker-credit"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    (
        "inv_of_b".to_string(),
        r.body["credit_note"]["id"].as_str().unwrap().to_string(),
    )
}

/// A body that names customer B in every way a route could read it.
fn body_aimed_at_b(feature: &str) -> Value {
    json!({
        "customer": B, "customer_id": B, "id": B, "feature": feature,
        "quantity": 1, "name": "mine now", "plan": "business", "enabled": true,
        "status": "canceled", "scope": "admin",
        "events": [{"customer": B, "feature": feature, "quantity": 1,
                    "timestamp": "2025-01-15T12:00:00Z", "idempotency_key": "x"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_key_never_reaches_another_customer() {
    for backend in backends("isolation") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer(A, Some("pro")).await;
        srv.customer(B, Some("pro")).await;
        // B has usage, a grant, an override, a reservation and a lease.
        for i in 0..3 {
            srv.engine
                .consume(UsageRequest::new(B, "api_calls", Decimal::from(7)).key(format!("b-{i}")))
                .await
                .unwrap();
        }
        let key_admin_id = srv.state.keys.list()[0].id.clone();
        let r = srv
            .patch(
                &format!("/v1/customers/{B}"),
                &srv.admin_key,
                json!({"name": "Bee Marker Corp", "email": "bee-marker@b.test",
                       "metadata": {"marker": "b-marker-metadata"}}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        let grant = srv
            .post(
                &format!("/v1/customers/{B}/grants"),
                &srv.admin_key,
                json!({"feature": "api_calls", "quantity": 10,
                       "metadata": {"marker": "b-marker-grant"}}),
            )
            .await;
        let grant_id = grant.body["id"].as_str().unwrap().to_string();
        let r = srv
            .put(
                &format!("/v1/customers/{B}/overrides/file_mb"),
                &srv.admin_key,
                json!(300),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        let resv = srv
            .engine
            .reserve(UsageRequest::new(B, "api_calls", Decimal::from(5)), None)
            .await
            .unwrap();
        let resv_id = resv.reservation_id.unwrap();
        let lease = srv.engine.acquire(B, "jobs").unwrap();
        let lease_id = lease.lease_id.unwrap();
        srv.engine.flush().await.unwrap();
        // B has an issued invoice (and a draft) and a credit note.
        let (invoice_id, credit_note_id) = invoice_of_b(&srv).await;
        // …and a discount.
        let r = srv
            .post(
                &format!("/v1/customers/{B}/discounts"),
                &srv.admin_key,
                json!({"percent": "10", "description": "b-marker-discount"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        let discount_id = r.body["id"].as_str().unwrap().to_string();

        let key_a = srv.customer_key(A).await;
        let doc = srv.get("/openapi.json", "").await.body;
        let before = state_of_b(&srv, &doc).await;
        let secrets_of_b = [
            B.to_string(),
            grant_id.clone(),
            resv_id.clone(),
            lease_id.clone(),
            invoice_id.clone(),
            credit_note_id.clone(),
            discount_id.clone(),
        ];

        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "patch", "delete"] {
                let Some(op) = item.get(method) else { continue };
                let public = op["security"].as_array().is_some_and(|s| {
                    s.iter()
                        .all(|r| r.as_object().is_some_and(|o| o.is_empty()))
                });
                if public {
                    continue;
                }
                let id_value = if path.starts_with("/v1/customers/{id}") {
                    B.to_string()
                } else if path.starts_with("/v1/reservations/{id}") {
                    resv_id.clone()
                } else if path.starts_with("/v1/leases/{id}") {
                    lease_id.clone()
                } else if path.starts_with("/v1/keys/{id}") {
                    key_admin_id.clone()
                } else if path.starts_with("/v1/invoices/{id}") {
                    invoice_id.clone()
                } else if path.starts_with("/v1/credit-notes/{id}") {
                    credit_note_id.clone()
                } else {
                    B.to_string()
                };
                let feature = if path.contains("gauges") {
                    "seats"
                } else {
                    "api_calls"
                };
                let mut url = path
                    .replace("{id}", &id_value)
                    .replace("{feature}", feature)
                    .replace("{grant_id}", &grant_id)
                    .replace("{discount_id}", &discount_id)
                    .replace("{key}", "pro")
                    .replace("{line}", "0");
                assert!(
                    !url.contains('{'),
                    "a path parameter this test does not know: {path}"
                );
                // Query parameters that name a customer name B.
                let query: Vec<String> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "query")
                            .filter_map(|p| {
                                let n = p["name"].as_str()?;
                                matches!(n, "customer" | "customer_id").then(|| format!("{n}={B}"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !query.is_empty() {
                    url = format!("{url}?{}", query.join("&"));
                }
                let m = method.to_uppercase().parse::<M>().unwrap();
                let body = op.get("requestBody").map(|_| body_aimed_at_b(feature));
                let r = srv.call(m, &url, &key_a, body).await;
                let label = format!("{name}: {} {url}", method.to_uppercase());
                assert_ne!(r.status, 401, "{label}: the key is valid: {r}");
                assert!(r.status < 500, "{label}: {r}");
                let mutating =
                    method != "get" && !CUSTOMER_READ_ONLY_POSTS.contains(&path.as_str());
                if mutating {
                    assert_eq!(r.status, 403, "{label}: customer keys are read-only: {r}");
                    assert_eq!(r.content_type(), "application/problem+json", "{label}");
                } else if path.contains("{id}")
                    && (path.starts_with("/v1/customers/")
                        || path.starts_with("/v1/invoices/")
                        || path.starts_with("/v1/credit-notes/"))
                {
                    assert!(
                        r.status == 404 || r.status == 403,
                        "{label}: another customer's data: {r}"
                    );
                }
                // Whatever the answer, nothing of B is in it (an error may
                // only repeat the id the caller gave).
                let text = r.body.to_string();
                assert!(!text.contains("marker"), "{label}: leaks B's data: {text}");
                if (200..300).contains(&r.status) {
                    for s in &secrets_of_b {
                        assert!(!text.contains(s.as_str()), "{label}: leaks {s}: {text}");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} operations checked");

        // B is exactly as it was; the admin key still works.
        let after = state_of_b(&srv, &doc).await;
        assert_eq!(before, after, "{name}: customer B changed");
        assert_eq!(srv.get("/v1/keys", &srv.admin_key).await.status, 200);

        // The same key reads its own customer.
        let r = srv.get(&format!("/v1/customers/{A}"), &key_a).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["id"], A);
        for (path, item) in doc["paths"].as_object().unwrap() {
            if item.get("get").is_some()
                && path.starts_with("/v1/customers/{id}")
                && path.matches('{').count() == 1
            {
                let r = srv.get(&path.replace("{id}", A), &key_a).await;
                assert_eq!(
                    r.status, 200,
                    "{name}: GET {path} for its own customer: {r}"
                );
                assert!(!r.body.to_string().contains(B), "{path}: {r}");
            }
        }
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_keys_are_refused_at_once() {
    for backend in backends("revoke") {
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("c1", None).await;
        let r = srv
            .post(
                "/v1/keys",
                &srv.admin_key,
                json!({"name": "backend", "scope": "server"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        let id = r.body["id"].as_str().unwrap().to_string();
        let secret = r.body["secret"].as_str().unwrap().to_string();
        assert_eq!(srv.get("/v1/customers/c1", &secret).await.status, 200);

        let r = srv.delete(&format!("/v1/keys/{id}"), &srv.admin_key).await;
        assert_eq!(r.status, 200, "{r}");
        assert!(r.body["revoked_at"].is_string(), "{r}");
        let r = srv.get("/v1/customers/c1", &secret).await;
        assert_eq!(r.status, 401, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");

        // Still refused after a restart (revocation is stored), and listed as revoked.
        let srv = srv.restart().await;
        assert_eq!(srv.get("/v1/customers/c1", &secret).await.status, 401);
        let r = srv
            .get("/v1/keys?include_revoked=true", &srv.admin_key)
            .await;
        let listed = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .unwrap()
            .clone();
        assert!(listed["revoked_at"].is_string());
        let r = srv.get("/v1/keys", &srv.admin_key).await;
        assert!(
            !r.body.to_string().contains(&id),
            "revoked keys are hidden by default: {r}"
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_rate_limit_answers_429_with_retry_after() {
    for backend in backends("ratelimit") {
        let mut settings = tollgate_server::config::Settings::embedded();
        settings.rate_limit.per_second = 1;
        settings.rate_limit.burst = 5;
        let srv = TestServer::start_with(backend, CATALOG, settings).await;
        srv.customer("c1", None).await;
        let k1 = srv.server_key().await;
        let k2 = srv.server_key().await;
        let mut statuses = Vec::new();
        let mut limited = None;
        for _ in 0..12 {
            let r = srv.get("/v1/customers/c1", &k1).await;
            statuses.push(r.status);
            if r.status == 429 && limited.is_none() {
                limited = Some(r);
            }
        }
        assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
        let r = limited.expect("the 6th request within a second is limited");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["code"], "rate_limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        // Another key has its own bucket.
        assert_eq!(srv.get("/v1/customers/c1", &k2).await.status, 200);
        // After waiting, the key works again.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(srv.get("/v1/customers/c1", &k1).await.status, 200);
        srv.stop().await;
    }
}
