//! Server infrastructure over real HTTP: health, readiness, metrics, the
//! OpenAPI document and the reference page, error shapes, body limit, rate
//! limit, keys.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_routes() {
    for backend in backends("health") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let r = srv.get("/healthz", "").await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["status"], "ok");
        let r = srv.get("/readyz", "").await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["backend"], name);

        let r = srv.get("/v1/nothing-here", &srv.admin_key).await;
        assert_eq!(r.status, 404, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["status"], 404);
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("/v1/nothing-here")
        );

        let r = srv.call(M::DELETE, "/healthz", "", None).await;
        assert_eq!(r.status, 405, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["code"], "method_not_allowed");
        assert!(
            r.header("allow").unwrap().contains("GET"),
            "{:?}",
            r.headers
        );
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_once_the_engine_is_closed() {
    let backend = backends("ready_closed").remove(0);
    let srv = TestServer::start(backend, CATALOG).await;
    srv.engine.close().await.unwrap();
    let r = srv.get("/readyz", "").await;
    assert_eq!(r.status, 503, "{r}");
    assert_eq!(r.content_type(), "application/problem+json");
    assert!(r.body["detail"].as_str().unwrap().contains("engine"), "{r}");
    assert_eq!(srv.get("/healthz", "").await.status, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_status() {
    let backend = backends("metrics").remove(0);
    let srv = TestServer::start(backend, CATALOG).await;
    srv.customer("m1", None).await;
    for _ in 0..3 {
        assert_eq!(
            srv.get("/v1/customers/m1", &srv.admin_key).await.status,
            200
        );
    }
    assert_eq!(
        srv.get("/v1/customers/zz", &srv.admin_key).await.status,
        404
    );
    // A denial (free allows 100 api_calls) is counted by feature and reason.
    srv.customer("m2", Some("free")).await;
    let r = srv
        .post(
            "/v1/check",
            &srv.admin_key,
            json!({"customer": "m2", "feature": "api_calls", "quantity": 1000, "consume": true}),
        )
        .await;
    assert_eq!(r.status, 429, "{r}");
    // An allowed consume: counted as a decision and committed by a group commit.
    let r = srv
        .post(
            "/v1/check",
            &srv.admin_key,
            json!({"customer": "m2", "feature": "api_calls", "quantity": 1, "consume": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = srv.client.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let line = |needle: &[&str]| {
        text.lines()
            .find(|l| {
                l.starts_with("tollgate_http_requests_total")
                    && needle.iter().all(|n| l.contains(n))
            })
            .map(str::to_string)
    };
    // Labelled by the route pattern, not the raw path.
    let ok = line(&[
        "route=\"/v1/customers/{id}\"",
        "status=\"200\"",
        "method=\"GET\"",
    ])
    .unwrap_or_else(|| panic!("no request counter:\n{text}"));
    let count: f64 = ok.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{ok}");
    assert!(line(&["route=\"/v1/customers/{id}\"", "status=\"404\""]).is_some());
    assert!(
        !text.contains("/v1/customers/m1"),
        "raw paths are not labels"
    );
    assert!(text.contains("tollgate_http_request_duration_seconds_bucket"));
    assert!(text.contains("# TYPE tollgate_http_requests_total counter"));
    assert!(text.contains("tollgate_api_keys_active"));
    assert!(
        text.lines().any(|l| l.starts_with("tollgate_denials_total")
            && l.contains("feature=\"api_calls\"")
            && l.contains("reason=\"limit_reached\"")),
        "{text}"
    );
    // Other tests of this binary share the process-wide recorder: at least ours.
    let value = |name: &str, labels: &[&str]| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {labels:?}:\n{text}"))
    };
    let api_calls = "feature=\"api_calls\"";
    assert!(
        value(
            "tollgate_decisions_total",
            &[api_calls, "allowed=\"false\""]
        ) >= 1.0
    );
    assert!(value("tollgate_decisions_total", &[api_calls, "allowed=\"true\""]) >= 1.0);
    assert!(value("tollgate_group_commit_writes_total", &[]) >= 1.0);
    assert!(value("tollgate_group_commit_batches_total", &[]) >= 1.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_reference_page() {
    let backend = backends("openapi").remove(0);
    let srv = TestServer::start(backend, CATALOG).await;
    let r = srv.get("/openapi.json", "").await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.content_type().starts_with("application/json"));
    let doc = r.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["title"], "Tollgate API");
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/customers",
        "/v1/customers/{id}",
        "/v1/customers/{id}/subscription",
        "/v1/customers/{id}/overrides/{feature}",
        "/v1/customers/{id}/grants",
        "/v1/customers/{id}/grants/{grant_id}",
        "/v1/customers/{id}/emergency-pool",
        "/v1/customers/{id}/admin-bypass",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    // Every operation is documented: a summary, a tag, at least one response.
    let mut ops = Vec::new();
    for (path, item) in paths {
        for m in ["get", "post", "put", "patch", "delete"] {
            if let Some(op) = item.get(m) {
                assert!(op["summary"].is_string(), "{m} {path} has no summary");
                assert!(op["tags"][0].is_string(), "{m} {path} has no tag");
                assert!(!op["responses"].as_object().unwrap().is_empty());
                ops.push((
                    m.to_uppercase(),
                    path.clone(),
                    op["summary"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    // Public routes say so; the others need the bearer key.
    assert_eq!(
        paths["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );
    assert!(paths["/v1/customers"]["post"].get("security").is_none());
    assert_eq!(doc["security"][0]["api_key"], serde_json::json!([]));

    let r = srv.client.get(srv.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"));
    for (method, path, summary) in &ops {
        let escaped_path = path.replace('&', "&amp;");
        assert!(
            html.contains(&format!(
                ">{method}</span><span class=\"path\">{escaped_path}<"
            )),
            "the page lists {method} {path}"
        );
        let escaped = summary
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        assert!(
            html.contains(&escaped),
            "the page shows the summary of {method} {path}"
        );
    }
    assert!(
        html.contains("id=\"schema-CustomerOut\""),
        "schemas are listed"
    );
    assert!(
        html.contains("<code>time_zone</code>"),
        "schema fields are listed"
    );
    // Self-contained: no script, nothing fetched from elsewhere.
    assert!(!html.contains("<script"));
    assert!(!html.contains("src="));
    assert!(!html.contains("<link"));
    assert!(!html.contains("https://") && !html.contains("http://"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_minted_listed_and_scoped() {
    for backend in backends("keys_api") {
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("acme", None).await;
        let admin = srv.admin_key.clone();
        assert!(admin.starts_with("tg_"));

        let r = srv
            .post(
                "/v1/keys",
                &admin,
                json!({"name": "portal", "scope": "customer", "customer_id": "acme"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        assert!(r.body["id"].as_str().unwrap().starts_with("key_"));
        let secret = r.body["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with(r.body["prefix"].as_str().unwrap()));
        assert_eq!(r.body["scope"], "customer");

        // The list never shows a secret or a digest.
        let r = srv.get("/v1/keys", &admin).await;
        assert_eq!(r.status, 200, "{r}");
        let text = r.body.to_string();
        assert!(!text.contains(&secret));
        assert!(!text.contains(&admin));
        assert!(!text.contains("digest"));
        assert_eq!(r.body["data"].as_array().unwrap().len(), 2);

        // The customer key reads its customer, and nothing admin.
        assert_eq!(srv.get("/v1/customers/acme", &secret).await.status, 200);
        assert_eq!(srv.get("/v1/keys", &secret).await.status, 403);
        let server = srv.server_key().await;
        let r = srv
            .post("/v1/keys", &server, json!({"name": "x", "scope": "admin"}))
            .await;
        assert_eq!(r.status, 403, "{r}");
        assert_eq!(r.body["code"], "forbidden");

        // Invalid requests name the field.
        for (body, field) in [
            (json!({"name": "p", "scope": "customer"}), "customer_id"),
            (
                json!({"name": "p", "scope": "customer", "customer_id": "ghost"}),
                "customer_id",
            ),
            (
                json!({"name": "p", "scope": "server", "customer_id": "acme"}),
                "customer_id",
            ),
            (json!({"name": " ", "scope": "server"}), "name"),
            (json!({"name": "p", "scope": "root"}), "scope"),
        ] {
            let r = srv.post("/v1/keys", &admin, body.clone()).await;
            assert_eq!(r.status, 422, "{body}: {r}");
            assert_eq!(r.error_fields(), [field], "{body}: {r}");
        }
        assert_eq!(
            srv.get("/v1/keys", &admin).await.body["data"]
                .as_array()
                .unwrap()
                .len(),
            3
        );

        // The last admin key cannot be revoked; an unknown key is a 404.
        let admin_id = srv
            .state
            .keys
            .list()
            .into_iter()
            .find(|k| k.scope == Scope::Admin)
            .unwrap()
            .id;
        let r = srv.delete(&format!("/v1/keys/{admin_id}"), &admin).await;
        assert_eq!(r.status, 409, "{r}");
        assert_eq!(srv.get("/v1/keys", &admin).await.status, 200);
        let r = srv.delete("/v1/keys/key_nope", &admin).await;
        assert_eq!(r.status, 404, "{r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_say_what_is_wrong() {
    use tollgate_server::app::{self, StartError};
    use tollgate_server::config::{Config, Overrides};
    let dir = tempfile::tempdir().unwrap();
    let broken = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/broken/ten-mistakes.toml"
    );
    let cfg = Config::from_toml(
        "",
        &Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            catalog: Some(broken.into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    let settings = cfg.resolve().unwrap();
    let err = app::build(&settings).await.unwrap_err();
    assert!(matches!(err, StartError::Catalog { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("ten-mistakes.toml"), "{text}");
    assert!(
        text.lines().count() >= 10,
        "every catalog error is listed:\n{text}"
    );

    // A store that cannot be opened names its URL (without the password).
    let cfg = Config::from_toml(
        "storage_url = \"postgres://tg:hunter2@127.0.0.1:notaport/none\"",
        &Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            catalog: Some(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../examples/catalogs/voca.toml"
                )
                .into(),
            ),
            ..Overrides::default()
        },
    )
    .unwrap();
    let err = app::build(&cfg.resolve().unwrap()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot open the store postgres://tg:***@127.0.0.1:notaport/none"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
}
