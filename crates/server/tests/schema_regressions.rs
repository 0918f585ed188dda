//! Regressions found by schemathesis (`.ci/schemathesis.sh`): every status
//! the server answers must be one the operation documents in /openapi.json,
//! with the documented body. Before the fix, no operation documented `401`,
//! operations with a body did not document `400` (a body that is not JSON),
//! and customer operations did not document `409` (the customer is deleted).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every authenticated operation of the document: (method, path template, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let public = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().all(|r| r.as_object().unwrap().is_empty()));
            if !public {
                ops.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// The path with every `{param}` replaced by `value`.
fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn method(m: &str) -> M {
    M::from_bytes(m.to_uppercase().as_bytes()).unwrap()
}

/// The answer's status is documented for the operation, and an error answer
/// is a problem with the documented fields.
fn assert_documented(name: &str, what: &str, m: &str, path: &str, op: &Value, r: &Reply) {
    let status = r.status.to_string();
    assert!(
        op["responses"].get(&status).is_some(),
        "{name}: {what}: {} {path} answered {status}, which it does not document: {r}",
        m.to_uppercase()
    );
    if r.status >= 400 {
        assert_eq!(r.content_type(), "application/problem+json", "{name}: {r}");
        for field in ["type", "title", "status", "detail", "code"] {
            assert!(r.body.get(field).is_some(), "{name}: no {field}: {r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_status_is_documented() {
    for backend in backends("schema_statuses") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let doc = srv.get("/openapi.json", "").await.body;
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        srv.customer("acme", Some("pro")).await;
        srv.customer("gone", Some("pro")).await;
        let r = srv.delete("/v1/customers/gone", &srv.admin_key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        let reader = srv.customer_key("acme").await;
        let ops = operations(&doc);
        assert!(ops.len() > 30, "{name}: {} operations", ops.len());

        for (m, path, op) in &ops {
            // Without a key: 401, documented everywhere.
            let url = fill(path, "acme");
            let r = srv.call(method(m), &url, "", None).await;
            assert_eq!(r.status, 401, "{name}: {m} {url}: {r}");
            assert_documented(name, "no key", m, path, op, &r);

            // A body that is not JSON: 400 where the body is JSON; where it
            // is text (a catalog), JSON is the wrong media type: 415.
            if let Some(body) = op.get("requestBody") {
                let r = srv
                    .call_raw(method(m), &url, &srv.admin_key, "application/json", "{")
                    .await;
                let json = body["content"].get("application/json").is_some();
                assert_eq!(
                    r.status,
                    if json { 400 } else { 415 },
                    "{name}: {m} {url}: {r}"
                );
                assert_documented(name, "malformed body", m, path, op, &r);
            }

            // A read-only customer key on a write, or on admin routes: 403.
            if *m != "get" || path.starts_with("/v1/admin") || path.starts_with("/v1/keys") {
                let r = srv.call(method(m), &url, &reader, Some(json!({}))).await;
                assert_documented(name, "customer key", m, path, op, &r);
            }

            // A deleted customer's paths: whatever they answer is documented.
            if path.starts_with("/v1/customers/{id}") {
                let url = fill(path, "gone");
                let body = op.get("requestBody").map(|_| json!({}));
                let r = srv.call(method(m), &url, &srv.admin_key, body).await;
                assert!(r.status < 500, "{name}: {m} {url}: {r}");
                assert_documented(name, "deleted customer", m, path, op, &r);
            }
        }
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_customer_conflicts_are_documented() {
    for backend in backends("schema_deleted") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let doc = srv.get("/openapi.json", "").await.body;
        srv.customer("gone", Some("pro")).await;
        let r = srv.delete("/v1/customers/gone", &srv.admin_key).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        // The two answers schemathesis found undocumented.
        let r = srv
            .put(
                "/v1/customers/gone/admin-bypass",
                &srv.admin_key,
                json!({"enabled": false}),
            )
            .await;
        assert_eq!(r.status, 409, "{name}: {r}");
        let op = &doc["paths"]["/v1/customers/{id}/admin-bypass"]["put"];
        assert_documented(name, "deleted customer", "put", "admin-bypass", op, &r);
        let r = srv
            .post(
                "/v1/customers/gone/grants",
                &srv.admin_key,
                json!({"feature": "api_calls", "quantity": 5}),
            )
            .await;
        assert_eq!(r.status, 409, "{name}: {r}");
        let op = &doc["paths"]["/v1/customers/{id}/grants"]["post"];
        assert_documented(name, "deleted customer", "post", "grants", op, &r);
        srv.stop().await;
    }
}
