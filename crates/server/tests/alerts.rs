//! Alerts over real HTTP: `GET /v1/customers/{id}/alerts` (customer keys read
//! their own only), the alerts of the usage dashboard with their recommended
//! action, and the admin near-limit view — on SQLite and (when configured)
//! PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn consume(customer: &str, feature: &str, quantity: Value) -> Value {
    json!({"customer": customer, "feature": feature, "quantity": quantity, "consume": true})
}

fn types_and_thresholds(r: &Reply) -> Vec<(String, String)> {
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap().to_string(),
                a["data"]["threshold"]["label"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_newest_first_for_their_customer_only() {
    for backend in backends("alerts_route") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("acme", Some("free")).await; // api_calls: 100, hard
        srv.customer("other", Some("free")).await;
        let key = srv.server_key().await;
        for q in [79, 1, 15, 5] {
            let r = srv
                .post("/v1/check", &key, consume("acme", "api_calls", json!(q)))
                .await;
            assert_eq!(r.status, 200, "{name}: {r}");
        }
        let r = srv
            .post("/v1/check", &key, consume("acme", "api_calls", json!(1)))
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");

        let ckey = srv.customer_key("acme").await;
        let r = srv.get("/v1/customers/acme/alerts", &ckey).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let pairs: Vec<(String, String)> = [
            ("usage.denied", ""),
            ("usage.threshold_reached", "100%"),
            ("usage.threshold_reached", "95%"),
            ("usage.threshold_reached", "80%"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(types_and_thresholds(&r), pairs, "{name}: {r}");
        assert_eq!(r.body["has_more"], false);
        let a80 = &r.body["data"][3];
        assert_eq!(a80["customer"], "acme");
        assert_eq!(a80["feature"], "api_calls");
        assert_eq!(a80["sequence"], 1);
        assert_eq!(a80["created_at"], "2025-01-15T12:00:00Z");
        assert_eq!(a80["data"]["used"], "80");
        assert_eq!(a80["data"]["limit"], "100");
        assert_eq!(a80["data"]["percent"], "80");
        assert_eq!(
            a80["data"]["recommended_action"],
            json!({"type": "upgrade", "plan": "pro", "limit": "1000"})
        );
        assert!(a80["id"].as_str().unwrap().starts_with("evt_"));

        // Paging: the newest two, then more.
        let r = srv.get("/v1/customers/acme/alerts?limit=2", &key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
        assert_eq!(r.body["has_more"], true);
        let r = srv.get("/v1/customers/acme/alerts?limit=0", &key).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["limit"]);

        // Another customer has none, and cannot read acme's.
        let r = srv.get("/v1/customers/other/alerts", &key).await;
        assert_eq!(r.body["data"], json!([]), "{name}: {r}");
        let okey = srv.customer_key("other").await;
        let r = srv.get("/v1/customers/acme/alerts", &okey).await;
        assert_eq!(r.status, 404, "{name}: {r}");
        let r = srv.get("/v1/customers/nobody/alerts", &key).await;
        assert_eq!(r.status, 404, "{name}: {r}");

        // The dashboard shows the feature's alerts with the recommended action.
        let r = srv.get("/v1/customers/acme/usage", &ckey).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let alerts = r.body["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{name}: {r}");
        let a = &alerts[0];
        assert_eq!(a["feature"], "api_calls");
        assert_eq!(a["type"], "limit_exceeded");
        assert_eq!(a["thresholds_reached"], json!(["80%", "95%", "100%"]));
        assert_eq!(a["last_event"]["type"], "usage.denied");
        assert_eq!(
            a["recommended"],
            json!({"type": "upgrade", "plan": "pro", "limit": "1000"})
        );

        // The admin near-limit view carries the latest alert of each row.
        let r = srv
            .get(
                "/v1/admin/customers/near-limit?alerted=true",
                &srv.admin_key,
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let rows = r.body["data"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{name}: {r}");
        assert_eq!(rows[0]["customer"], "acme");
        assert_eq!(rows[0]["last_alert"]["type"], "usage.denied");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_only_alerts_that_fired_in_the_current_window() {
    for backend in backends("alerts_dashboard") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("e", Some("pro")).await; // api_calls: 1000 hard, emergency 100
        let key = srv.server_key().await;
        let r = srv
            .post("/v1/check", &key, consume("e", "api_calls", json!(799)))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv.get("/v1/customers/e/usage", &key).await;
        assert_eq!(r.body["alerts"], json!([]), "{name}: below 80 %: {r}");
        let r = srv
            .post("/v1/check", &key, consume("e", "api_calls", json!(201)))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv.get("/v1/customers/e/usage", &key).await;
        let a = &r.body["alerts"][0];
        assert_eq!(a["thresholds_reached"], json!(["80%", "95%", "100%"]));
        // At the hard limit with the pool available: draw it.
        assert_eq!(
            a["recommended"],
            json!({"type": "draw_emergency_pool", "units": "100"}),
            "{name}: {a}"
        );
        // The next period starts clean.
        srv.clock.set(ts("2025-02-15T12:00:00Z"));
        let r = srv.get("/v1/customers/e/usage", &key).await;
        assert_eq!(r.body["alerts"], json!([]), "{name}: {r}");
        let r = srv.get("/v1/customers/e/alerts", &key).await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
        srv.stop().await;
    }
}

/// `PUT/GET /v1/customers/{id}/alert-settings`: the amount above which the
/// upcoming invoice fires `invoice.upcoming_above`. Admin and server keys
/// set it, a customer key reads its own; a bad amount is a 422 naming the
/// field and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_settings_are_validated_and_scoped() {
    for backend in backends("alert_settings") {
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("acme", Some("pro")).await;
        srv.customer("other", Some("pro")).await;
        let admin = srv.admin_key.clone();
        let server = srv.server_key().await;
        let own = srv.customer_key("acme").await;
        let path = "/v1/customers/acme/alert-settings";

        // Never set: no amount.
        let r = srv.get(path, &own).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["upcoming_invoice_above"], Value::Null);
        assert_eq!(r.body["updated_at"], Value::Null);
        assert_eq!(r.body["currency"], "USD");

        let r = srv
            .put(path, &admin, json!({"upcoming_invoice_above": "250.50"}))
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["upcoming_invoice_above"], "250.5");
        let r = srv
            .put(path, &server, json!({"upcoming_invoice_above": 300}))
            .await;
        assert_eq!(r.status, 200, "{r}");
        let r = srv.get(path, &own).await;
        assert_eq!(r.body["upcoming_invoice_above"], "300");
        assert!(r.body["updated_at"].is_string(), "{r}");

        // Bad amounts name the field and change nothing.
        for bad in [
            json!("-1"),
            json!(-0.5),
            json!("lots"),
            json!("1.234"),
            json!(true),
        ] {
            let r = srv
                .put(path, &admin, json!({"upcoming_invoice_above": bad}))
                .await;
            assert_eq!(r.status, 422, "{bad}: {r}");
            assert_eq!(r.error_fields(), ["upcoming_invoice_above"], "{bad}: {r}");
        }
        let r = srv
            .put(path, &admin, json!({"upcoming_invoice_abov": "5"}))
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(
            srv.get(path, &admin).await.body["upcoming_invoice_above"],
            "300"
        );

        // Scopes: a customer key reads its own only and sets nothing.
        let r = srv
            .put(path, &own, json!({"upcoming_invoice_above": "1"}))
            .await;
        assert_eq!(r.status, 403, "{r}");
        let r = srv.get("/v1/customers/other/alert-settings", &own).await;
        assert_eq!(r.status, 404, "{r}");
        assert_eq!(
            srv.get(path, &admin).await.body["upcoming_invoice_above"],
            "300"
        );

        // Unknown customers.
        let r = srv
            .put(
                "/v1/customers/nobody/alert-settings",
                &admin,
                json!({"upcoming_invoice_above": "1"}),
            )
            .await;
        assert_eq!(r.status, 404, "{r}");
        let r = srv.get("/v1/customers/nobody/alert-settings", &admin).await;
        assert_eq!(r.status, 404, "{r}");

        // null clears it.
        let r = srv
            .put(path, &admin, json!({"upcoming_invoice_above": null}))
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(
            srv.get(path, &own).await.body["upcoming_invoice_above"],
            Value::Null
        );
        srv.stop().await;
    }
}
