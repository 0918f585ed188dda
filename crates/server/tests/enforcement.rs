//! Enforcement over real HTTP: check/consume, the 429/403 denials, idempotent
//! retries, reservations, leases, gauges, rates, caps, flags and values, and
//! bad input — on SQLite and (when configured) PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use jiff::SignedDuration;
use serde_json::json;

/// The shared catalog plus a metered feature that only paid plans include.
const EXTRA: &str = r#"
[features.ai_credits]
kind = "metered"
name = "AI credits"
reset = "billing_period"

[plans.pro.entitlements.ai_credits]
limit = 500

[plans.business.entitlements.ai_credits]
limit = 5000
"#;

fn catalog() -> String {
    format!("{CATALOG}{EXTRA}")
}

fn consume(customer: &str, feature: &str, quantity: serde_json::Value) -> serde_json::Value {
    json!({"customer": customer, "feature": feature, "quantity": quantity, "consume": true})
}

async fn used(srv: &TestServer, customer: &str, feature: &str) -> String {
    let r = srv
        .get(
            &format!("/v1/customers/{customer}/entitlements"),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let f = r.body["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == feature)
        .unwrap()
        .clone();
    f["used"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_consume_until_denied_then_the_dashboard_recommends_the_upgrade() {
    for backend in backends("quickstart") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("acme", Some("free")).await;
        let key = srv.server_key().await;

        // A dry run changes nothing.
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "acme", "feature": "api_calls", "quantity": 99}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["allowed"], true);
        assert_eq!(r.body["dry_run"], true);
        assert_eq!(r.body["used"], "0");
        assert_eq!(r.body["remaining"], "100");

        let r = srv
            .post("/v1/check", &key, consume("acme", "api_calls", json!(99)))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["allowed"], true);
        assert_eq!(r.body["dry_run"], false);
        assert_eq!(r.body["used"], "99");
        assert_eq!(r.body["limit"], "100");
        assert_eq!(r.body["remaining"], "1");
        assert_eq!(r.body["resets_at"], "2025-02-15T12:00:00Z");

        let r = srv
            .post("/v1/check", &key, consume("acme", "api_calls", json!("1")))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["used"], "100");
        assert_eq!(r.body["remaining"], "0");

        // The 101st call is refused: 429 with the decision and Retry-After.
        let r = srv
            .post("/v1/check", &key, consume("acme", "api_calls", json!(1)))
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["code"], "limit_reached");
        assert_eq!(
            r.body["type"],
            "https://tollgate.dev/problems/limit_reached"
        );
        assert_eq!(r.body["limit"], "100");
        assert_eq!(r.body["used"], "100");
        assert_eq!(r.body["remaining"], "0");
        assert_eq!(r.body["resets_at"], "2025-02-15T12:00:00Z");
        assert_eq!(r.body["upgrade_to"], "pro");
        // 31 days from 2025-01-15T12:00Z to the period's end.
        assert_eq!(r.header("retry-after"), Some("2678400"), "{:?}", r.headers);
        assert!(r.body["detail"].as_str().unwrap().contains("pro"), "{r}");
        assert_eq!(
            used(&srv, "acme", "api_calls").await,
            "100",
            "{name}: nothing more counted"
        );

        // The same question as a dry run is an answer, not an error.
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "acme", "feature": "api_calls"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["allowed"], false);
        assert_eq!(r.body["reason"], "limit_reached");
        assert_eq!(r.body["upgrade_to"], "pro");

        // The dashboard, read with the customer's own key, ten days later.
        srv.clock.advance(SignedDuration::from_hours(24 * 10));
        let ckey = srv.customer_key("acme").await;
        let r = srv.get("/v1/customers/acme/usage", &ckey).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let d = &r.body;
        assert_eq!(d["plan"]["key"], "free");
        assert_eq!(d["current_period"]["start"], "2025-01-15T12:00:00Z");
        assert_eq!(d["current_period"]["end"], "2025-02-15T12:00:00Z");
        assert_eq!(d["current_period"]["days_remaining"], 21);
        let calls = &d["usage_summary"]["api_calls"];
        assert_eq!(calls["used"], "100");
        assert_eq!(calls["limit"], "100");
        assert_eq!(calls["percentage_used"], "100");
        assert_eq!(calls["overage"], "0");
        // 100 in 10 of the period's 31 days → 310 by its end.
        assert_eq!(calls["projected_period_end"], "310");
        let alerts = d["alerts"].as_array().unwrap();
        let alert = alerts
            .iter()
            .find(|a| a["feature"] == "api_calls")
            .unwrap_or_else(|| panic!("{name}: no api_calls alert in {d}"));
        assert_eq!(alert["type"], "limit_exceeded");
        assert_eq!(alert["action_required"], true);
        assert_eq!(alert["upgrade_to"], "pro");
        assert!(
            alert["recommended_action"]
                .as_str()
                .unwrap()
                .contains("Pro"),
            "{alert}"
        );
        assert_eq!(
            d["cost"]["current_period"],
            json!({"amount": "0.00", "currency": "USD"})
        );

        // Another customer's key sees nothing.
        srv.customer("other", Some("free")).await;
        let okey = srv.customer_key("other").await;
        let r = srv.get("/v1/customers/acme/usage", &okey).await;
        assert_eq!(r.status, 404, "{name}: {r}");
        // Customer keys cannot consume.
        let r = srv
            .post("/v1/check", &ckey, consume("acme", "api_calls", json!(1)))
            .await;
        assert_eq!(r.status, 403, "{name}: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_limit_overage_is_allowed_and_flagged() {
    for backend in backends("soft_limit") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("soft", Some("pro")).await;
        let key = srv.server_key().await;
        // pro: minutes = { limit = 100, enforcement = "soft" }, daily.
        let r = srv
            .post("/v1/check", &key, consume("soft", "minutes", json!(90)))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["over_limit"], false);
        let r = srv
            .post("/v1/check", &key, consume("soft", "minutes", json!("20.5")))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["allowed"], true);
        assert_eq!(r.body["overage"], "10.5");
        assert_eq!(r.body["over_limit"], true);
        assert_eq!(r.body["used"], "110.5");

        let r = srv.get("/v1/customers/soft/usage", &key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let m = &r.body["usage_summary"]["minutes"];
        assert_eq!(m["overage"], "10.5");
        assert_eq!(m["percentage_used"], "110.5");
        assert_eq!(m["hard"], false);
        let alert = r.body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["feature"] == "minutes")
            .unwrap()
            .clone();
        assert_eq!(alert["type"], "limit_exceeded");
        assert_eq!(
            alert["action_required"], false,
            "a soft limit does not block"
        );
        assert_eq!(alert["upgrade_to"], "business");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_returns_the_first_answer_and_counts_once() {
    for backend in backends("idempotent") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("idem", Some("free")).await;
        let key = srv.server_key().await;
        let body = json!({"customer": "idem", "feature": "api_calls", "quantity": 5,
            "consume": true, "idempotency_key": "req-1"});
        let first = srv.post("/v1/check", &key, body.clone()).await;
        assert_eq!(first.status, 200, "{name}: {first}");
        assert_eq!(first.body["replayed"], false);
        let again = srv.post("/v1/check", &key, body).await;
        assert_eq!(again.status, 200, "{name}: {again}");
        assert_eq!(again.body["replayed"], true);
        assert_eq!(again.body["used"], first.body["used"]);
        assert_eq!(used(&srv, "idem", "api_calls").await, "5");

        // The same through the Idempotency-Key header.
        let send = || async {
            let r = srv
                .client
                .post(srv.url("/v1/check"))
                .bearer_auth(&key)
                .header("Idempotency-Key", "req-2")
                .json(&consume("idem", "api_calls", json!(3)))
                .send()
                .await
                .unwrap();
            TestServer::reply(r).await
        };
        let a = send().await;
        let b = send().await;
        assert_eq!(a.status, 200, "{name}: {a}");
        assert_eq!(a.body["replayed"], false);
        assert_eq!(b.body["replayed"], true);
        assert_eq!(used(&srv, "idem", "api_calls").await, "8");

        // Header and body disagreeing is refused, and nothing is counted.
        let r = srv
            .client
            .post(srv.url("/v1/check"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "one")
            .json(
                &json!({"customer": "idem", "feature": "api_calls", "consume": true,
                "idempotency_key": "two"}),
            )
            .send()
            .await
            .unwrap();
        let r = TestServer::reply(r).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["idempotency_key"]);
        assert_eq!(used(&srv, "idem", "api_calls").await, "8");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_422_naming_the_field_and_records_nothing() {
    for backend in backends("bad_input") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("bad", Some("free")).await;
        let key = srv.server_key().await;
        let cases = [
            (
                json!({"customer": "bad", "feature": "api_calls", "quantity": -1, "consume": true}),
                "quantity",
            ),
            (
                json!({"customer": "bad", "feature": "api_calls", "quantity": "NaN", "consume": true}),
                "quantity",
            ),
            (
                json!({"customer": "bad", "feature": "api_calls", "quantity": "Infinity", "consume": true}),
                "quantity",
            ),
            (
                json!({"customer": "bad", "feature": "api_calls", "quantity": "1e", "consume": true}),
                "quantity",
            ),
            (
                json!({"customer": "bad", "feature": "api_calls", "quantity": 0, "consume": true}),
                "quantity",
            ),
            (
                json!({"customer": "bad", "feature": "api_calls", "consume": "yes"}),
                "consume",
            ),
            (
                json!({"customer": "bad", "feature": "api_calls", "consume": true, "qty": 1}),
                "body",
            ),
            (
                json!({"customer": "bad", "feature": "nope", "consume": true}),
                "feature",
            ),
            (
                json!({"customer": 12, "feature": "api_calls", "consume": true}),
                "customer",
            ),
            (json!({"feature": "api_calls", "consume": true}), "body"),
        ];
        for (body, field) in cases {
            let r = srv.post("/v1/check", &key, body.clone()).await;
            assert_eq!(r.status, 422, "{name}: {body} → {r}");
            assert_eq!(r.content_type(), "application/problem+json");
            let fields = r.error_fields();
            assert!(
                fields.iter().any(|f| f == field) || (field == "body" && !fields.is_empty()),
                "{name}: {body} should name {field}: {r}"
            );
        }
        // An unknown field is named.
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "bad", "feature": "api_calls", "qty": 1}),
            )
            .await;
        assert_eq!(r.status, 422);
        assert!(r.body["detail"].as_str().unwrap().contains("qty"), "{r}");
        // Not JSON at all → 400.
        let r = srv
            .call_raw(M::POST, "/v1/check", &key, "application/json", "{not json")
            .await;
        assert_eq!(r.status, 400, "{name}: {r}");
        // Unknown customer → 404.
        let r = srv
            .post("/v1/check", &key, consume("ghost", "api_calls", json!(1)))
            .await;
        assert_eq!(r.status, 404, "{name}: {r}");
        // Gauge and reservation inputs too.
        let r = srv
            .put("/v1/customers/bad/gauges/seats", &key, json!({"level": -1}))
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["level"]);
        let r = srv
            .post(
                "/v1/customers/bad/gauges/seats/adjust",
                &key,
                json!({"delta": 0}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["delta"]);
        let r = srv
            .post(
                "/v1/reservations",
                &key,
                json!({"customer": "bad", "feature": "api_calls", "quantity": "-3"}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["quantity"]);
        let r = srv
            .post(
                "/v1/reservations",
                &key,
                json!({"customer": "bad", "feature": "api_calls", "quantity": 1, "ttl_seconds": 0}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["ttl_seconds"]);

        assert_eq!(used(&srv, "bad", "api_calls").await, "0", "{name}");
        let r = srv
            .get("/v1/admin/usage/export?customer=bad", &srv.admin_key)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(
            r.body.as_str().unwrap().lines().count(),
            1,
            "{name}: only the header: nothing was recorded"
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_not_in_plan_and_inactive_subscriptions_are_403_with_upgrade_to() {
    for backend in backends("forbidden") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("small", Some("free")).await;
        let key = srv.server_key().await;
        let r = srv
            .post("/v1/check", &key, consume("small", "ai_credits", json!(10)))
            .await;
        assert_eq!(r.status, 403, "{name}: {r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["code"], "feature_not_in_plan");
        assert_eq!(r.body["upgrade_to"], "pro");
        assert!(r.header("retry-after").is_none());
        // Dry run: an answer.
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "small", "feature": "ai_credits"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["allowed"], false);
        assert_eq!(r.body["reason"], "feature_not_in_plan");
        assert_eq!(r.body["upgrade_to"], "pro");
        // Needing more than pro allows points at business.
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "small", "feature": "ai_credits", "quantity": 600}),
            )
            .await;
        assert_eq!(r.body["upgrade_to"], "business", "{name}: {r}");

        // A canceled subscription: 403 subscription_inactive.
        srv.customer("gone", Some("pro")).await;
        srv.engine.cancel("gone").await.unwrap();
        let r = srv
            .post("/v1/check", &key, consume("gone", "api_calls", json!(1)))
            .await;
        assert_eq!(r.status, 403, "{name}: {r}");
        assert_eq!(r.body["code"], "subscription_inactive");
        // No subscription at all.
        srv.customer("nosub", None).await;
        let r = srv
            .post("/v1/check", &key, consume("nosub", "api_calls", json!(1)))
            .await;
        assert_eq!(r.status, 403, "{name}: {r}");
        assert_eq!(r.body["code"], "no_subscription");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_hold_commit_and_release() {
    for backend in backends("reservations") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("r", Some("pro")).await;
        let key = srv.server_key().await;
        // pro: api_calls = 1000 (hard).
        let r = srv
            .post("/v1/reservations", &key, json!({"customer": "r", "feature": "api_calls", "quantity": 600, "ttl_seconds": 60}))
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        let id = r.body["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("res_"), "{id}");
        assert_eq!(r.body["remaining"], "400");
        assert_eq!(r.body["expires_at"], "2025-01-15T12:01:00Z");

        // Not enough left for a second hold of 500.
        let r = srv
            .post(
                "/v1/reservations",
                &key,
                json!({"customer": "r", "feature": "api_calls", "quantity": 500}),
            )
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.body["code"], "limit_reached");
        assert_eq!(r.body["remaining"], "400");

        // Commit less than reserved: the rest is freed.
        let r = srv
            .post(
                &format!("/v1/reservations/{id}/commit"),
                &key,
                json!({"quantity": 550}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["used"], "550");
        assert_eq!(r.body["reservation_id"], id.as_str());
        assert_eq!(r.body["customer"], "r");
        assert_eq!(used(&srv, "r", "api_calls").await, "550");
        // Committing again returns the first answer.
        let r = srv
            .post(
                &format!("/v1/reservations/{id}/commit"),
                &key,
                json!({"quantity": 550}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["replayed"], true);
        assert_eq!(used(&srv, "r", "api_calls").await, "550");

        // Hold, then release: nothing recorded, the hold is freed.
        let r = srv
            .post(
                "/v1/reservations",
                &key,
                json!({"customer": "r", "feature": "api_calls", "quantity": 400}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        let id2 = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(r.body["remaining"], "50");
        let r = srv
            .post(&format!("/v1/reservations/{id2}/release"), &key, json!({}))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "released");
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "r", "feature": "api_calls"}),
            )
            .await;
        assert_eq!(r.body["remaining"], "450", "{name}: {r}");
        let r = srv
            .post(&format!("/v1/reservations/{id2}/release"), &key, json!({}))
            .await;
        assert_eq!(r.status, 409, "{name}: {r}");
        let r = srv
            .post(
                &format!("/v1/reservations/{id2}/commit"),
                &key,
                json!({"quantity": 1}),
            )
            .await;
        assert_eq!(r.status, 409, "{name}: {r}");
        let r = srv
            .post(
                "/v1/reservations/res_nope/commit",
                &key,
                json!({"quantity": 1}),
            )
            .await;
        assert_eq!(r.status, 404, "{name}: {r}");
        assert_eq!(used(&srv, "r", "api_calls").await, "550");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_limited_renewed_and_gone_after_release() {
    for backend in backends("leases") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("l", Some("free")).await;
        let key = srv.server_key().await;
        // free: jobs = 1, lease TTL 30 s.
        let r = srv
            .post(
                "/v1/leases",
                &key,
                json!({"customer": "l", "feature": "jobs"}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        let lease = r.body["lease_id"].as_str().unwrap().to_string();
        assert_eq!(r.body["active"], 1);
        assert_eq!(r.body["limit"], 1);
        assert_eq!(r.body["expires_at"], "2025-01-15T12:00:30Z");

        let r = srv
            .post(
                "/v1/leases",
                &key,
                json!({"customer": "l", "feature": "jobs"}),
            )
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.body["code"], "concurrency_limit_reached");
        assert_eq!(r.body["upgrade_to"], "pro");
        assert_eq!(r.header("retry-after"), Some("30"));

        srv.clock.advance(SignedDuration::from_secs(20));
        let r = srv
            .post(&format!("/v1/leases/{lease}/heartbeat"), &key, json!({}))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["expires_at"], "2025-01-15T12:00:50Z");

        let r = srv.delete(&format!("/v1/leases/{lease}"), &key).await;
        assert_eq!(r.status, 204, "{name}: {r}");
        let r = srv
            .post(&format!("/v1/leases/{lease}/heartbeat"), &key, json!({}))
            .await;
        assert_eq!(r.status, 404, "{name}: {r}");
        let r = srv.delete(&format!("/v1/leases/{lease}"), &key).await;
        assert_eq!(r.status, 404, "{name}: {r}");

        // Free again; an unrenewed lease expires by itself.
        let r = srv
            .post(
                "/v1/leases",
                &key,
                json!({"customer": "l", "feature": "jobs"}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        let lease2 = r.body["lease_id"].as_str().unwrap().to_string();
        srv.clock.advance(SignedDuration::from_secs(31));
        let r = srv
            .post(
                "/v1/leases",
                &key,
                json!({"customer": "l", "feature": "jobs"}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        let r = srv
            .post(&format!("/v1/leases/{lease2}/release"), &key, json!({}))
            .await;
        assert_eq!(r.status, 404, "{name}: expired: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_are_limited_on_the_way_up_only() {
    for backend in backends("gauges") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("g", Some("free")).await;
        let key = srv.server_key().await;
        // free: seats = 2.
        let r = srv
            .put("/v1/customers/g/gauges/seats", &key, json!({"level": 2}))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["used"], "2");
        assert_eq!(r.body["remaining"], "0");
        let r = srv
            .post(
                "/v1/customers/g/gauges/seats/adjust",
                &key,
                json!({"delta": 1}),
            )
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.body["code"], "limit_reached");
        assert_eq!(r.body["used"], "2");
        assert_eq!(r.body["upgrade_to"], "pro");
        let r = srv
            .put("/v1/customers/g/gauges/seats", &key, json!({"level": "5"}))
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");
        let r = srv
            .post(
                "/v1/customers/g/gauges/seats/adjust",
                &key,
                json!({"delta": -1}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["used"], "1");
        let r = srv
            .post(
                "/v1/customers/g/gauges/seats/adjust",
                &key,
                json!({"delta": "1"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["used"], "2");
        // A metered feature is not a gauge.
        let r = srv
            .put(
                "/v1/customers/g/gauges/api_calls",
                &key,
                json!({"level": 1}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["feature"]);
        let r = srv.get("/v1/customers/g/features/seats", &key).await;
        assert_eq!(r.body["used"], "2", "{name}: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_windows_slide() {
    for backend in backends("rate") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("rt", Some("free")).await;
        let key = srv.server_key().await;
        // free: snapshots = 1 per minute.
        let r = srv
            .post("/v1/check", &key, consume("rt", "snapshots", json!(1)))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["used"], "1");
        srv.clock.advance(SignedDuration::from_secs(15));
        let r = srv
            .post("/v1/check", &key, consume("rt", "snapshots", json!(1)))
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.body["code"], "rate_limited");
        assert_eq!(r.body["upgrade_to"], "pro");
        assert_eq!(r.header("retry-after"), Some("45"), "{:?}", r.headers);
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "rt", "feature": "snapshots"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["allowed"], false);
        assert_eq!(r.body["reason"], "rate_limited");
        srv.clock.advance(SignedDuration::from_secs(46));
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "rt", "feature": "snapshots"}),
            )
            .await;
        assert_eq!(r.body["allowed"], true, "{name}: {r}");
        let r = srv
            .post("/v1/check", &key, consume("rt", "snapshots", json!(1)))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_flags_and_values() {
    for backend in backends("caps_flags") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("cf", Some("free")).await;
        let key = srv.customer_key("cf").await;

        // Cap: free allows files up to 50 MB.
        let r = srv
            .get("/v1/customers/cf/features/file_mb?value=50", &key)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["kind"], "cap");
        assert_eq!(r.body["limit"], "50");
        assert_eq!(r.body["allowed"], true);
        let r = srv
            .get("/v1/customers/cf/features/file_mb?value=60", &key)
            .await;
        assert_eq!(r.body["allowed"], false, "{name}: {r}");
        assert_eq!(r.body["reason"], "above_cap");
        assert_eq!(r.body["upgrade_to"], "pro");
        let r = srv
            .get("/v1/customers/cf/features/file_mb?value=abc", &key)
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["value"]);

        // Flag: off on free.
        let r = srv.get("/v1/customers/cf/features/git_export", &key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["enabled"], false);
        assert_eq!(r.body["upgrade_to"], "pro");
        let r = srv
            .get("/v1/customers/cf/features/git_export?value=1", &key)
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");

        // Value set: txt only on free.
        let r = srv
            .get("/v1/customers/cf/features/export_formats", &key)
            .await;
        assert_eq!(
            r.body["value"],
            json!({"type": "string_set", "value": ["txt"]}),
            "{r}"
        );
        let r = srv
            .get(
                "/v1/customers/cf/features/export_formats?contains=txt",
                &key,
            )
            .await;
        assert_eq!(r.body["allowed"], true, "{name}: {r}");
        let r = srv
            .get(
                "/v1/customers/cf/features/export_formats?contains=srt",
                &key,
            )
            .await;
        assert_eq!(r.body["allowed"], false, "{name}: {r}");
        assert_eq!(r.body["upgrade_to"], "pro");
        let r = srv.get("/v1/customers/cf/features/nope", &key).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        let r = srv
            .get("/v1/customers/cf/features/file_mb?bogus=1", &key)
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");

        // The same questions through /v1/check (dry runs).
        let skey = srv.server_key().await;
        let r = srv
            .post(
                "/v1/check",
                &skey,
                json!({"customer": "cf", "feature": "git_export"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["allowed"], false);
        assert_eq!(r.body["reason"], "feature_not_in_plan");
        assert_eq!(r.body["upgrade_to"], "pro");
        let r = srv
            .post(
                "/v1/check",
                &skey,
                json!({"customer": "cf", "feature": "file_mb", "quantity": 200}),
            )
            .await;
        assert_eq!(r.body["allowed"], false, "{name}: {r}");
        assert_eq!(r.body["limit"], "50");
        let r = srv
            .post(
                "/v1/check",
                &skey,
                json!({"customer": "cf", "feature": "git_export", "consume": true}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["consume"]);

        // On pro everything above is allowed.
        srv.customer("big", Some("pro")).await;
        let r = srv
            .get("/v1/customers/big/features/git_export", &skey)
            .await;
        assert_eq!(r.body["enabled"], true, "{name}: {r}");
        let r = srv
            .get(
                "/v1/customers/big/features/export_formats?contains=srt",
                &skey,
            )
            .await;
        assert_eq!(r.body["allowed"], true, "{name}: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_quantities_never_crash_the_server() {
    for backend in backends("absurd") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        srv.customer("huge", Some("business")).await;
        let key = srv.server_key().await;
        let max = "1000000000000000";
        for _ in 0..2 {
            let r = srv
                .post("/v1/check", &key, consume("huge", "minutes", json!(max)))
                .await;
            assert!(r.status < 500, "{name}: {r}");
        }
        let r = srv
            .post(
                "/v1/check",
                &key,
                consume("huge", "minutes", json!("79228162514264337593543950335")),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["quantity"]);
        let r = srv
            .post("/v1/check", &key, consume("huge", "api_calls", json!(max)))
            .await;
        assert_eq!(r.status, 429, "{name}: {r}");
        let r = srv
            .post(
                "/v1/check",
                &key,
                consume("huge", "minutes", json!("0.0000000000000000000000000001")),
            )
            .await;
        assert!(r.status < 500, "{name}: {r}");
        for path in [
            "/v1/customers/huge/usage",
            "/v1/customers/huge/entitlements",
            "/v1/admin/usage/summary",
            "/v1/admin/usage/top",
            "/v1/admin/customers/near-limit",
            "/v1/admin/usage/export",
        ] {
            let r = srv.get(path, &srv.admin_key).await;
            assert_eq!(r.status, 200, "{name}: {path}: {r}");
        }
        let r = srv.get("/healthz", "").await;
        assert_eq!(r.status, 200);
        srv.stop().await;
    }
}
