//! Customers over real HTTP: CRUD, pagination, soft delete and restore,
//! subscriptions, overrides, grants, the emergency pool, the admin bypass, and
//! bad input (a clear 4xx naming the field, and nothing changed).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_engine::UsageRequest;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_update_list_and_paginate() {
    for backend in backends("cust_crud") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let key = srv.server_key().await;

        let r = srv
            .post(
                "/v1/customers",
                &key,
                json!({"id": "acme", "name": "Acme", "email": "billing@acme.test",
                       "currency": "EUR", "time_zone": "Europe/Paris",
                       "metadata": {"crm": "42"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        assert_eq!(r.body["id"], "acme");
        assert_eq!(r.body["currency"], "EUR");
        assert_eq!(r.body["time_zone"], "Europe/Paris");
        assert_eq!(r.body["metadata"]["crm"], "42");
        assert_eq!(r.body["subscription"], Value::Null);
        assert_eq!(r.body["created_at"], "2025-01-15T12:00:00Z");

        // The same id again is a conflict.
        let r = srv.post("/v1/customers", &key, json!({"id": "acme"})).await;
        assert_eq!(r.status, 409, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");

        let r = srv.get("/v1/customers/acme", &key).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["name"], "Acme");

        // PATCH: given fields change, others stay, null clears.
        let r = srv
            .patch(
                "/v1/customers/acme",
                &key,
                json!({"name": "Acme Inc", "email": null, "time_zone": "America/New_York"}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["name"], "Acme Inc");
        assert_eq!(r.body["email"], Value::Null);
        assert_eq!(r.body["time_zone"], "America/New_York");
        assert_eq!(r.body["currency"], "EUR");
        assert_eq!(r.body["metadata"]["crm"], "42");

        let r = srv.get("/v1/customers/nobody", &key).await;
        assert_eq!(r.status, 404, "{r}");
        assert_eq!(r.body["code"], "customer_not_found");

        // 24 more, half on pro.
        for i in 0..24 {
            let mut body = json!({"id": format!("c{i:02}")});
            if i % 2 == 0 {
                body["plan"] = json!("business");
            }
            let r = srv.post("/v1/customers", &key, body).await;
            assert_eq!(r.status, 201, "{r}");
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/customers?limit=10&starting_after={a}"),
                None => "/v1/customers?limit=10".to_string(),
            };
            let r = srv.get(&path, &key).await;
            assert_eq!(r.status, 200, "{r}");
            let data = r.body["data"].as_array().unwrap();
            pages += 1;
            for c in data {
                seen.push(c["id"].as_str().unwrap().to_string());
            }
            if !r.body["has_more"].as_bool().unwrap() {
                break;
            }
            after = seen.last().cloned();
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 25);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "pages come in id order without overlap");

        let r = srv.get("/v1/customers?plan=business&limit=100", &key).await;
        assert_eq!(r.status, 200, "{r}");
        let data = r.body["data"].as_array().unwrap();
        assert_eq!(data.len(), 12);
        assert!(data.iter().all(|c| c["subscription"]["plan"] == "business"));

        // Bad parameters name themselves.
        let r = srv.get("/v1/customers?limit=0", &key).await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["limit"]);
        let r = srv.get("/v1/customers?limit=lots", &key).await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["limit"]);
        let r = srv.get("/v1/customers?colour=red", &key).await;
        assert_eq!(r.status, 422, "{r}");
        assert!(r.body["detail"].as_str().unwrap().contains("colour"), "{r}");
        let r = srv.get("/v1/customers?plan=platinum", &key).await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["plan"]);
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_and_restore() {
    for backend in backends("cust_delete") {
        let srv = TestServer::start(backend, CATALOG).await;
        let key = srv.server_key().await;
        srv.customer("gone", Some("pro")).await;
        srv.customer("stays", None).await;

        let r = srv.delete("/v1/customers/gone", &key).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["deleted_at"], "2025-01-15T12:00:00Z");

        // Refused by the engine from now on; its record is still readable.
        let err = srv
            .engine
            .consume(UsageRequest::new("gone", "api_calls", dec("1")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "customer_deleted");
        let r = srv.get("/v1/customers/gone", &key).await;
        assert_eq!(r.status, 200, "{r}");
        assert!(r.body["deleted_at"].is_string());

        // Hidden from the list unless asked for.
        let r = srv.get("/v1/customers", &key).await;
        let ids: Vec<&str> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["stays"]);
        let r = srv.get("/v1/customers?include_deleted=true", &key).await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 2, "{r}");

        // A deleted customer cannot be changed or deleted again.
        let r = srv
            .patch("/v1/customers/gone", &key, json!({"name": "x"}))
            .await;
        assert_eq!(r.status, 409, "{r}");
        let r = srv.delete("/v1/customers/gone", &key).await;
        assert_eq!(r.status, 409, "{r}");

        let r = srv
            .call(M::POST, "/v1/customers/gone/restore", &key, None)
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["deleted_at"], Value::Null);
        assert_eq!(r.body["subscription"]["plan"], "pro");
        let d = srv
            .engine
            .consume(UsageRequest::new("gone", "api_calls", dec("1")))
            .await
            .unwrap();
        assert!(d.allowed);

        let r = srv
            .call(M::POST, "/v1/customers/stays/restore", &key, None)
            .await;
        assert_eq!(r.status, 409, "{r}");
        let r = srv
            .call(M::POST, "/v1/customers/nobody/restore", &key, None)
            .await;
        assert_eq!(r.status, 404, "{r}");

        // Deleted customers survive a restart as deleted.
        srv.delete("/v1/customers/stays", &key).await;
        let srv = srv.restart().await;
        let r = srv.get("/v1/customers/stays", &srv.admin_key).await;
        assert!(r.body["deleted_at"].is_string(), "{r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions() {
    for backend in backends("cust_sub") {
        let srv = TestServer::start(backend, CATALOG).await;
        let key = srv.server_key().await;

        // Subscribing at creation: pro has a 14-day trial.
        let r = srv
            .post("/v1/customers", &key, json!({"id": "t", "plan": "pro"}))
            .await;
        assert_eq!(r.status, 201, "{r}");
        let sub = &r.body["subscription"];
        assert_eq!(sub["plan"], "pro");
        assert_eq!(sub["plan_version"], 1);
        assert_eq!(sub["status"], "trialing");
        assert_eq!(sub["trial_ends_at"], "2025-01-29T12:00:00Z");

        // Explicit status and trial length.
        let r = srv
            .post(
                "/v1/customers",
                &key,
                json!({"id": "u", "plan": "free", "trial_days": 3}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        assert_eq!(
            r.body["subscription"]["trial_ends_at"],
            "2025-01-18T12:00:00Z"
        );

        // An unknown plan at creation changes nothing: no customer is created.
        let r = srv
            .post(
                "/v1/customers",
                &key,
                json!({"id": "v", "plan": "platinum"}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["plan"]);
        assert!(
            r.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("free")
        );
        assert_eq!(srv.get("/v1/customers/v", &key).await.status, 404);

        let r = srv.get("/v1/customers/t/subscription", &key).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["status"], "trialing");

        // Change plan.
        let r = srv
            .put(
                "/v1/customers/t/subscription",
                &key,
                json!({"plan": "business", "status": "active"}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["plan"], "business");
        assert_eq!(r.body["status"], "active");
        assert_eq!(r.body["trial_ends_at"], Value::Null);

        // Status only.
        let r = srv
            .patch(
                "/v1/customers/t/subscription",
                &key,
                json!({"status": "past_due"}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["status"], "past_due");
        let r = srv
            .patch(
                "/v1/customers/t/subscription",
                &key,
                json!({"status": "canceled"}),
            )
            .await;
        assert_eq!(r.body["status"], "canceled");
        assert!(r.body["canceled_at"].is_string());
        let d = srv
            .engine
            .consume(UsageRequest::new("t", "api_calls", dec("1")))
            .await
            .unwrap();
        assert!(!d.allowed, "a canceled subscription is refused");

        // Bad subscription requests change nothing.
        let before = srv.get("/v1/customers/t/subscription", &key).await.body;
        for (body, field) in [
            (json!({"plan": "nope"}), "plan"),
            (json!({"plan": "pro", "status": "paused"}), "status"),
            (json!({"plan": "pro", "version": 7}), "version"),
            (json!({"plan": "pro", "trial_days": 0}), "trial_days"),
            (json!({"plan": "pro", "anchor": "yesterday"}), "anchor"),
            (
                json!({"plan": "pro", "status": "active", "trial_days": 5}),
                "status",
            ),
            (json!({"status": "active"}), "body"),
        ] {
            let r = srv
                .put("/v1/customers/t/subscription", &key, body.clone())
                .await;
            assert_eq!(r.status, 422, "{body}: {r}");
            let fields = r.error_fields();
            assert!(
                fields.iter().any(|f| f == field)
                    || (field == "body" && r.body["detail"].as_str().unwrap().contains("plan")),
                "{body}: {r}"
            );
        }
        assert_eq!(
            srv.get("/v1/customers/t/subscription", &key).await.body,
            before
        );

        // No subscription yet.
        srv.customer("bare", None).await;
        let r = srv.get("/v1/customers/bare/subscription", &key).await;
        assert_eq!(r.status, 404, "{r}");
        assert_eq!(r.body["code"], "subscription_not_found");
        let r = srv
            .patch(
                "/v1/customers/bare/subscription",
                &key,
                json!({"status": "active"}),
            )
            .await;
        assert_eq!(r.status, 409, "{r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_replace_the_plan_for_one_customer() {
    for backend in backends("cust_override") {
        let srv = TestServer::start(backend, CATALOG).await;
        let key = srv.server_key().await;
        srv.customer("o", Some("free")).await;

        // free allows 100 api_calls; the override allows 5.
        let r = srv
            .put("/v1/customers/o/overrides/api_calls", &key, json!(5))
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["entitlement"]["kind"], "metered");
        assert_eq!(r.body["entitlement"]["limit"], "5");
        assert_eq!(r.body["entitlement"]["enforcement"], "hard");
        let d = srv
            .engine
            .consume(UsageRequest::new("o", "api_calls", dec("6")))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.limit, Some(dec("5")));

        // Object form with options; flags; values with a plain JSON value.
        let r = srv
            .put(
                "/v1/customers/o/overrides/api_calls",
                &key,
                json!({"kind": "metered", "limit": "unlimited"}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        let r = srv
            .put(
                "/v1/customers/o/overrides/git_export",
                &key,
                json!({"enabled": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert!(srv.engine.flag("o", "git_export").unwrap());
        let r = srv
            .put(
                "/v1/customers/o/overrides/export_formats",
                &key,
                json!(["txt", "vtt"]),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert!(
            srv.engine
                .value_contains("o", "export_formats", "vtt")
                .unwrap()
        );

        // Wrong shapes for the feature's kind: 422 naming the field, no change.
        for (feature, body, field) in [
            ("git_export", json!({"limit": 5}), "limit"),
            ("git_export", json!({"enabled": "yes"}), "enabled"),
            ("api_calls", json!({"kind": "gauge", "limit": 5}), "kind"),
            ("api_calls", json!({"limit": -3}), "limit"),
            ("api_calls", json!({"limit": 2.5}), "limit"),
            ("api_calls", json!({"enforcement": "soft"}), "limit"),
            (
                "api_calls",
                json!({"limit": 5, "enforcement": "lenient"}),
                "enforcement",
            ),
            ("export_formats", json!(42), "value"),
            ("file_mb", json!({"limit": 5}), "limit"),
        ] {
            let r = srv
                .put(
                    &format!("/v1/customers/o/overrides/{feature}"),
                    &key,
                    body.clone(),
                )
                .await;
            assert_eq!(r.status, 422, "{feature} {body}: {r}");
            assert!(
                r.error_fields().iter().any(|f| f == field),
                "{feature} {body}: expected field {field}: {r}"
            );
        }
        assert!(srv.engine.flag("o", "git_export").unwrap());

        let r = srv
            .put("/v1/customers/o/overrides/teleport", &key, json!(true))
            .await;
        assert_eq!(r.status, 404, "{r}");
        assert_eq!(r.body["code"], "feature_not_found");
        let r = srv
            .put("/v1/customers/nobody/overrides/api_calls", &key, json!(5))
            .await;
        assert_eq!(r.status, 404, "{r}");

        // Removing an override restores the plan's entitlement.
        let r = srv
            .delete("/v1/customers/o/overrides/git_export", &key)
            .await;
        assert_eq!(r.status, 204, "{r}");
        assert!(!srv.engine.flag("o", "git_export").unwrap());
        let r = srv
            .delete("/v1/customers/o/overrides/git_export", &key)
            .await;
        assert_eq!(r.status, 404, "{r}");

        // Overrides survive a restart.
        let srv = srv.restart().await;
        assert!(
            srv.engine
                .value_contains("o", "export_formats", "vtt")
                .unwrap()
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_the_emergency_pool() {
    for backend in backends("cust_grants") {
        let srv = TestServer::start(backend, CATALOG).await;
        let key = srv.server_key().await;
        srv.customer("g", Some("free")).await;
        srv.customer("p", Some("pro")).await;

        let r = srv
            .post(
                "/v1/customers/g/grants",
                &key,
                json!({"feature": "api_calls", "quantity": "50", "kind": "top_up",
                       "expires_at": "2025-02-15T00:00:00Z", "metadata": {"order": "o-1"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        let grant_id = r.body["id"].as_str().unwrap().to_string();
        assert!(grant_id.starts_with("grt_"), "{grant_id}");
        assert_eq!(r.body["quantity"], "50");
        assert_eq!(r.body["remaining"], "50");

        // The grant extends the allowance: 100 (plan) + 50.
        let d = srv
            .engine
            .consume(UsageRequest::new("g", "api_calls", dec("120")))
            .await
            .unwrap();
        assert!(d.allowed, "{d:?}");
        let r = srv.get("/v1/customers/g/grants", &key).await;
        assert_eq!(r.status, 200, "{r}");
        let grants = r.body["data"].as_array().unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0]["remaining"], "30");
        assert_eq!(grants[0]["metadata"]["order"], "o-1");

        // Invalid grants: field named, nothing granted.
        for (body, field) in [
            (json!({"feature": "api_calls", "quantity": -5}), "quantity"),
            (json!({"feature": "api_calls", "quantity": "0"}), "quantity"),
            (
                json!({"feature": "api_calls", "quantity": "lots"}),
                "quantity",
            ),
            (json!({"feature": "api_calls"}), "body"),
            (json!({"feature": "git_export", "quantity": 5}), "feature"),
            (json!({"feature": "warp", "quantity": 5}), "feature"),
            (
                json!({"feature": "api_calls", "quantity": 5, "kind": "gift"}),
                "kind",
            ),
            (
                json!({"feature": "api_calls", "quantity": 5, "expires_at": "2020-01-01T00:00:00Z"}),
                "expires_at",
            ),
            (
                json!({"feature": "api_calls", "quantity": 5, "metadata": [1]}),
                "metadata",
            ),
        ] {
            let r = srv.post("/v1/customers/g/grants", &key, body.clone()).await;
            assert_eq!(r.status, 422, "{body}: {r}");
            let fields = r.error_fields();
            assert!(
                fields.iter().any(|f| f == field) || field == "body",
                "{body}: expected {field}: {r}"
            );
        }
        let r = srv.get("/v1/customers/g/grants", &key).await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "{r}");

        // Voiding: what is left is gone; a second void is a 404.
        let r = srv
            .delete(&format!("/v1/customers/g/grants/{grant_id}"), &key)
            .await;
        assert_eq!(r.status, 204, "{r}");
        let r = srv.get("/v1/customers/g/grants", &key).await;
        assert!(r.body["data"][0]["voided_at"].is_string(), "{r}");
        let r = srv
            .delete(&format!("/v1/customers/g/grants/{grant_id}"), &key)
            .await;
        assert_eq!(r.status, 404, "{r}");
        assert_eq!(r.body["code"], "grant_not_found");
        // Another customer's grant id is not found under this customer.
        let other = srv
            .post(
                "/v1/customers/p/grants",
                &key,
                json!({"feature": "api_calls", "quantity": 1}),
            )
            .await;
        let other_id = other.body["id"].as_str().unwrap();
        let r = srv
            .delete(&format!("/v1/customers/g/grants/{other_id}"), &key)
            .await;
        assert_eq!(r.status, 404, "{r}");

        // Emergency pool: pro has 100 extra api_calls once per period.
        let r = srv
            .post(
                "/v1/customers/p/emergency-pool",
                &key,
                json!({"feature": "api_calls"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        assert_eq!(r.body["kind"], "emergency");
        assert_eq!(r.body["quantity"], "100");
        assert!(r.body["expires_at"].is_string());
        let r = srv
            .post(
                "/v1/customers/p/emergency-pool",
                &key,
                json!({"feature": "api_calls"}),
            )
            .await;
        assert_eq!(r.status, 409, "{r}");
        let r = srv
            .post(
                "/v1/customers/g/emergency-pool",
                &key,
                json!({"feature": "api_calls"}),
            )
            .await;
        assert_eq!(r.status, 409, "free has no emergency allowance: {r}");
        let r = srv
            .post(
                "/v1/customers/p/emergency-pool",
                &key,
                json!({"feature": "seats"}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["feature"]);
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bypass_is_for_admin_keys() {
    for backend in backends("cust_bypass") {
        let srv = TestServer::start(backend, CATALOG).await;
        let key = srv.server_key().await;
        srv.customer("b", Some("free")).await;
        let r = srv
            .put(
                "/v1/customers/b/admin-bypass",
                &key,
                json!({"enabled": true}),
            )
            .await;
        assert_eq!(r.status, 403, "{r}");
        let r = srv
            .put(
                "/v1/customers/b/admin-bypass",
                &srv.admin_key,
                json!({"enabled": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["admin_bypass"], true);
        let d = srv
            .engine
            .consume(UsageRequest::new("b", "api_calls", dec("1000")))
            .await
            .unwrap();
        assert!(d.allowed && d.bypassed, "{d:?}");
        let r = srv
            .put(
                "/v1/customers/b/admin-bypass",
                &srv.admin_key,
                json!({"enabled": "yes"}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["enabled"]);
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    for backend in backends("cust_bad") {
        let mut settings = tollgate_server::config::Settings::embedded();
        settings.body_limit = 4096;
        let srv = TestServer::start_with(backend, CATALOG, settings).await;
        let key = srv.server_key().await;
        srv.customer("keep", None).await;
        let snapshot = srv
            .get("/v1/customers?include_deleted=true", &key)
            .await
            .body;

        // Not JSON at all: 400.
        let r = srv
            .call_raw(
                M::POST,
                "/v1/customers",
                &key,
                "application/json",
                "{\"id\": ",
            )
            .await;
        assert_eq!(r.status, 400, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["code"], "malformed_body");

        // Unknown field: 422 naming it.
        let r = srv
            .post("/v1/customers", &key, json!({"id": "n1", "nickname": "x"}))
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["nickname"]);

        // Wrong type: 422 naming it.
        let r = srv
            .post("/v1/customers", &key, json!({"id": "n2", "name": 5}))
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["name"]);
        let r = srv
            .patch(
                "/v1/customers/keep",
                &key,
                json!({"metadata": {"a": 1}, "currency": 7}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["currency"]);

        // Several invalid fields are all named at once.
        let r = srv
            .post(
                "/v1/customers",
                &key,
                json!({"id": "n3", "currency": "euro", "time_zone": "Mars/Olympus",
                       "email": "not-an-email", "metadata": "x"}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        let mut fields = r.error_fields();
        fields.sort();
        assert_eq!(fields, ["currency", "email", "metadata", "time_zone"]);

        // Missing required field.
        let r = srv.post("/v1/customers", &key, json!({"name": "x"})).await;
        assert_eq!(r.status, 422, "{r}");
        assert!(r.body["detail"].as_str().unwrap().contains("id"), "{r}");

        // Too large: 413 problem, whether announced or streamed.
        let big = json!({"id": "n4", "metadata": {"blob": "x".repeat(10_000)}});
        let r = srv.post("/v1/customers", &key, big).await;
        assert_eq!(r.status, 413, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert!(r.body["detail"].as_str().unwrap().contains("4096"), "{r}");
        // Streamed: the server answers 413 once the limit is passed, with the
        // rest of the body unread; the connection lingers (reads what the
        // client still sends) before it closes, so the answer is not lost to
        // a connection reset.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(b"{\"id\": \"n5\", \"name\": \"".to_vec()),
            Ok(vec![b'y'; 8000]),
            Ok(b"\"}".to_vec()),
        ];
        let r = srv
            .call_raw(
                M::POST,
                "/v1/customers",
                &key,
                "application/json",
                reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
            )
            .await;
        assert_eq!(r.status, 413, "{r}");
        // Announced too large, sent whole before the answer is read (as
        // simple clients do): the body is taken, the 413 read.
        let answer = oversize_upload_answer(&srv, &key).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");

        // Invalid id.
        let r = srv.post("/v1/customers", &key, json!({"id": ""})).await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), ["id"]);

        // No key, a wrong key.
        let r = srv.post("/v1/customers", "", json!({"id": "n6"})).await;
        assert_eq!(r.status, 401, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        let r = srv
            .post("/v1/customers", "tg_not_a_key", json!({"id": "n6"}))
            .await;
        assert_eq!(r.status, 401, "{r}");

        assert_eq!(
            srv.get("/v1/customers?include_deleted=true", &key)
                .await
                .body,
            snapshot,
            "nothing changed"
        );
        srv.stop().await;
    }
}

/// Sends `POST /v1/customers` with a 16 MB body (announced) the way simple
/// clients do, the whole request first and then the answer, and returns what
/// the server sent until it ended the connection. The server answers 413 as
/// soon as it reads the announced size; the rest must still be taken (a
/// broken pipe or a reset here means the client never sees the answer).
async fn oversize_upload_answer(srv: &TestServer, key: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base_url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = vec![b' '; 16_000_000];
    let head = format!(
        "POST /v1/customers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body)
        .await
        .expect("the server takes the rest of the body after its answer");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .expect("the 413 is read to the end, not lost to a connection reset");
    String::from_utf8_lossy(&answer).into_owned()
}
