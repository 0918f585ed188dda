//! Applying a catalog to a running server (`PUT /v1/catalog`), and which
//! catalog a restart serves — on SQLite and (when configured) PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use tollgate_engine::{Engine, EngineConfig, SubscribeOptions, TestClock};
use tollgate_store::{CatalogSource, Store};

/// Pro's API calls go from 1,000 to 1,500; a new feature (`reports`, a flag)
/// and a new plan using it (`team`) are added.
fn edited() -> String {
    CATALOG.replace(
        "api_calls = { limit = 1000, emergency_allowance = 100 }",
        "api_calls = { limit = 1500, emergency_allowance = 100 }",
    ) + r#"
[features.reports]
kind = "flag"
name = "Reports"

[plans.team]
name = "Team"
tier = 3
base_price = "300"

[plans.team.entitlements]
api_calls = 200000
reports = true
"#
}

async fn put_catalog(srv: &TestServer, query: &str, key: &str, text: &str) -> Reply {
    srv.call_raw(
        M::PUT,
        &format!("/v1/catalog{query}"),
        key,
        "application/toml",
        text.to_string(),
    )
    .await
}

fn change_of(r: &Reply, plan: &str) -> (String, serde_json::Value, serde_json::Value) {
    let c = r.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["plan"] == plan)
        .unwrap_or_else(|| panic!("no change for {plan}: {r}"));
    (
        c["change"].as_str().unwrap().to_string(),
        c["from_version"].clone(),
        c["to_version"].clone(),
    )
}

