//! Entitlements and the usage dashboard over real HTTP: periods, projections,
//! alerts with their recommended action, and the cost so far and projected —
//! on SQLite and (when configured) PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use jiff::SignedDuration;
use serde_json::{Value, json};

const PULSE: &str = include_str!("../../../examples/catalogs/pulse.toml");

fn consume(customer: &str, feature: &str, quantity: Value) -> Value {
    json!({"customer": customer, "feature": feature, "quantity": quantity, "consume": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pulse_dashboard_projects_usage_and_cost_to_the_period_end() {
    for backend in backends("pulse_dashboard") {
        let name = backend.name;
        let srv = TestServer::start(backend, PULSE).await;
        srv.customer("proj", Some("pro")).await;
        srv.customer("freeloader", Some("pro")).await;
        let key = srv.server_key().await;
        // Half of the 31-day period (2025-01-15T12:00Z → 2025-02-15T12:00Z).
        srv.clock.advance(SignedDuration::from_hours(372));
        for (f, q) in [
            ("participant_minutes", 25_000),
            ("egress_minutes", 2_500),
            ("bandwidth_gb", 250),
            ("api_requests", 250_000),
        ] {
            let r = srv
                .post("/v1/check", &key, consume("proj", f, json!(q)))
                .await;
            assert_eq!(r.status, 200, "{name}: {r}");
        }
        let r = srv
            .put(
                "/v1/customers/proj/gauges/storage_gb",
                &key,
                json!({"level": 50}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");

        let r = srv.get("/v1/customers/proj/usage", &key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let d = &r.body;
        assert_eq!(
            d["plan"],
            json!({"key": "pro", "name": "Pro", "version": 1})
        );
        assert_eq!(d["status"], "active");
        assert_eq!(d["as_of"], "2025-01-31T00:00:00Z");
        assert_eq!(d["current_period"]["days_remaining"], 16);
        let pm = &d["usage_summary"]["participant_minutes"];
        assert_eq!(pm["used"], "25000");
        assert_eq!(pm["limit"], "100000");
        assert_eq!(pm["percentage_used"], "25");
        assert_eq!(pm["projected_period_end"], "50000");
        assert_eq!(pm["window_start"], "2025-01-15T12:00:00Z");
        assert_eq!(pm["resets_at"], "2025-02-15T12:00:00Z");
        let st = &d["usage_summary"]["storage_gb"];
        assert_eq!(st["kind"], "gauge");
        assert_eq!(st["used"], "50");
        assert_eq!(st["projected_period_end"], "50");
        assert_eq!(d["alerts"], json!([]), "{name}: nothing near a limit");
        // 49 + 100 + 30 + 5 + 12.50 + 0.25 so far; the seed's 339.50 by the end.
        assert_eq!(
            d["cost"]["current_period"],
            json!({"amount": "196.75", "currency": "USD"}),
            "{name}: {d}"
        );
        assert_eq!(
            d["cost"]["projected_period_end"],
            json!({"amount": "339.50", "currency": "USD"}),
            "{name}: {d}"
        );
        assert_eq!(d["cost"]["recommended_plan"], Value::Null);

        // Usage that is not billable counts against limits but costs nothing.
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "freeloader", "feature": "participant_minutes",
                       "quantity": 1000, "consume": true, "billable": false}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv.get("/v1/customers/freeloader/usage", &key).await;
        assert_eq!(
            r.body["usage_summary"]["participant_minutes"]["used"],
            "1000"
        );
        assert_eq!(
            r.body["cost"]["current_period"],
            json!({"amount": "49.00", "currency": "USD"}),
            "{name}: {r}"
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_at_the_first_threshold_and_recommend_a_plan() {
    for backend in backends("pulse_alerts") {
        let name = backend.name;
        let srv = TestServer::start(backend, PULSE).await;
        srv.customer("small", Some("free")).await;
        let key = srv.server_key().await;
        srv.clock.advance(SignedDuration::from_hours(372));
        // free: participant_minutes = 1000; alerts at 80 % and 95 %.
        let r = srv
            .post(
                "/v1/check",
                &key,
                consume("small", "participant_minutes", json!(850)),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv
            .post(
                "/v1/check",
                &key,
                consume("small", "egress_minutes", json!(70)),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv.get("/v1/customers/small/usage", &key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let alerts = r.body["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{name}: only participant minutes: {r}");
        let a = &alerts[0];
        assert_eq!(a["type"], "approaching_limit");
        assert_eq!(a["feature"], "participant_minutes");
        assert_eq!(a["percentage_used"], "85");
        assert_eq!(a["action_required"], false);
        assert_eq!(a["upgrade_to"], "pro");
        assert!(a["message"].as_str().unwrap().contains("85%"), "{a}");
        assert!(a["message"].as_str().unwrap().contains("1700"), "{a}");
        assert!(
            a["recommended_action"].as_str().unwrap().contains("Pro"),
            "{a}"
        );
        // Projected 1,700 minutes do not fit Free: Pro is recommended.
        assert_eq!(r.body["cost"]["recommended_plan"], "pro");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reached_hard_limit_recommends_the_emergency_allowance_too() {
    for backend in backends("emergency_alert") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("e", Some("pro")).await;
        let key = srv.server_key().await;
        srv.clock.advance(SignedDuration::from_hours(24));
        // pro: api_calls = { limit = 1000, emergency_allowance = 100 }.
        let r = srv
            .post("/v1/check", &key, consume("e", "api_calls", json!(1000)))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv.get("/v1/customers/e/usage", &key).await;
        let a = r.body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["feature"] == "api_calls")
            .unwrap()
            .clone();
        assert_eq!(a["type"], "limit_exceeded", "{name}: {a}");
        assert_eq!(a["action_required"], true);
        assert_eq!(a["upgrade_to"], "business");
        assert_eq!(a["emergency_allowance"], "100");
        let action = a["recommended_action"].as_str().unwrap();
        assert!(
            action.contains("Business") && action.contains("emergency"),
            "{action}"
        );
        // The text leads with the one recommended action (the engine's rule).
        assert_eq!(a["recommended"]["type"], "draw_emergency_pool", "{a}");
        assert!(
            action.starts_with("Draw the emergency allowance of 100"),
            "{action}"
        );

        // Once drawn, the emergency allowance is no longer recommended.
        srv.engine.draw_emergency("e", "api_calls").await.unwrap();
        let r = srv.get("/v1/customers/e/usage", &key).await;
        let a = r.body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["feature"] == "api_calls")
            .unwrap()
            .clone();
        assert_eq!(a["emergency_allowance"], Value::Null, "{name}: {a}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_are_readable_by_the_customer_itself_only() {
    for backend in backends("entitlements") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("a", Some("pro")).await;
        srv.customer("b", Some("free")).await;
        srv.customer("none", None).await;
        let akey = srv.customer_key("a").await;
        let r = srv.get("/v1/customers/a/entitlements", &akey).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["plan"], "pro");
        assert_eq!(r.body["status"], "active");
        assert_eq!(r.body["blocked"], Value::Null);
        let features = r.body["features"].as_array().unwrap();
        assert_eq!(features.len(), 8);
        let calls = features
            .iter()
            .find(|f| f["feature"] == "api_calls")
            .unwrap();
        assert_eq!(calls["limit"], "1000");
        assert_eq!(calls["used"], "0");
        assert_eq!(calls["remaining"], "1000");
        assert_eq!(calls["hard"], true);
        let flag = features
            .iter()
            .find(|f| f["feature"] == "git_export")
            .unwrap();
        assert_eq!(flag["enabled"], true);

        let r = srv.get("/v1/customers/b/entitlements", &akey).await;
        assert_eq!(r.status, 404, "{name}: {r}");
        let r = srv
            .get("/v1/customers/ghost/entitlements", &srv.admin_key)
            .await;
        assert_eq!(r.status, 404, "{name}: {r}");
        let r = srv.get("/v1/customers/a/entitlements", "").await;
        assert_eq!(r.status, 401, "{name}: {r}");

        // No subscription: everything blocked, the dashboard is empty.
        let r = srv
            .get("/v1/customers/none/entitlements", &srv.admin_key)
            .await;
        assert_eq!(r.body["blocked"], "no_subscription", "{name}: {r}");
        let r = srv.get("/v1/customers/none/usage", &srv.admin_key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["current_period"], Value::Null);
        assert_eq!(r.body["cost"], Value::Null);
        assert_eq!(r.body["usage_summary"], json!({}));
        srv.stop().await;
    }
}
