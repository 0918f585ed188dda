//! Plans, quotes and the admin views over real HTTP — on SQLite and (when
//! configured) PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use jiff::SignedDuration;
use serde_json::{Value, json};

const PULSE: &str = include_str!("../../../examples/catalogs/pulse.toml");

/// The shared catalog plus a private plan an operator assigns.
const PRIVATE: &str = r#"
[plans.partner]
name = "Partner"
tier = 3
base_price = "0"
public = false

[plans.partner.entitlements]
api_calls = "unlimited"
"#;

fn catalog() -> String {
    format!("{CATALOG}{PRIVATE}")
}

fn keys(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_on_pulse_pro_is_the_seeds_339_50() {
    for backend in backends("pulse_quote") {
        let name = backend.name;
        let srv = TestServer::start(backend, PULSE).await;
        let key = srv.server_key().await;
        let r = srv
            .post(
                "/v1/quote",
                &key,
                json!({"plan": "pro", "usage": [
                    {"metric": "participant_minutes", "quantity": 50000},
                    {"metric": "egress_minutes", "quantity": "5000"},
                    {"metric": "storage_gb", "quantity": 50},
                    {"metric": "bandwidth_gb", "quantity": 500},
                    {"metric": "api_requests", "quantity": 500000},
                ]}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(
            r.body["total"],
            json!({"amount": "339.50", "currency": "USD"})
        );
        assert_eq!(r.body["plan"], "pro");
        assert_eq!(r.body["version"], 1);
        let lines = r.body["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 6, "{r}");
        assert_eq!(lines[0]["kind"], "base");
        assert_eq!(lines[0]["amount"]["amount"], "49.00");
        let pm = lines
            .iter()
            .find(|l| l["charge"] == "participant_minutes")
            .unwrap();
        assert_eq!(pm["quantity"], "50000");
        assert_eq!(pm["amount"], json!({"amount": "200.00", "currency": "USD"}));
        assert_eq!(pm["tiers"][0]["unit_price"], "0.004");
        let api = lines
            .iter()
            .find(|l| l["charge"] == "api_requests")
            .unwrap();
        assert_eq!(api["amount"]["amount"], "0.50");

        // Enterprise prices the same usage lower per unit, with a higher base.
        let r = srv
            .post(
                "/v1/quote",
                &key,
                json!({"plan": "enterprise", "usage": [{"metric": "participant_minutes", "quantity": 50000}]}),
            )
            .await;
        assert_eq!(r.body["total"]["amount"], "449.00", "{name}: {r}");

        // Bad input names the field.
        let r = srv
            .post("/v1/quote", &key, json!({"plan": "platinum"}))
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["plan"]);
        let r = srv
            .post(
                "/v1/quote",
                &key,
                json!({"plan": "pro", "usage": [{"metric": "minutez", "quantity": 1}]}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["usage[0].metric"]);
        let r = srv
            .post(
                "/v1/quote",
                &key,
                json!({"plan": "pro", "usage": [{"metric": "api_requests", "quantity": -3}]}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["usage[0].quantity"]);
        let r = srv
            .post("/v1/quote", &key, json!({"plan": "pro", "version": 7}))
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["version"]);
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_list_hides_private_plans_from_non_admin_keys() {
    for backend in backends("plan_list") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        let skey = srv.server_key().await;
        srv.customer("c", Some("free")).await;
        let ckey = srv.customer_key("c").await;

        let r = srv.get("/v1/plans", &skey).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(keys(&r.body), ["free", "pro", "business"]);
        assert_eq!(r.body["has_more"], false);
        assert!(r.body["data"][0].get("versions").is_none());
        assert_eq!(r.body["features"].as_array().unwrap().len(), 8);
        let pro = &r.body["data"][1];
        assert_eq!(
            pro["base_price"],
            json!({"amount": "20.00", "currency": "USD"})
        );
        assert_eq!(pro["trial_days"], 14);
        assert_eq!(pro["entitlements"]["api_calls"]["limit"], "1000");
        assert_eq!(
            pro["entitlements"]["api_calls"]["emergency_allowance"],
            "100"
        );
        assert_eq!(pro["entitlements"]["minutes"]["hard"], false);
        assert_eq!(pro["entitlements"]["git_export"]["enabled"], true);
        assert_eq!(
            r.body["data"][2]["entitlements"]["seats"]["limit"],
            "unlimited"
        );

        let r = srv.get("/v1/plans", &ckey).await;
        assert_eq!(keys(&r.body), ["free", "pro", "business"], "{name}");

        let r = srv.get("/v1/plans", &srv.admin_key).await;
        assert_eq!(
            keys(&r.body),
            ["free", "pro", "business", "partner"],
            "{name}"
        );
        assert_eq!(r.body["data"][3]["public"], false);
        assert_eq!(r.body["data"][3]["versions"], json!([1]));

        let r = srv.get("/v1/plans/partner", &skey).await;
        assert_eq!(r.status, 404, "{name}: {r}");
        let r = srv.get("/v1/plans/partner", &srv.admin_key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["entitlements"]["api_calls"]["limit"], "unlimited");
        let r = srv.get("/v1/plans/pro", &skey).await;
        assert_eq!(r.body["name"], "Pro", "{name}: {r}");
        let r = srv
            .post("/v1/quote", &skey, json!({"plan": "partner"}))
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        let r = srv
            .post("/v1/quote", &srv.admin_key, json!({"plan": "partner"}))
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv.get("/v1/plans", "").await;
        assert_eq!(r.status, 401, "{name}: {r}");
        srv.stop().await;
    }
}

fn consume(customer: &str, quantity: u32) -> Value {
    json!({"customer": customer, "feature": "api_calls", "quantity": quantity, "consume": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_views_add_up() {
    for backend in backends("admin_views") {
        let name = backend.name;
        let srv = TestServer::start(backend, &catalog()).await;
        for (c, plan) in [
            ("a", Some("free")),
            ("b", Some("free")),
            ("c", Some("pro")),
            ("d", Some("business")),
            ("e", None),
        ] {
            srv.customer(c, plan).await;
        }
        srv.engine.cancel("d").await.unwrap();
        srv.clock.advance(SignedDuration::from_hours(1));
        let key = srv.server_key().await;
        for (c, q) in [("a", 90), ("b", 100), ("c", 950)] {
            let r = srv.post("/v1/check", &key, consume(c, q)).await;
            assert_eq!(r.status, 200, "{name}: {r}");
        }
        let r = srv
            .post(
                "/v1/check",
                &key,
                json!({"customer": "c", "feature": "minutes", "quantity": 5, "consume": true,
                       "idempotency_key": "k,1", "properties": {"note": "a \"quoted\", text"}}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let admin = srv.admin_key.clone();

        // Summary.
        let r = srv.get("/v1/admin/usage/summary", &admin).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["customers"], 5);
        assert_eq!(r.body["subscribed"], 4);
        let calls = r.body["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["feature"] == "api_calls")
            .unwrap()
            .clone();
        assert_eq!(calls["total_used"], "1140", "{name}: {calls}");
        // d is canceled: no access and no usage, so not counted.
        assert_eq!(calls["customers"], 3);
        assert_eq!(calls["customers_with_usage"], 3);
        assert_eq!(calls["customers_at_limit"], 1);
        assert_eq!(calls["customers_over_limit"], 0);

        // Top users by share of their limit.
        let r = srv
            .get("/v1/admin/usage/top?feature=api_calls&limit=2", &admin)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let top: Vec<(&str, &str)> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["customer"].as_str().unwrap(),
                    x["percentage_used"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(top, [("b", "100"), ("c", "95")]);
        assert_eq!(r.body["has_more"], true);
        let r = srv
            .get("/v1/admin/usage/top?feature=git_export", &admin)
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        let r = srv.get("/v1/admin/usage/top?limit=0", &admin).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["limit"]);

        // Near the limit.
        let r = srv
            .get("/v1/admin/customers/near-limit?threshold=90", &admin)
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let near: Vec<&str> = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["customer"].as_str().unwrap())
            .collect();
        assert_eq!(near, ["b", "c", "a"]);
        let r = srv.get("/v1/admin/customers/near-limit", &admin).await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 3, "{name}: {r}");
        let r = srv
            .get("/v1/admin/customers/near-limit?threshold=95.5", &admin)
            .await;
        assert_eq!(r.body["data"].as_array().unwrap().len(), 1, "{name}: {r}");
        let r = srv
            .get("/v1/admin/customers/near-limit?threshold=-5", &admin)
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["threshold"]);

        // Plan distribution.
        let r = srv.get("/v1/admin/plans/distribution", &admin).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["customers"], 5);
        assert_eq!(r.body["without_subscription"], 1);
        let plan = |k: &str| {
            r.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["plan"] == k)
                .unwrap()
                .clone()
        };
        assert_eq!(plan("free")["customers"], 2);
        assert_eq!(plan("free")["by_status"], json!({"active": 2}));
        assert_eq!(plan("pro")["customers"], 1);
        assert_eq!(
            plan("pro")["monthly_base_revenue"],
            json!({"amount": "20.00", "currency": "USD"})
        );
        assert_eq!(plan("business")["by_status"], json!({"canceled": 1}));
        assert_eq!(plan("business")["monthly_base_revenue"]["amount"], "0.00");
        assert_eq!(plan("partner")["customers"], 0);
        assert_eq!(plan("pro")["by_version"], json!({"1": 1}));

        // CSV export: a header and one row per ledger record.
        let r = srv.get("/v1/admin/usage/export", &admin).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert!(r.content_type().starts_with("text/csv"), "{:?}", r.headers);
        let csv = r.body.as_str().unwrap().to_string();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "seq,customer,feature,quantity,timestamp,recorded_at,source,billable,idempotency_key,properties"
        );
        assert_eq!(lines.len(), 5, "{name}: {csv}");
        assert!(
            lines[1].contains(",a,api_calls,90,2025-01-15T13:00:00Z,"),
            "{csv}"
        );
        assert!(lines[1].ends_with(",consume,true,,{}"), "{csv}");
        assert_eq!(
            lines[4].split_once(',').unwrap().1,
            r#"c,minutes,5,2025-01-15T13:00:00Z,2025-01-15T13:00:00Z,consume,true,"k,1","{""note"":""a \""quoted\"", text""}""#,
            "{csv}"
        );
        let r = srv
            .get(
                "/v1/admin/usage/export?customer=c&feature=api_calls",
                &admin,
            )
            .await;
        assert_eq!(r.body.as_str().unwrap().lines().count(), 2, "{name}: {r}");
        let r = srv
            .get(
                "/v1/admin/usage/export?from=2025-01-15T13:00:00Z&to=2025-01-15T13:00:01Z",
                &admin,
            )
            .await;
        assert_eq!(r.body.as_str().unwrap().lines().count(), 5, "{name}: {r}");
        let r = srv
            .get("/v1/admin/usage/export?to=2025-01-15T13:00:00Z", &admin)
            .await;
        assert_eq!(r.body.as_str().unwrap().lines().count(), 1, "{name}: {r}");
        let r = srv
            .get("/v1/admin/usage/export?from=yesterday", &admin)
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["from"]);

        // Admin only.
        for path in [
            "/v1/admin/usage/summary",
            "/v1/admin/usage/top",
            "/v1/admin/plans/distribution",
            "/v1/admin/customers/near-limit",
            "/v1/admin/usage/export",
        ] {
            let r = srv.get(path, &key).await;
            assert_eq!(r.status, 403, "{name}: {path}: {r}");
        }
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_streams_many_pages() {
    for backend in backends("export_pages") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("big", Some("business")).await;
        let key = srv.server_key().await;
        let events: Vec<Value> = (0..12_345)
            .map(|i| json!({"customer": "big", "feature": "api_calls", "quantity": 1, "idempotency_key": format!("k{i}")}))
            .collect();
        let r = srv
            .post("/v1/events", &key, json!({"events": events}))
            .await;
        assert_eq!(r.body["accepted"], 12_345, "{name}");
        let r = srv.get("/v1/admin/usage/export", &srv.admin_key).await;
        let csv = r.body.as_str().unwrap();
        assert_eq!(csv.lines().count(), 12_346, "{name}");
        let seqs: Vec<i64> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{name}: in ledger order"
        );
        assert!(csv.lines().last().unwrap().contains(",k12344,"), "{name}");
        srv.stop().await;
    }
}
