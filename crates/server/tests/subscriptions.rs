//! Plan changes over real HTTP, on both backends: upgrade with proration and
//! the new limits at once, downgrade scheduled at period end (visible,
//! cancellable, applied when the clock passes the period end), blockers
//! (refused, then forced), trials, cancellation, version migration, history.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const CATALOG: &str = r#"
[catalog]
name = "Changes"
currency = "USD"

[features.api_calls]
kind = "metered"
reset = "billing_period"

[features.locations]
kind = "gauge"

[features.sso]
kind = "flag"

[plans.basic]
tier = 0
base_price = "10"

[plans.basic.entitlements]
api_calls = 100
locations = 1
sso = false

[plans.pro]
tier = 1
base_price = "30"
trial_days = 14

[plans.pro.entitlements]
api_calls = 1000
locations = 10
sso = true
"#;

/// Pro's second version: more calls, fewer locations.
fn catalog_v2() -> String {
    let v2 = CATALOG.replace(
        "api_calls = 1000\nlocations = 10",
        "api_calls = 2000\nlocations = 5",
    );
    assert_ne!(v2, CATALOG, "pro's entitlements moved in CATALOG");
    v2
}

/// Starts the server with the clock at 2025-11-01 00:00 UTC (a 30-day month),
/// without its billing worker (as every test server): the tests apply due
/// changes themselves, at the instants they choose.
async fn start(backend: Backend) -> TestServer {
    let srv = TestServer::start(backend, CATALOG).await;
    srv.clock.set(ts("2025-11-01T00:00:00Z"));
    srv
}

