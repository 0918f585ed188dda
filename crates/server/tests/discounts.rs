//! Customer discounts over real HTTP, on both backends: bad input names the
//! field and writes nothing, attach / list / remove, and the invoice run's
//! discounted totals.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// `pro`: $49/month in arrears on calendar billing.
const CATALOG: &str = r#"
[catalog]
name = "Discounts"
currency = "USD"

[features.api_calls]
kind = "metered"
reset = "billing_period"

[plans.pro]
tier = 1
base_price = "49"
anchoring = "calendar"
billing = "in_arrears"

[plans.pro.entitlements]
api_calls = 1000
"#;

async fn start(backend: Backend) -> TestServer {
    let srv = TestServer::start(backend, CATALOG).await;
    srv.clock.set(ts("2025-11-01T00:00:00Z"));
    srv
}

async fn add(srv: &TestServer, key: &str, body: Value) -> Reply {
    srv.post("/v1/customers/acme/discounts", key, body).await
}

async fn listed(srv: &TestServer) -> Vec<Value> {
    let r = srv
        .get("/v1/customers/acme/discounts", &srv.admin_key)
        .await;
    assert_eq!(r.status, 200, "{r}");
    r.body["data"].as_array().unwrap().clone()
}

/// The total of acme's invoice for the period starting at `start`.
async fn total_of(srv: &TestServer, start: &str) -> (String, Vec<String>) {
    let r = srv.get("/v1/customers/acme/invoices", &srv.admin_key).await;
    assert_eq!(r.status, 200, "{r}");
    let inv = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["period_start"] == start)
        .unwrap()
        .clone();
    let discounts = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "discount")
        .map(|l| {
            format!(
                "{} {}",
                l["description"].as_str().unwrap(),
                l["amount"].as_str().unwrap()
            )
        })
        .collect();
    (
        inv["totals"]["total"].as_str().unwrap().to_string(),
        discounts,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discounts_are_validated_attached_listed_removed_and_applied_by_the_run() {
    for backend in backends("discounts") {
        let name = backend.name;
        let srv = start(backend).await;
        let r = srv
            .post(
                "/v1/customers",
                &srv.admin_key,
                json!({"id": "acme", "plan": "pro", "status": "active"}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");

        // Bad input: 422 naming the field, nothing stored.
        let bad = [
            (json!({"percent": "150"}), "percent"),
            (json!({"percent": -1}), "percent"),
            (json!({"amount": "-5.00"}), "amount"),
            (json!({"amount": "0.001"}), "amount"),
            (json!({"amount": "5", "currency": "EUR"}), "currency"),
            (json!({"amount": "5", "currency": "XYZ"}), "currency"),
            (json!({"percent": "10", "amount": "5"}), "amount"),
            (json!({}), "percent"),
            (json!({"percent": "10", "duration": "repeating"}), "periods"),
            (
                json!({"percent": "10", "duration": "repeating", "periods": 0}),
                "periods",
            ),
            (json!({"percent": "10", "periods": 2}), "periods"),
            (
                json!({"percent": "10", "ends_at": "2025-10-01T00:00:00Z"}),
                "ends_at",
            ),
        ];
        for (body, field) in bad {
            let r = add(&srv, &srv.admin_key, body.clone()).await;
            assert_eq!(r.status, 422, "{name}: {body}: {r}");
            assert!(
                r.error_fields().contains(&field.to_string()),
                "{name}: {body}: {:?}",
                r.error_fields()
            );
        }
        assert!(listed(&srv).await.is_empty(), "{name}: nothing written");
        // A customer key reads its own discounts, never writes them.
        let own = srv.customer_key("acme").await;
        assert_eq!(add(&srv, &own, json!({"percent": "10"})).await.status, 403);
        assert_eq!(
            srv.get("/v1/customers/acme/discounts", &own).await.status,
            200
        );
        let r = add(&srv, &srv.admin_key, json!({"percent": "10"})).await;
        assert_eq!(r.status, 201);
        assert_eq!(
            srv.get("/v1/customers/nobody/discounts", &srv.admin_key)
                .await
                .status,
            404
        );
        let first = r.body["id"].as_str().unwrap().to_string();
        let r = srv
            .delete(
                &format!("/v1/customers/acme/discounts/{first}"),
                &srv.admin_key,
            )
            .await;
        assert_eq!(r.status, 204, "{name}: {r}");

        // 10 % forever, then 5.00 once.
        let r = add(
            &srv,
            &srv.admin_key,
            json!({"percent": 10, "duration": "forever"}),
        )
        .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        assert_eq!(r.body["type"], "percent");
        assert_eq!(r.body["percent"], "10");
        assert_eq!(r.body["description"], "10 % off");
        let ten = r.body["id"].as_str().unwrap().to_string();
        let r = add(
            &srv,
            &srv.admin_key,
            json!({"amount": "5.00", "description": "Welcome"}),
        )
        .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        assert_eq!(r.body["currency"], "USD");
        assert_eq!(r.body["duration"], "once");
        assert_eq!(listed(&srv).await.len(), 2, "{name}");
        let r = srv
            .delete("/v1/customers/acme/discounts/dsc_nope", &srv.admin_key)
            .await;
        assert_eq!(r.status, 404, "{name}: {r}");

        // November: 49.00 − 10 % (4.90) − 5.00 = 39.10.
        srv.clock.set(ts("2025-12-01T00:00:00Z"));
        let r = srv
            .post("/v1/admin/invoices/run", &srv.admin_key, json!({}))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(
            total_of(&srv, "2025-11-01T00:00:00Z").await,
            (
                "39.10".to_string(),
                vec!["10 % off -4.90".to_string(), "Welcome -5.00".to_string()]
            ),
            "{name}"
        );
        // December: the 10 % only (5.00 was once): 44.10. Then removed: 49.00.
        srv.clock.set(ts("2026-01-01T00:00:00Z"));
        srv.post("/v1/admin/invoices/run", &srv.admin_key, json!({}))
            .await;
        assert_eq!(total_of(&srv, "2025-12-01T00:00:00Z").await.0, "44.10");
        let r = srv
            .delete(
                &format!("/v1/customers/acme/discounts/{ten}"),
                &srv.admin_key,
            )
            .await;
        assert_eq!(r.status, 204, "{name}: {r}");
        srv.clock.set(ts("2026-02-01T00:00:00Z"));
        srv.post("/v1/admin/invoices/run", &srv.admin_key, json!({}))
            .await;
        assert_eq!(total_of(&srv, "2026-01-01T00:00:00Z").await.0, "49.00");
        srv.stop().await;
    }
}