async fn consume(srv: &TestServer, key: &str, customer: &str, feature: &str, n: u32) -> Reply {
    srv.post(
        "/v1/check",
        key,
        json!({"customer": customer, "feature": feature, "quantity": n, "consume": true}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_catalog_is_offered_at_once_and_subscribers_keep_their_version() {
    for backend in backends("catalog_apply") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let admin = srv.admin_key.clone();
        let server = srv.server_key().await;
        srv.customer("old", Some("pro")).await;

        // A dry run says what would change and changes nothing.
        let r = put_catalog(&srv, "?dry_run=true", &admin, &edited()).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(
            (r.body["dry_run"].clone(), r.body["applied"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(
            change_of(&r, "pro"),
            ("changed".into(), json!(1), json!(2)),
            "{name}"
        );
        assert_eq!(
            change_of(&r, "free"),
            ("unchanged".into(), json!(1), json!(1)),
            "{name}"
        );
        assert_eq!(
            change_of(&r, "team"),
            ("new".into(), json!(null), json!(1)),
            "{name}"
        );
        let pro = srv.get("/v1/plans/pro", &admin).await;
        assert_eq!(pro.body["version"], 1, "{name}: {pro}");

        // Applied: Pro v2 and Team are offered now.
        let r = put_catalog(&srv, "?name=voca-2026-12", &admin, &edited()).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["applied"], true, "{name}: {r}");
        let pro = srv.get("/v1/plans/pro", &admin).await;
        assert_eq!(pro.body["version"], 2, "{name}: {pro}");
        assert_eq!(pro.body["versions"], json!([1, 2]), "{name}: {pro}");
        let served = srv.get("/v1/catalog", &admin).await;
        assert_eq!(served.status, 200, "{name}: {served}");
        assert_eq!(served.body["source"], "api");
        assert_eq!(served.body["name"], "voca-2026-12");
        assert_eq!(served.body["document"], edited());
        assert_eq!(served.body["fingerprint"], r.body["fingerprint"]);

        // A new subscriber gets 1,500 calls; the old one keeps Pro v1's 1,000.
        srv.customer("new", Some("pro")).await;
        let r = consume(&srv, &server, "new", "api_calls", 1200).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = consume(&srv, &server, "old", "api_calls", 1200).await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.body["limit"], "1000", "{name}: {r}");
        let sub = srv.get("/v1/customers/old/subscription", &admin).await;
        assert_eq!(sub.body["plan_version"], 1, "{name}: {sub}");

        // The new feature works for the new plan, and is not in Pro.
        srv.customer("t", Some("team")).await;
        let r = srv
            .post(
                "/v1/check",
                &server,
                json!({"customer": "t", "feature": "reports"}),
            )
            .await;
        assert_eq!(
            (r.status, r.body["allowed"].clone()),
            (200, json!(true)),
            "{name}: {r}"
        );
        let r = srv
            .post(
                "/v1/check",
                &server,
                json!({"customer": "old", "feature": "reports"}),
            )
            .await;
        assert_eq!(
            (
                r.status,
                r.body["allowed"].clone(),
                r.body["reason"].clone()
            ),
            (200, json!(false), json!("feature_not_in_plan")),
            "{name}: {r}"
        );
        assert_eq!(r.body["upgrade_to"], "team", "{name}: {r}");

        // The same document again: nothing to apply.
        let r = put_catalog(&srv, "", &admin, &edited()).await;
        assert_eq!(
            (r.status, r.body["applied"].clone()),
            (200, json!(false)),
            "{name}: {r}"
        );
        assert_eq!(
            change_of(&r, "pro"),
            ("unchanged".into(), json!(2), json!(2)),
            "{name}"
        );

        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_the_running_server_cannot_take_is_refused_naming_each_problem() {
    for backend in backends("catalog_refused") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let admin = srv.admin_key.clone();
        let before = srv.get("/v1/plans/pro", &admin).await;

        // A served feature removed, another's kind changed: both named.
        let text = CATALOG
            .replace(
                "[features.file_mb]\nkind = \"cap\"\nname = \"Max file size\"\n",
                "",
            )
            .replace("file_mb = 50\n", "")
            .replace("file_mb = 200\n", "")
            .replace("file_mb = 500\n", "")
            .replace("reset = \"day\"", "reset = \"hour\"");
        let r = put_catalog(&srv, "", &admin, &text).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.content_type(), "application/problem+json");
        let mut fields = r.error_fields();
        fields.sort();
        assert_eq!(
            fields,
            ["features.file_mb", "features.minutes.kind"],
            "{name}: {r}"
        );

        // Invalid catalogs: the loader's errors, each at its path.
        let r = put_catalog(&srv, "", &admin, "this is not toml").await;
        assert_eq!(
            (r.status, r.error_fields()),
            (422, vec!["body".to_string()]),
            "{name}: {r}"
        );
        let r = put_catalog(
            &srv,
            "",
            &admin,
            &CATALOG.replace(
                "tier = 1\nbase_price = \"20\"",
                "tier = 0\nbase_price = \"20\"",
            ),
        )
        .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert!(
            r.error_fields().iter().any(|f| f == "plans.pro.tier"),
            "{name}: {r}"
        );

        // Wrong media type, wrong key, bad name.
        let r = srv
            .call_raw(M::PUT, "/v1/catalog", &admin, "application/json", "{}")
            .await;
        assert_eq!(r.status, 415, "{name}: {r}");
        let server = srv.server_key().await;
        let r = put_catalog(&srv, "", &server, &edited()).await;
        assert_eq!(r.status, 403, "{name}: {r}");
        let r = srv.get("/v1/catalog", &server).await;
        assert_eq!(r.status, 403, "{name}: {r}");
        let r = put_catalog(&srv, "?name=%20", &admin, &edited()).await;
        assert_eq!(
            (r.status, r.error_fields()),
            (422, vec!["name".to_string()]),
            "{name}: {r}"
        );
        let r = put_catalog(&srv, "?dryrun=true", &admin, &edited()).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        // The name's limit counts characters, not bytes.
        let accented = "é".repeat(150);
        let r = put_catalog(
            &srv,
            &format!("?dry_run=true&name={accented}"),
            &admin,
            &edited(),
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = put_catalog(
            &srv,
            &format!("?dry_run=true&name={}", "é".repeat(201)),
            &admin,
            &edited(),
        )
        .await;
        assert_eq!(
            (r.status, r.error_fields()),
            (422, vec!["name".to_string()]),
            "{name}: {r}"
        );

        // Nothing changed.
        let after = srv.get("/v1/plans/pro", &admin).await;
        assert_eq!(before.body, after.body, "{name}");
        assert_eq!(srv.engine.plan_versions("pro"), vec![1], "{name}");
        let r = srv.get("/v1/catalog", &admin).await;
        assert_eq!(r.status, 404, "{name}: no document was recorded: {r}");
        srv.stop().await;
    }
}

/// The engine opened the way `tollgate serve` opens it, on the catalog file
/// at `path`.
async fn open(store: Arc<dyn Store>, path: &std::path::Path, clock: &TestClock) -> Engine {
    tollgate_server::app::open_engine(
        store,
        path,
        Arc::new(clock.clone()),
        EngineConfig::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_applied_catalog_until_the_file_is_edited() {
    for backend in backends("catalog_restart") {
        let name = backend.name;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("catalog.toml");
        std::fs::write(&file, CATALOG).unwrap();
        let clock = TestClock::new(t0());
        let store = backend.store().await;

        // First start: the file is served and recorded.
        let engine = open(store.clone(), &file, &clock).await;
        let doc = store.latest_catalog_document(None).await.unwrap().unwrap();
        assert_eq!(
            (doc.source, doc.name.as_str()),
            (CatalogSource::File, "catalog.toml"),
            "{name}"
        );
        let first_id = doc.id;
        // The same file again: nothing new recorded.
        engine.close().await.unwrap();
        let engine = open(store.clone(), &file, &clock).await;
        let doc = store.latest_catalog_document(None).await.unwrap().unwrap();
        assert_eq!(
            doc.id, first_id,
            "{name}: an unchanged file is not recorded again"
        );

        // Applied through the API, then a restart with the unchanged file:
        // the applied catalog is still served (Pro v2, Team offered).
        let applied = tollgate_core::catalog::load_catalog("api", &edited()).unwrap();
        let document =
            tollgate_server::catalog::document(CatalogSource::Api, "api", &edited(), t0());
        let (_, done) = engine
            .apply_catalog(applied, document, false)
            .await
            .unwrap();
        assert!(done, "{name}");
        engine.close().await.unwrap();
        let engine = open(store.clone(), &file, &clock).await;
        assert_eq!(engine.latest_version("pro"), Some(2), "{name}");
        assert!(engine.catalog().plan("team").is_some(), "{name}");
        engine
            .create_customer(tollgate_engine::NewCustomer::new("t"))
            .await
            .unwrap();
        engine
            .subscribe("t", "team", SubscribeOptions::default())
            .await
            .unwrap();
        engine.close().await.unwrap();

        // The file is edited: it wins again (Pro back to 1,000 calls is a
        // new version, v3), and it is recorded.
        std::fs::write(
            &file,
            CATALOG.replace("base_price = \"100\"", "base_price = \"120\""),
        )
        .unwrap();
        let engine = open(store.clone(), &file, &clock).await;
        assert_eq!(engine.latest_version("pro"), Some(3), "{name}");
        assert_eq!(engine.latest_version("business"), Some(2), "{name}");
        assert!(
            engine.catalog().plan("team").is_none(),
            "{name}: Team is no longer offered"
        );
        let doc = store.latest_catalog_document(None).await.unwrap().unwrap();
        assert_eq!(doc.source, CatalogSource::File, "{name}");
        // Team's subscriber keeps its version, and the engine still serves it.
        let ents = engine.entitlements("t").unwrap();
        assert_eq!(
            (ents.plan_key.as_deref(), ents.plan_version),
            (Some("team"), Some(1)),
            "{name}"
        );
        engine.close().await.unwrap();
        backend.cleanup().await;
    }
}

/// The catalog without the Pro plan.
fn without_pro() -> String {
    let start = CATALOG.find("[plans.pro]").unwrap();
    let end = CATALOG.find("[plans.business]").unwrap();
    format!("{}{}", &CATALOG[..start], &CATALOG[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_a_plan_the_applied_catalog_removes_keeps_a_working_account() {
    for backend in backends("catalog_removed_plan") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let admin = srv.admin_key.clone();
        let server = srv.server_key().await;
        srv.customer("p", Some("pro")).await;
        let r = consume(&srv, &server, "p", "api_calls", 10).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = put_catalog(&srv, "", &admin, &without_pro()).await;
        assert_eq!(change_of(&r, "pro").0, "removed", "{name}: {r}");
        // Sent again, Pro is not news: it is no longer listed.
        let again = put_catalog(&srv, "?dry_run=true", &admin, &without_pro()).await;
        assert_eq!(again.status, 200, "{name}: {again}");
        let plans: Vec<&str> = again.body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["plan"].as_str().unwrap())
            .collect();
        assert!(!plans.contains(&"pro"), "{name}: {again}");

        // The usage view still shows Pro v1 and its usage.
        let r = srv.get("/v1/customers/p/usage", &admin).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(
            (
                r.body["plan"]["key"].clone(),
                r.body["plan"]["version"].clone()
            ),
            (json!("pro"), json!(1)),
            "{name}: {r}"
        );
        // Still counted on Pro (no longer offered) by the plan distribution.
        let r = srv.get("/v1/admin/plans/distribution", &admin).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let pro = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["plan"] == "pro")
            .unwrap_or_else(|| panic!("{name}: no share for pro: {r}"));
        assert_eq!(
            (
                pro["customers"].clone(),
                pro["public"].clone(),
                pro["by_version"].clone()
            ),
            (json!(1), json!(false), json!({"1": 1})),
            "{name}: {r}"
        );
        // Still billed for Pro, so still in the MRR.
        let r = srv.get("/v1/admin/billing/mrr", &admin).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body[0]["by_plan"]["pro"], "20.00", "{name}: {r}");

        // An upgrade recommended to Pro's subscriber is above Pro's tier, even
        // where Free now allows more than Pro v1 (50 snapshots a minute).
        let more_free = without_pro().replace("snapshots = 1\n", "snapshots = 50\n");
        let r = put_catalog(&srv, "", &admin, &more_free).await;
        assert_eq!(change_of(&r, "free").0, "changed", "{name}: {r}");
        let r = srv
            .post(
                "/v1/check",
                &server,
                json!({"customer": "p", "feature": "snapshots", "quantity": 20, "consume": false}),
            )
            .await;
        assert_eq!(
            (r.body["allowed"].clone(), r.body["upgrade_to"].clone()),
            (json!(false), json!("business")),
            "{name}: {r}"
        );

        // The customer can be moved off it: a preview, then the change.
        let r = srv
            .post(
                "/v1/customers/p/subscription/change/preview",
                &admin,
                json!({"plan": "business"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv
            .post(
                "/v1/customers/p/subscription/change",
                &admin,
                json!({"plan": "business"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let sub = srv.get("/v1/customers/p/subscription", &admin).await;
        assert_eq!(sub.body["plan"], "business", "{name}: {sub}");

        // A removed plan is not offered: nobody can be moved onto it.
        let r = srv
            .post(
                "/v1/customers/p/subscription/change",
                &admin,
                json!({"plan": "pro", "version": 1}),
            )
            .await;
        assert_eq!(
            (r.status, r.error_fields()),
            (422, vec!["plan".to_string()]),
            "{name}: {r}"
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tier_applied_to_a_plan_counts_for_its_subscribers_upgrade_recommendations() {
    for backend in backends("catalog_tiers") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let admin = srv.admin_key.clone();
        let server = srv.server_key().await;
        srv.customer("p", Some("pro")).await;
        // Pro moves up to tier 2 with more calls (v2); Business to tier 3.
        let text = CATALOG
            .replace(
                "tier = 2\nbase_price = \"100\"",
                "tier = 3\nbase_price = \"100\"",
            )
            .replace(
                "tier = 1\nbase_price = \"20\"",
                "tier = 2\nbase_price = \"20\"",
            )
            .replace(
                "api_calls = { limit = 1000, emergency_allowance = 100 }",
                "api_calls = { limit = 1500, emergency_allowance = 100 }",
            );
        let r = put_catalog(&srv, "", &admin, &text).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        // The Pro v1 subscriber is denied 1,200 calls: the plan above Pro is
        // Business, not Pro itself.
        let r = consume(&srv, &server, "p", "api_calls", 1200).await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.body["upgrade_to"], "business", "{name}: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_list_features_in_key_order_after_an_apply_adds_one() {
    for backend in backends("catalog_feature_order") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let admin = srv.admin_key.clone();
        srv.customer("c", Some("pro")).await;
        // `analytics` sorts before every served feature.
        let text =
            format!("{CATALOG}\n[features.analytics]\nkind = \"flag\"\nname = \"Analytics\"\n");
        let r = put_catalog(&srv, "", &admin, &text).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let r = srv.get("/v1/customers/c/entitlements", &admin).await;
        let keys: Vec<String> = r.body["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["feature"].as_str().unwrap().to_string())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            keys.first().map(String::as_str),
            Some("analytics"),
            "{name}: {r}"
        );
        assert_eq!(keys, sorted, "{name}: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_run_with_an_undeployed_file_does_not_undo_an_apply_at_the_next_start() {
    for backend in backends("catalog_invoice_run") {
        let name = backend.name;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("catalog.toml");
        std::fs::write(&file, CATALOG).unwrap();
        let clock = TestClock::new(t0());
        let store = backend.store().await;
        let engine = open(store.clone(), &file, &clock).await;
        let applied = tollgate_core::catalog::load_catalog("api", &edited()).unwrap();
        let document =
            tollgate_server::catalog::document(CatalogSource::Api, "api", &edited(), t0());
        engine
            .apply_catalog(applied, document, false)
            .await
            .unwrap();
        engine.close().await.unwrap();

        // `tollgate invoices run` on the data while the file holds an edit
        // that is not deployed (the run itself bills from the store).
        std::fs::write(
            &file,
            CATALOG.replace("base_price = \"100\"", "base_price = \"120\""),
        )
        .unwrap();
        let run = tollgate_server::app::open_engine_unrecorded(
            store.clone(),
            &file,
            Arc::new(clock.clone()),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        run.close().await.unwrap();
        let doc = store.latest_catalog_document(None).await.unwrap().unwrap();
        assert_eq!(doc.source, CatalogSource::Api, "{name}: nothing recorded");

        // The edit is dropped; the server starts on the file it was started
        // with: the applied catalog is still served.
        std::fs::write(&file, CATALOG).unwrap();
        let engine = open(store.clone(), &file, &clock).await;
        assert!(engine.catalog().plan("team").is_some(), "{name}");
        engine.close().await.unwrap();
        backend.cleanup().await;
    }
}

/// The test catalog without `api_calls` and `seats` (the features and every
/// plan's entitlement to them: each plan gets a new version).
fn without_calls_and_seats() -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in CATALOG.lines() {
        if line.starts_with('[') {
            skip = line == "[features.api_calls]" || line == "[features.seats]";
        }
        if skip || line.starts_with("api_calls =") || line.starts_with("seats =") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Docs: catalog.md, "Applying a catalog to a running server" (a feature
/// added back). Free has 100 API calls a month (hard) and 2 seats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_added_back_by_an_apply_keeps_the_usage_of_its_period() {
    for backend in backends("catalog_readd") {
        let name = backend.name;
        let mut srv = TestServer::start(backend, CATALOG).await;
        let admin = srv.admin_key.clone();
        let key = srv.server_key().await;
        // `c` stays on free v1; `m` is moved to the version the apply
        // publishes.
        for c in ["c", "m"] {
            srv.customer(c, Some("free")).await;
            let r = consume(&srv, &key, c, "api_calls", 90).await;
            assert_eq!(r.status, 200, "{name}: {r}");
            let r = srv
                .put(
                    &format!("/v1/customers/{c}/gauges/seats"),
                    &key,
                    json!({"level": 2}),
                )
                .await;
            assert_eq!(r.status, 200, "{name}: {r}");
        }

        // A restart with a catalog file without the two features: free v2.
        srv.catalog_toml = without_calls_and_seats();
        let mut srv = srv.restart().await;
        let r = consume(&srv, &key, "c", "api_calls", 1).await;
        assert_ne!(r.status, 200, "{name}: not served: {r}");

        // Applied back through the API: free v1's subscriber is enforced
        // again, from the 90 calls and 2 seats already used this period.
        let r = put_catalog(&srv, "", &admin, CATALOG).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["applied"], true, "{name}: {r}");
        assert_eq!(
            change_of(&r, "free"),
            ("changed".into(), json!(2), json!(3)),
            "{name}"
        );
        let r = srv
            .put(
                "/v1/customers/m/subscription",
                &admin,
                json!({"plan": "free"}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["plan_version"], 3, "{name}: {r}");
        for c in ["m", "c"] {
            let r = consume(&srv, &key, c, "api_calls", 20).await;
            assert_eq!(r.status, 429, "{name}: {c}: 90 + 20 > 100: {r}");
            assert_eq!(r.body["used"], "90", "{name}: {c}: {r}");
            let r = srv.get(&format!("/v1/customers/{c}/usage"), &admin).await;
            assert_eq!(r.status, 200, "{name}: {c}: {r}");
            assert_eq!(
                r.body["usage_summary"]["api_calls"]["used"], "90",
                "{name}: {c}: {r}"
            );
            assert_eq!(
                r.body["usage_summary"]["seats"]["used"], "2",
                "{name}: {c}: {r}"
            );
            let r = srv
                .post(
                    &format!("/v1/customers/{c}/gauges/seats/adjust"),
                    &key,
                    json!({"delta": 1}),
                )
                .await;
            assert_eq!(r.status, 429, "{name}: {c}: 2 seats of 2: {r}");
        }
        let r = consume(&srv, &key, "c", "api_calls", 10).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["used"], "100", "{name}: {r}");

        // The next start (on the catalog with both) counts the same.
        srv.catalog_toml = CATALOG.to_string();
        let srv = srv.restart().await;
        let r = consume(&srv, &key, "c", "api_calls", 1).await;
        assert_eq!(r.status, 429, "{name}: {r}");
        assert_eq!(r.body["used"], "100", "{name}: {r}");
        srv.stop().await;
    }
}

/// A metered consume through the engine: (allowed, used).
async fn engine_consume(engine: &Engine, customer: &str, n: u32) -> (bool, String) {
    let d = engine
        .consume(tollgate_engine::UsageRequest::new(
            customer,
            "api_calls",
            rust_decimal::Decimal::from(n),
        ))
        .await
        .unwrap();
    (d.allowed, d.used.to_string())
}

/// Docs: catalog.md, "Applying a catalog to a running server" (a feature
/// added back). The start that dropped the feature had no snapshot to read
/// (the one before it crashed), so the usage was in the ledger only; the
/// customer's override (95 calls instead of free's 100) and top-up (10
/// calls) come back with it, and so does the idempotency key of its first
/// request; the next start counts the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_added_back_after_a_crash_keeps_its_ledger_override_and_grant() {
    for backend in backends("catalog_readd_crash") {
        let name = backend.name;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("catalog.toml");
        std::fs::write(&file, CATALOG).unwrap();
        let clock = TestClock::new(t0());
        let store = backend.store().await;
        let engine = open(store.clone(), &file, &clock).await;
        engine
            .create_customer(tollgate_engine::NewCustomer::new("c"))
            .await
            .unwrap();
        engine
            .subscribe(
                "c",
                "free",
                SubscribeOptions {
                    status: Some(tollgate_store::SubscriptionStatus::Active),
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
        let limit95 = serde_json::from_value(json!({
            "kind": "metered", "limit": "95", "enforcement": "hard", "overage": false,
            "reset": null, "emergency_allowance": null, "emergency_unit_price": null,
            "alert_thresholds": null
        }))
        .unwrap();
        engine
            .set_override("c", "api_calls", &limit95)
            .await
            .unwrap();
        engine
            .add_grant(tollgate_engine::NewGrant {
                customer: "c".into(),
                feature: "api_calls".into(),
                kind: "top_up".into(),
                quantity: 10.into(),
                priority: 1,
                effective_at: None,
                expires_at: None,
                metadata: serde_json::Value::Null,
            })
            .await
            .unwrap();
        let mut first = tollgate_engine::UsageRequest::new("c", "api_calls", 90.into());
        first.idempotency_key = Some("first".into());
        let d = engine.consume(first.clone()).await.unwrap();
        assert_eq!((d.allowed, d.used.to_string()), (true, "90".into()));
        // A crash: every handle dropped, no snapshot saved.
        drop(engine);
        assert!(store.load_snapshot().await.unwrap().is_none(), "{name}");

        std::fs::write(&file, without_calls_and_seats()).unwrap();
        let engine = open(store.clone(), &file, &clock).await;
        let applied = tollgate_core::catalog::load_catalog("api", CATALOG).unwrap();
        let document = tollgate_server::catalog::document(CatalogSource::Api, "api", CATALOG, t0());
        let (_, done) = engine
            .apply_catalog(applied, document, false)
            .await
            .unwrap();
        assert!(done, "{name}");
        // A retry of the first request is answered again, not counted again.
        let d = engine.consume(first).await.unwrap();
        assert!(d.replayed, "{name}: {d:?}");
        // 90 used of 95 + 10: 16 more is refused, 15 is not.
        assert_eq!(
            engine_consume(&engine, "c", 16).await,
            (false, "90".into()),
            "{name}"
        );
        assert_eq!(
            engine_consume(&engine, "c", 15).await,
            (true, "105".into()),
            "{name}"
        );
        engine.close().await.unwrap();

        // The next start (the file with the feature again) reads the
        // snapshot the apply's engine saved.
        std::fs::write(&file, CATALOG).unwrap();
        let engine = open(store.clone(), &file, &clock).await;
        assert_eq!(
            engine_consume(&engine, "c", 1).await,
            (false, "105".into()),
            "{name}"
        );
        engine.close().await.unwrap();
        backend.cleanup().await;
    }
}