/// Creates a customer and subscribes it over HTTP (so the history has it).
async fn subscribed(srv: &TestServer, id: &str, plan: &str) {
    let r = srv
        .post("/v1/customers", &srv.admin_key, json!({"id": id}))
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = srv
        .put(
            &format!("/v1/customers/{id}/subscription"),
            &srv.admin_key,
            json!({"plan": plan, "status": "active"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
}

async fn consume(srv: &TestServer, id: &str, quantity: u32) -> Reply {
    srv.post(
        "/v1/check",
        &srv.admin_key,
        json!({"customer": id, "feature": "api_calls", "quantity": quantity, "consume": true}),
    )
    .await
}

async fn set_locations(srv: &TestServer, id: &str, level: u32) -> Reply {
    srv.put(
        &format!("/v1/customers/{id}/gauges/locations"),
        &srv.admin_key,
        json!({"level": level}),
    )
    .await
}

async fn change(srv: &TestServer, id: &str, body: Value) -> Reply {
    srv.post(
        &format!("/v1/customers/{id}/subscription/change"),
        &srv.admin_key,
        body,
    )
    .await
}

async fn plan_of(srv: &TestServer, id: &str) -> (String, u64, String) {
    let r = srv
        .get(&format!("/v1/customers/{id}/subscription"), &srv.admin_key)
        .await;
    assert_eq!(r.status, 200, "{r}");
    (
        r.body["plan"].as_str().unwrap().to_string(),
        r.body["plan_version"].as_u64().unwrap(),
        r.body["status"].as_str().unwrap().to_string(),
    )
}

async fn history_kinds(srv: &TestServer, id: &str) -> Vec<String> {
    let r = srv
        .get(
            &format!("/v1/customers/{id}/subscription/history"),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_string())
        .collect()
}

fn amounts(lines: &Value) -> Vec<String> {
    lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_on_day_10_prorates_and_enforces_the_new_limits_at_once() {
    for backend in backends("sub_upgrade") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "acme", "basic").await;
        subscribed(&srv, "eager", "basic").await;
        assert_eq!(consume(&srv, "acme", 100).await.status, 200);
        assert_eq!(
            consume(&srv, "acme", 1).await.status,
            429,
            "{name}: basic allows 100"
        );

        // Day 10 of November: 21 of 30 days left.
        srv.clock.set(ts("2025-11-10T00:00:00Z"));
        // The customer may preview its own change.
        let own = srv.customer_key("acme").await;
        let r = srv
            .post(
                "/v1/customers/acme/subscription/change/preview",
                &own,
                json!({"plan": "pro"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "preview");
        assert_eq!(r.body["direction"], "upgrade");
        assert_eq!(r.body["timing"], "immediately");
        // Credit 10 × 21/30 = 7.00, charge 30 × 21/30 = 21.00.
        assert_eq!(
            amounts(&r.body["proration_lines"]),
            ["-7.00", "21.00"],
            "{name}"
        );
        assert_eq!(r.body["proration_total"], "14.00");
        assert_eq!(r.body["features_gained"], json!(["sso"]));
        assert!(r.body["blockers"].as_array().unwrap().is_empty());
        // …but not apply it.
        let r = srv
            .post(
                "/v1/customers/acme/subscription/change",
                &own,
                json!({"plan": "pro"}),
            )
            .await;
        assert_eq!(r.status, 403, "{name}: {r}");
        assert_eq!(plan_of(&srv, "acme").await.0, "basic");

        let r = change(&srv, "acme", json!({"plan": "pro", "reason": "growing"})).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "applied");
        assert_eq!(r.body["effective_at"], "2025-11-10T00:00:00Z");
        assert_eq!(r.body["change"]["kind"], "upgrade");
        assert_eq!(r.body["change"]["reason"], "growing");
        assert_eq!(
            amounts(&r.body["pending_items"]),
            ["-7.00", "21.00"],
            "{name}"
        );
        assert_eq!(r.body["subscription"]["plan"], "pro");
        // The new limits hold at once: 100 used, 900 more allowed.
        assert_eq!(consume(&srv, "acme", 900).await.status, 200, "{name}");
        assert_eq!(consume(&srv, "acme", 1).await.status, 429, "{name}");
        assert_eq!(set_locations(&srv, "acme", 10).await.status, 200, "{name}");
        assert_eq!(
            history_kinds(&srv, "acme").await,
            ["subscribe", "upgrade"],
            "{name}"
        );
        // The two lines wait for acme's next invoice.
        let pending = srv
            .state
            .store
            .changes()
            .pending_items("acme")
            .await
            .unwrap();
        assert_eq!(pending.len(), 2);

        // `invoice_now`: the same lines on an off-cycle invoice, issued now.
        let r = change(
            &srv,
            "eager",
            json!({"plan": "pro", "proration_behavior": "invoice_now"}),
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let invoice_id = r.body["invoice_id"].as_str().unwrap().to_string();
        let stored = srv
            .state
            .store
            .billing()
            .get_invoice(&invoice_id)
            .await
            .unwrap()
            .unwrap();
        let inv = &stored.invoice;
        assert_eq!(inv.status.as_str(), "open", "{name}");
        assert!(inv.number.is_some(), "{name}: numbered when issued");
        assert_eq!(inv.lines.len(), 2);
        assert_eq!(inv.totals.total.to_string(), "14.00", "{name}");
        assert_eq!(inv.period_start, ts("2025-11-10T00:00:00Z"));
        assert_eq!(inv.period_end, ts("2025-12-01T00:00:00Z"));
        assert!(
            srv.state
                .store
                .changes()
                .pending_items("eager")
                .await
                .unwrap()
                .is_empty(),
            "{name}: nothing left for the next invoice"
        );

        // At the period's close, acme's invoice carries its two proration lines.
        srv.clock.set(ts("2025-12-01T00:00:10Z"));
        srv.state.billing.run_once().await.unwrap();
        let invoices = srv
            .state
            .store
            .billing()
            .list_invoices(&tollgate_store::billing::InvoiceFilter {
                customer_id: Some("acme".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let prorations: Vec<String> = invoices
            .iter()
            .flat_map(|i| i.lines.iter())
            .filter(|l| l.kind == tollgate_core::billing::InvoiceLineKind::Proration)
            .map(|l| l.amount.to_string())
            .collect();
        assert_eq!(prorations, ["-7.00", "21.00"], "{name}: {invoices:?}");
        assert!(
            srv.state
                .store
                .changes()
                .pending_items("acme")
                .await
                .unwrap()
                .is_empty()
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_waits_for_period_end_is_visible_cancellable_and_applied_then() {
    for backend in backends("sub_downgrade") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "acme", "pro").await;
        srv.clock.set(ts("2025-11-10T00:00:00Z"));

        let r = change(&srv, "acme", json!({"plan": "basic"})).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "scheduled");
        assert_eq!(r.body["direction"], "downgrade");
        assert_eq!(r.body["effective_at"], "2025-12-01T00:00:00Z");
        assert!(r.body["proration_lines"].as_array().unwrap().is_empty());
        assert_eq!(
            r.body["features_lost"],
            json!([{"feature": "sso", "lost_at": "2025-12-01T00:00:00Z"}])
        );
        assert_eq!(plan_of(&srv, "acme").await.0, "pro", "{name}: still pro");

        // Visible to the customer, cancellable by an operator.
        let own = srv.customer_key("acme").await;
        let r = srv
            .get("/v1/customers/acme/subscription/scheduled", &own)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["scheduled"]["action"], "change_plan");
        assert_eq!(r.body["scheduled"]["to_plan"], "basic");
        // A second one is refused while it waits.
        let r = change(&srv, "acme", json!({"plan": "basic"})).await;
        assert_eq!(r.status, 409, "{name}: {r}");
        let r = srv
            .delete("/v1/customers/acme/subscription/scheduled", &srv.admin_key)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "canceled");
        let r = srv
            .get("/v1/customers/acme/subscription/scheduled", &own)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["scheduled"], Value::Null);
        let r = srv
            .delete("/v1/customers/acme/subscription/scheduled", &srv.admin_key)
            .await;
        assert_eq!(r.status, 404, "{name}: nothing to cancel: {r}");

        // Scheduled again; nothing happens before the period end.
        let r = change(&srv, "acme", json!({"plan": "basic", "reason": "budget"})).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        srv.clock.set(ts("2025-11-30T23:59:59Z"));
        let done = srv
            .state
            .billing
            .apply_due_changes(srv.engine.now())
            .await
            .unwrap();
        assert!(done.applied.is_empty());
        assert_eq!(plan_of(&srv, "acme").await.0, "pro");

        srv.clock.set(ts("2025-12-01T00:00:05Z"));
        let done = srv
            .state
            .billing
            .apply_due_changes(srv.engine.now())
            .await
            .unwrap();
        assert_eq!(done.applied.len(), 1, "{name}: {done:?}");
        assert_eq!(plan_of(&srv, "acme").await.0, "basic");
        assert_eq!(consume(&srv, "acme", 101).await.status, 429, "{name}");
        let r = srv
            .get("/v1/customers/acme/subscription/history", &own)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let last = &r.body["data"][1];
        assert_eq!(last["kind"], "downgrade");
        assert_eq!(last["from_plan"], "pro");
        assert_eq!(last["to_plan"], "basic");
        assert_eq!(last["effective_at"], "2025-12-01T00:00:00Z");
        assert_eq!(last["reason"], "budget");
        // Applied once only.
        let again = srv
            .state
            .billing
            .apply_due_changes(srv.engine.now())
            .await
            .unwrap();
        assert!(again.applied.is_empty());
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_that_does_not_fit_is_refused_with_every_blocker_then_forced() {
    for backend in backends("sub_blocked") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "acme", "pro").await;
        assert_eq!(set_locations(&srv, "acme", 7).await.status, 200);
        assert_eq!(consume(&srv, "acme", 500).await.status, 200);
        srv.clock.set(ts("2025-11-10T00:00:00Z"));

        let r = change(
            &srv,
            "acme",
            json!({"plan": "basic", "timing": "immediately"}),
        )
        .await;
        assert_eq!(r.status, 409, "{name}: {r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["code"], "plan_change_blocked");
        assert_eq!(r.body["field"], "plan");
        let blockers = r.body["blockers"].as_array().unwrap();
        assert_eq!(blockers.len(), 2, "{name}: {r}");
        let locations = blockers
            .iter()
            .find(|b| b["feature"] == "locations")
            .unwrap();
        assert_eq!(locations["in_use"], "7");
        assert_eq!(locations["allowed"], "1");
        assert_eq!(
            locations["message"],
            "7 locations in use, plan basic allows 1"
        );
        assert!(blockers.iter().any(|b| b["feature"] == "api_calls"));
        assert!(r.body["detail"].as_str().unwrap().contains("7 locations"));
        assert_eq!(
            plan_of(&srv, "acme").await.0,
            "pro",
            "{name}: nothing changed"
        );
        assert_eq!(history_kinds(&srv, "acme").await, ["subscribe"]);

        let r = change(
            &srv,
            "acme",
            json!({"plan": "basic", "timing": "immediately", "force": true,
                   "reason": "contract ended"}),
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "applied");
        assert_eq!(r.body["excess"].as_array().unwrap().len(), 2);
        // Credit 30 × 21/30 = 21.00, charge 10 × 21/30 = 7.00.
        assert_eq!(
            amounts(&r.body["pending_items"]),
            ["-21.00", "7.00"],
            "{name}"
        );
        let details = &r.body["change"]["details"];
        assert_eq!(details["forced"], true);
        assert_eq!(details["excess"].as_array().unwrap().len(), 2);
        assert_eq!(plan_of(&srv, "acme").await.0, "basic");
        // Over the new limit: no more locations, no more calls.
        assert_eq!(set_locations(&srv, "acme", 8).await.status, 429, "{name}");
        assert_eq!(consume(&srv, "acme", 1).await.status, 429, "{name}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trials_start_convert_and_expire() {
    for backend in backends("sub_trials") {
        let name = backend.name;
        let srv = start(backend).await;
        for id in ["keen", "gone"] {
            let r = srv
                .post("/v1/customers", &srv.admin_key, json!({"id": id}))
                .await;
            assert_eq!(r.status, 201, "{r}");
            let r = srv
                .post(
                    &format!("/v1/customers/{id}/subscription/trial"),
                    &srv.admin_key,
                    json!({"plan": "pro"}),
                )
                .await;
            assert_eq!(r.status, 200, "{name}: {r}");
            assert_eq!(r.body["subscription"]["status"], "trialing");
            assert_eq!(
                r.body["subscription"]["trial_ends_at"],
                "2025-11-15T00:00:00Z"
            );
            assert_eq!(r.body["scheduled"]["action"], "trial_expire");
        }
        // A second trial is refused.
        let r = srv
            .post(
                "/v1/customers/keen/subscription/trial",
                &srv.admin_key,
                json!({"plan": "pro"}),
            )
            .await;
        assert_eq!(r.status, 409, "{name}: {r}");
        assert_eq!(consume(&srv, "keen", 5).await.status, 200);

        srv.clock.set(ts("2025-11-05T00:00:00Z"));
        let r = srv
            .post(
                "/v1/customers/keen/subscription/trial/convert",
                &srv.admin_key,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["subscription"]["status"], "active");
        assert_eq!(r.body["subscription"]["anchor"], "2025-11-05T00:00:00Z");
        assert_eq!(r.body["change"]["kind"], "trial_convert");
        let r = srv
            .get("/v1/customers/keen/subscription/scheduled", &srv.admin_key)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(
            r.body["scheduled"],
            Value::Null,
            "{name}: the expiry is gone"
        );

        // The other trial runs out.
        srv.clock.set(ts("2025-11-15T00:00:01Z"));
        let done = srv
            .state
            .billing
            .apply_due_changes(srv.engine.now())
            .await
            .unwrap();
        assert_eq!(done.applied.len(), 1, "{name}: {done:?}");
        assert_eq!(done.applied[0].customer_id, "gone");
        assert_eq!(plan_of(&srv, "gone").await.2, "canceled");
        assert_eq!(plan_of(&srv, "keen").await.2, "active");
        assert_eq!(consume(&srv, "gone", 1).await.status, 403, "{name}");
        assert_eq!(consume(&srv, "keen", 1).await.status, 200, "{name}");
        assert_eq!(
            history_kinds(&srv, "keen").await,
            ["trial_start", "trial_convert"]
        );
        assert_eq!(
            history_kinds(&srv, "gone").await,
            ["trial_start", "trial_expire"]
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_at_period_end_or_now() {
    for backend in backends("sub_cancel") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "later", "pro").await;
        subscribed(&srv, "now", "pro").await;
        srv.clock.set(ts("2025-11-20T00:00:00Z"));
        let r = srv
            .post(
                "/v1/customers/later/subscription/cancel",
                &srv.admin_key,
                json!({"reason": "moving on"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "scheduled");
        assert_eq!(r.body["scheduled"]["effective_at"], "2025-12-01T00:00:00Z");
        assert_eq!(plan_of(&srv, "later").await.2, "active");

        let r = srv
            .post(
                "/v1/customers/now/subscription/cancel",
                &srv.admin_key,
                json!({"at_period_end": false}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "applied");
        assert_eq!(r.body["subscription"]["status"], "canceled");
        assert_eq!(consume(&srv, "now", 1).await.status, 403, "{name}");
        let r = srv
            .post(
                "/v1/customers/now/subscription/cancel",
                &srv.admin_key,
                json!({"at_period_end": false}),
            )
            .await;
        assert_eq!(r.status, 409, "{name}: already canceled: {r}");
        // An operator's PATCH back to active is a reactivation in the history.
        let r = srv
            .patch(
                "/v1/customers/now/subscription",
                &srv.admin_key,
                json!({"status": "active"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(consume(&srv, "now", 1).await.status, 200, "{name}");
        assert_eq!(
            history_kinds(&srv, "now").await,
            ["subscribe", "cancel", "reactivate"]
        );

        srv.clock.set(ts("2025-12-01T00:00:00Z"));
        let done = srv
            .state
            .billing
            .apply_due_changes(srv.engine.now())
            .await
            .unwrap();
        assert_eq!(done.applied.len(), 1, "{name}: {done:?}");
        assert_eq!(plan_of(&srv, "later").await.2, "canceled");
        assert_eq!(history_kinds(&srv, "later").await, ["subscribe", "cancel"]);
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_previews_who_gains_and_loses_then_moves_those_who_fit() {
    for backend in backends("sub_migrate") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "fits", "pro").await;
        subscribed(&srv, "big", "pro").await;
        subscribed(&srv, "small", "basic").await;
        assert_eq!(set_locations(&srv, "big", 7).await.status, 200);
        let mut srv = srv;
        srv.catalog_toml = catalog_v2();
        let srv = srv.restart().await;
        assert_eq!(srv.engine.plan_versions("pro"), [1, 2]);

        let r = srv
            .post(
                "/v1/admin/plans/pro/migrate",
                &srv.admin_key,
                json!({"preview": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "preview");
        assert_eq!(r.body["to_version"], 2);
        let customers = r.body["customers"].as_array().unwrap();
        assert_eq!(customers.len(), 2, "{name}: only pro's subscribers: {r}");
        let big = customers
            .iter()
            .find(|c| c["customer_id"] == "big")
            .unwrap();
        assert!(
            big["gains"][0].as_str().unwrap().contains("api_calls"),
            "{name}: {big}"
        );
        assert!(
            big["losses"][0].as_str().unwrap().contains("locations"),
            "{name}: {big}"
        );
        assert_eq!(
            big["blockers"][0]["message"],
            "7 locations in use, plan pro allows 5"
        );
        assert_eq!(
            plan_of(&srv, "fits").await.1,
            1,
            "{name}: a preview changes nothing"
        );

        let r = srv
            .post("/v1/admin/plans/pro/migrate", &srv.admin_key, json!({}))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["state"], "applied");
        assert_eq!(r.body["migrated"].as_array().unwrap().len(), 1);
        assert_eq!(r.body["migrated"][0]["customer_id"], "fits");
        assert_eq!(r.body["customers"][0]["customer_id"], "big");
        assert_eq!(plan_of(&srv, "fits").await.1, 2);
        assert_eq!(plan_of(&srv, "big").await.1, 1);
        // v2's limit holds at once.
        assert_eq!(consume(&srv, "fits", 1500).await.status, 200, "{name}");

        let r = srv
            .post(
                "/v1/admin/plans/pro/migrate",
                &srv.admin_key,
                json!({"force": true, "reason": "v1 retired"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["migrated"][0]["customer_id"], "big");
        assert_eq!(r.body["migrated"][0]["details"]["forced"], true);
        assert_eq!(plan_of(&srv, "big").await.1, 2);
        assert_eq!(history_kinds(&srv, "big").await, ["subscribe", "migrate"]);
        let r = srv
            .post(
                "/v1/admin/plans/pro/migrate",
                &srv.admin_key,
                json!({"to_version": 9}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["version"]);
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_change_nothing() {
    for backend in backends("sub_bad") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "acme", "basic").await;
        let r = change(&srv, "acme", json!({"plan": "platinum"})).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["plan"]);
        let r = change(&srv, "acme", json!({"plan": "pro", "timing": "tomorrow"})).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["timing"]);
        let r = change(&srv, "acme", json!({"plan": "basic"})).await;
        assert_eq!(r.status, 422, "{name}: same plan: {r}");
        let r = change(&srv, "nobody", json!({"plan": "pro"})).await;
        assert_eq!(r.status, 404, "{name}: {r}");
        let r = srv
            .post(
                "/v1/customers/nosub/subscription/change/preview",
                &srv.admin_key,
                json!({"plan": "pro"}),
            )
            .await;
        assert_eq!(r.status, 404, "{name}: {r}");
        assert_eq!(plan_of(&srv, "acme").await.0, "basic");
        assert_eq!(history_kinds(&srv, "acme").await, ["subscribe"]);
        srv.stop().await;
    }
}

/// `team`: $30/month in advance on calendar billing, with per-call usage.
const CALENDAR: &str = r#"
[catalog]
name = "Calendar"
currency = "USD"

[features.api_calls]
kind = "metered"
reset = "billing_period"

[plans.team]
tier = 1
base_price = "30"
anchoring = "calendar"
billing = "in_advance"
trial_days = 14

[plans.team.entitlements]
api_calls = 1000

[[plans.team.charges]]
metric = "api_calls"
price = { model = "per_unit", unit_price = "0.01" }
"#;

async fn invoices_of(srv: &TestServer, id: &str) -> Vec<Value> {
    let r = srv
        .get(&format!("/v1/customers/{id}/invoices"), &srv.admin_key)
        .await;
    assert_eq!(r.status, 200, "{r}");
    let mut all = r.body["data"].as_array().unwrap().clone();
    all.sort_by_key(|i| i["created_at"].as_str().unwrap().to_string());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_period_is_invoiced_at_subscription_and_cancel_now_settles_the_rest() {
    for backend in backends("sub_first_and_final") {
        let name = backend.name;
        let srv = TestServer::start(backend, CALENDAR).await;
        // Day 10 of November 2025 (30 days): 21 of 30 days, 30 × 21/30 = 21.00.
        // (Without `status`, a plan with trial days starts a trial.)
        srv.clock.set(ts("2025-11-10T00:00:00Z"));
        let r = srv
            .post(
                "/v1/customers",
                &srv.admin_key,
                json!({"id": "acme", "plan": "team", "status": "active"}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        let first = invoices_of(&srv, "acme").await;
        assert_eq!(first.len(), 1, "{name}: {first:?}");
        assert_eq!(first[0]["status"], "open", "{name}");
        assert_eq!(first[0]["number"], "INV-000001", "{name}");
        assert_eq!(first[0]["totals"]["total"], "21.00", "{name}");
        assert_eq!(first[0]["period_start"], "2025-11-10T00:00:00Z");
        assert_eq!(first[0]["period_end"], "2025-12-01T00:00:00Z");

        // 250 calls, then canceled now on November 20: 11 of 30 days unused,
        // credit −30 × 11/30 = −11.00; usage 250 × 0.01 = 2.50.
        assert_eq!(consume(&srv, "acme", 250).await.status, 200, "{name}");
        srv.clock.set(ts("2025-11-20T00:00:00Z"));
        let r = srv
            .post(
                "/v1/customers/acme/subscription/cancel",
                &srv.admin_key,
                json!({"at_period_end": false}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["subscription"]["status"], "canceled");
        let final_id = r.body["invoice_id"].as_str().unwrap().to_string();
        let r = srv
            .get(&format!("/v1/invoices/{final_id}"), &srv.admin_key)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let inv = &r.body["invoice"];
        assert_eq!(amounts(&inv["lines"]), ["2.50", "-11.00"], "{name}: {inv}");
        assert_eq!(inv["totals"]["total"], "-8.50", "{name}");
        assert_eq!(inv["totals"]["amount_due"], "0.00", "{name}");
        assert_eq!(inv["period_start"], "2025-11-10T00:00:00Z");
        assert_eq!(inv["period_end"], "2025-11-20T00:00:00Z");

        // A trial: nothing while trialing; converted on November 20 (re-
        // anchored), the first paid period [11-20, 12-01): 30 × 11/30 = 11.00.
        let r = srv
            .post("/v1/customers", &srv.admin_key, json!({"id": "tria"}))
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        let r = srv
            .post(
                "/v1/customers/tria/subscription/trial",
                &srv.admin_key,
                json!({"plan": "team"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert!(invoices_of(&srv, "tria").await.is_empty(), "{name}");
        let r = srv
            .post(
                "/v1/customers/tria/subscription/trial/convert",
                &srv.admin_key,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let trial_invoices = invoices_of(&srv, "tria").await;
        assert_eq!(trial_invoices.len(), 1, "{name}");
        assert_eq!(r.body["invoice_id"], trial_invoices[0]["id"], "{name}");
        assert_eq!(trial_invoices[0]["totals"]["total"], "11.00", "{name}");

        // The close on December 1st: acme's November was settled by its
        // final invoice (nothing more); tria's close bills December only.
        srv.clock.set(ts("2025-12-01T00:00:00Z"));
        srv.state.billing.run_once().await.unwrap();
        assert_eq!(invoices_of(&srv, "acme").await.len(), 2, "{name}");
        let tria = invoices_of(&srv, "tria").await;
        assert_eq!(tria.len(), 2, "{name}");
        assert_eq!(amounts(&tria[1]["lines"]), ["30.00", "0.00"], "{name}");
        assert_eq!(tria[1]["lines"][0]["period_start"], "2025-12-01T00:00:00Z");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_now_twice_around_a_reactivation_bills_each_part_of_the_period_once() {
    for backend in backends("sub_cancel_twice") {
        let name = backend.name;
        let srv = TestServer::start(backend, CALENDAR).await;
        let cancel_now = json!({"at_period_end": false});
        // $30 in advance from November 10, 2025: 21.00; 250 calls; canceled
        // now on the 20th: final #1 [11-10, 11-20): 2.50 and −11.00.
        srv.clock.set(ts("2025-11-10T00:00:00Z"));
        let r = srv
            .post(
                "/v1/customers",
                &srv.admin_key,
                json!({"id": "acme", "plan": "team", "status": "active"}),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {r}");
        assert_eq!(consume(&srv, "acme", 250).await.status, 200, "{name}");
        srv.clock.set(ts("2025-11-20T00:00:00Z"));
        let cancel = "/v1/customers/acme/subscription/cancel";
        let r = srv.post(cancel, &srv.admin_key, cancel_now.clone()).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let first_id = r.body["invoice_id"].as_str().unwrap().to_string();

        // Reactivated on the 22nd: the rest of November again, 30 × 9/30 = 9.00.
        srv.clock.set(ts("2025-11-22T00:00:00Z"));
        let r = srv
            .patch(
                "/v1/customers/acme/subscription",
                &srv.admin_key,
                json!({"status": "active"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let all = invoices_of(&srv, "acme").await;
        assert_eq!(all.len(), 3, "{name}: {all:?}");
        assert_eq!(all[2]["totals"]["total"], "9.00", "{name}");
        assert_eq!(all[2]["period_start"], "2025-11-22T00:00:00Z");

        // 100 calls, canceled again on the 25th: final #2 [11-20, 11-25):
        // 1.00 and 6 unused days, −6.00: total −5.00, a new invoice.
        assert_eq!(consume(&srv, "acme", 100).await.status, 200, "{name}");
        srv.clock.set(ts("2025-11-25T00:00:00Z"));
        let r = srv.post(cancel, &srv.admin_key, cancel_now).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let second_id = r.body["invoice_id"].as_str().unwrap().to_string();
        assert_ne!(second_id, first_id, "{name}");
        let r = srv
            .get(&format!("/v1/invoices/{second_id}"), &srv.admin_key)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let inv = &r.body["invoice"];
        assert_eq!(amounts(&inv["lines"]), ["1.00", "-6.00"], "{name}: {inv}");
        assert_eq!(inv["totals"]["total"], "-5.00", "{name}");
        assert_eq!(inv["period_start"], "2025-11-20T00:00:00Z");
        assert_eq!(inv["period_end"], "2025-11-25T00:00:00Z");
        let pending = srv.state.store.changes().pending_items("acme").await;
        assert!(
            pending.unwrap().is_empty(),
            "{name}: no credit left pending"
        );

        // The close on December 1st adds nothing: November's base, net
        // 21 − 11 + 9 − 6 = 13.00 (10 + 3 days), usage 3.50.
        srv.clock.set(ts("2025-12-01T00:00:00Z"));
        srv.state.billing.run_once().await.unwrap();
        let all = invoices_of(&srv, "acme").await;
        assert_eq!(all.len(), 4, "{name}");
        let total: rust_decimal::Decimal = all
            .iter()
            .map(|i| {
                i["totals"]["total"]
                    .as_str()
                    .unwrap()
                    .parse::<rust_decimal::Decimal>()
                    .unwrap()
            })
            .sum();
        assert_eq!(total.to_string(), "16.50", "{name}");
        srv.stop().await;
    }
}

/// A plan change sent with an `Idempotency-Key` header.
async fn change_keyed(srv: &TestServer, id: &str, key: &str, body: Value) -> Reply {
    let r = srv
        .client
        .post(srv.url(&format!("/v1/customers/{id}/subscription/change")))
        .bearer_auth(&srv.admin_key)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    TestServer::reply(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_repeated_with_its_idempotency_key_is_applied_once() {
    for backend in backends("sub_idempotency") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "acme", "basic").await;
        subscribed(&srv, "other", "basic").await;
        srv.clock.set(ts("2025-11-10T00:00:00Z"));

        let upgrade = json!({"plan": "pro", "reason": "growing"});
        let first = change_keyed(&srv, "acme", "chg-1", upgrade.clone()).await;
        assert_eq!(first.status, 200, "{name}: {first}");
        assert_eq!(first.header("idempotent-replayed"), None);
        assert_eq!(amounts(&first.body["pending_items"]), ["-7.00", "21.00"]);

        // The repeat answers the first outcome and changes nothing.
        let again = change_keyed(&srv, "acme", "chg-1", upgrade.clone()).await;
        assert_eq!(again.status, 200, "{name}: {again}");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, first.body, "{name}");
        assert_eq!(history_kinds(&srv, "acme").await, ["subscribe", "upgrade"]);
        let pending = srv.state.store.changes().pending_items("acme").await;
        assert_eq!(
            pending.unwrap().len(),
            2,
            "{name}: one set of proration items"
        );
        // Without the key the same request is a new one: refused, already on pro.
        assert_eq!(change(&srv, "acme", upgrade.clone()).await.status, 422);

        // The same key for another request, or a key that is not one: 422
        // naming the header; nothing changes.
        let other = json!({"plan": "basic", "timing": "immediately"});
        let r = change_keyed(&srv, "acme", "chg-1", other).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["Idempotency-Key"]);
        let r = change_keyed(&srv, "acme", &"k".repeat(256), upgrade.clone()).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), ["Idempotency-Key"]);
        assert_eq!(plan_of(&srv, "acme").await.0, "pro");
        assert_eq!(history_kinds(&srv, "acme").await, ["subscribe", "upgrade"]);

        // Keys are per customer.
        let r = change_keyed(&srv, "other", "chg-1", upgrade).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.header("idempotent-replayed"), None);
        assert_eq!(plan_of(&srv, "other").await.0, "pro");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_change_cut_off_after_its_entry_is_answered_on_retry() {
    for backend in backends("sub_idempotency_cutoff") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "acme", "basic").await;
        subscribed(&srv, "twin", "basic").await;
        srv.clock.set(ts("2025-11-10T00:00:00Z"));

        // The twin's upgrade goes through; acme's is cut off after its
        // history entry (the request fails, nothing answered or stored).
        let upgrade = json!({"plan": "pro", "reason": "growing"});
        let twin = change_keyed(&srv, "twin", "chg-1", upgrade.clone()).await;
        assert_eq!(twin.status, 200, "{name}: {twin}");
        srv.state.billing.crash_after_next_history_entry();
        let cut = change_keyed(&srv, "acme", "chg-1", upgrade.clone()).await;
        assert_ne!(cut.status, 200, "{name}: {cut}");
        let history = srv
            .get("/v1/customers/acme/subscription/history", &srv.admin_key)
            .await;
        let entry = history.body["data"][1]["id"].as_str().unwrap().to_string();

        // The retry with the same key completes it and answers it, as
        // replayed: the entry's change id, the twin's preview and lines.
        let again = change_keyed(&srv, "acme", "chg-1", upgrade.clone()).await;
        assert_eq!(again.status, 200, "{name}: {again}");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body["change"]["id"], entry.as_str(), "{name}");
        assert_eq!(amounts(&again.body["pending_items"]), ["-7.00", "21.00"]);
        let same = |b: &Value| {
            let mut b = b.clone();
            for k in ["customer_id", "change", "pending_items", "subscription"] {
                b.as_object_mut().unwrap().remove(k);
            }
            b
        };
        assert_eq!(same(&again.body), same(&twin.body), "{name}");
        assert_eq!(plan_of(&srv, "acme").await.0, "pro");
        assert_eq!(history_kinds(&srv, "acme").await, ["subscribe", "upgrade"]);
        let pending = srv.state.store.changes().pending_items("acme").await;
        assert_eq!(pending.unwrap().len(), 2, "{name}");

        // Stored now: the next repeat answers the same.
        let third = change_keyed(&srv, "acme", "chg-1", upgrade).await;
        assert_eq!(third.header("idempotent-replayed"), Some("true"));
        assert_eq!(third.body, again.body, "{name}");
        srv.stop().await;
    }
}

/// A keyed downgrade at period end is only its scheduled change, written
/// under an id derived from the key: cut off after that write (its answer
/// never stored), the retry with the key answers it, as replayed, instead of
/// a 409 "already scheduled"; the key with another target is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_change_at_period_end_cut_off_after_it_is_scheduled_is_answered_on_retry() {
    for backend in backends("sub_idempotency_scheduled_cutoff") {
        let name = backend.name;
        let srv = start(backend).await;
        subscribed(&srv, "acme", "pro").await;
        subscribed(&srv, "twin", "pro").await;
        srv.clock.set(ts("2025-11-10T00:00:00Z"));

        let downgrade = json!({"plan": "basic"});
        let twin = change_keyed(&srv, "twin", "chg-1", downgrade.clone()).await;
        assert_eq!(twin.status, 200, "{name}: {twin}");
        assert_eq!(twin.body["state"], "scheduled");
        srv.state.billing.crash_after_next_history_entry();
        let cut = change_keyed(&srv, "acme", "chg-1", downgrade.clone()).await;
        assert_ne!(cut.status, 200, "{name}: {cut}");
        let pending = srv
            .get("/v1/customers/acme/subscription/scheduled", &srv.admin_key)
            .await;
        let scheduled = pending.body["scheduled"]["id"]
            .as_str()
            .unwrap()
            .to_string();

        let again = change_keyed(&srv, "acme", "chg-1", downgrade.clone()).await;
        assert_eq!(again.status, 200, "{name}: {again}");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body["scheduled"]["id"], scheduled.as_str(), "{name}");
        assert_eq!(again.body["effective_at"], "2025-12-01T00:00:00Z");
        let same = |b: &Value| {
            let mut b = b.clone();
            for k in ["customer_id", "scheduled", "subscription"] {
                b.as_object_mut().unwrap().remove(k);
            }
            b
        };
        assert_eq!(same(&again.body), same(&twin.body), "{name}");
        // Stored now: the next repeat answers the same.
        let third = change_keyed(&srv, "acme", "chg-1", downgrade).await;
        assert_eq!(third.header("idempotent-replayed"), Some("true"));
        assert_eq!(third.body, again.body, "{name}");
        // The same key with another request: refused, naming the key.
        let other = change_keyed(
            &srv,
            "acme",
            "chg-1",
            json!({"plan": "basic", "reason": "x"}),
        )
        .await;
        assert_eq!(other.status, 422, "{name}: {other}");
        assert_eq!(other.error_fields(), ["Idempotency-Key"]);
        assert_eq!(plan_of(&srv, "acme").await.0, "pro", "{name}");
        srv.stop().await;
    }
}
