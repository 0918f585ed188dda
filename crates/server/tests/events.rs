//! `POST /v1/events` over real HTTP: mixed batches, duplicates, rejections,
//! CloudEvents (single and batch), the 100,000-event bound — on SQLite and
//! (when configured) PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use jiff::SignedDuration;
use serde_json::{Value, json};

async fn used(srv: &TestServer, customer: &str, feature: &str) -> String {
    let r = srv
        .get(
            &format!("/v1/customers/{customer}/entitlements"),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    r.body["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == feature)
        .unwrap()["used"]
        .as_str()
        .unwrap()
        .to_string()
}

fn result(r: &Reply, i: usize) -> &Value {
    &r.body["results"][i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_is_decided_event_by_event() {
    for backend in backends("events_mixed") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("acme", Some("free")).await;
        let key = srv.server_key().await;
        srv.clock.advance(SignedDuration::from_hours(1));
        let batch = json!({"events": [
            {"customer": "acme", "feature": "api_calls", "quantity": 10, "idempotency_key": "e1",
             "properties": {"endpoint": "/search"}},
            {"customer": "acme", "feature": "api_calls", "quantity": 10, "idempotency_key": "e1"},
            {"customer": "ghost", "feature": "api_calls", "quantity": 1},
            {"customer": "acme", "feature": "api_calls", "quantity": -5},
            {"customer": "acme", "feature": "nope", "quantity": 1},
            {"customer": "acme", "feature": "seats", "quantity": 1},
            {"customer": "acme", "feature": "api_calls", "quantity": 1, "timestamp": "2025-01-10T00:00:00Z"},
            {"customer": "acme", "feature": "api_calls", "quantity": 1, "timestamp": "2025-01-15T13:30:00Z"},
            {"customer": "acme", "feature": "api_calls", "quantity": "2.5", "colour": "red"},
            {"customer": "acme", "feature": "api_calls", "quantity": "2.5", "timestamp": "2025-01-15T12:30:00Z",
             "billable": false},
            {"customer": "acme", "feature": "api_calls", "quantity": "abc"},
        ]});
        let r = srv.post("/v1/events", &key, batch).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["accepted"], 2, "{name}: {r}");
        assert_eq!(r.body["duplicate"], 1);
        assert_eq!(r.body["rejected"], 8);
        let statuses: Vec<&str> = r.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            [
                "accepted",
                "duplicate",
                "rejected",
                "rejected",
                "rejected",
                "rejected",
                "rejected",
                "rejected",
                "rejected",
                "accepted",
                "rejected"
            ],
            "{name}: {r}"
        );
        for (i, x) in r.body["results"].as_array().unwrap().iter().enumerate() {
            assert_eq!(x["index"], i);
        }
        assert_eq!(result(&r, 0)["counted"], true);
        assert_eq!(result(&r, 2)["reason"], "unknown_customer");
        assert_eq!(result(&r, 3)["reason"], "invalid_event");
        assert_eq!(result(&r, 3)["field"], "quantity");
        assert_eq!(result(&r, 4)["reason"], "unknown_feature");
        assert_eq!(result(&r, 5)["reason"], "wrong_feature_kind");
        assert_eq!(result(&r, 6)["reason"], "too_old");
        assert_eq!(result(&r, 7)["reason"], "in_the_future");
        assert_eq!(result(&r, 8)["reason"], "invalid_event");
        assert!(
            result(&r, 8)["message"]
                .as_str()
                .unwrap()
                .contains("colour"),
            "{r}"
        );
        assert_eq!(result(&r, 10)["field"], "quantity");
        assert_eq!(used(&srv, "acme", "api_calls").await, "12.5", "{name}");

        // Sending the first event again is a duplicate: nothing more counted.
        let r = srv
            .post(
                "/v1/events",
                &key,
                json!({"events": [{"customer": "acme", "feature": "api_calls", "quantity": 10, "idempotency_key": "e1"}]}),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(result(&r, 0)["status"], "duplicate");
        assert_eq!(used(&srv, "acme", "api_calls").await, "12.5", "{name}");

        // Events are never denied; going over a hard limit is flagged.
        let r = srv
            .post(
                "/v1/events",
                &key,
                json!({"events": [{"customer": "acme", "feature": "api_calls", "quantity": 150}]}),
            )
            .await;
        assert_eq!(result(&r, 0)["status"], "accepted", "{name}: {r}");
        assert_eq!(result(&r, 0)["over_limit"], true);
        assert_eq!(used(&srv, "acme", "api_calls").await, "162.5", "{name}");

        // The ledger holds what was accepted, with properties and billability.
        let r = srv
            .get("/v1/admin/usage/export?customer=acme", &srv.admin_key)
            .await;
        let csv = r.body.as_str().unwrap().to_string();
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 3, "{name}: {csv}");
        assert!(rows[0].contains(r#""{""endpoint"":""/search""}""#), "{csv}");
        assert!(rows[0].contains(",e1,"), "{csv}");
        assert!(rows[1].contains(",event,false,"), "{csv}");

        // An empty batch is fine; a customer key may not ingest; not JSON → 400.
        let r = srv.post("/v1/events", &key, json!({"events": []})).await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["accepted"], 0);
        let ckey = srv.customer_key("acme").await;
        let r = srv.post("/v1/events", &ckey, json!({"events": []})).await;
        assert_eq!(r.status, 403, "{name}: {r}");
        let r = srv
            .call_raw(M::POST, "/v1/events", &key, "application/json", "events: 1")
            .await;
        assert_eq!(r.status, 400, "{name}: {r}");
        assert_eq!(r.content_type(), "application/problem+json");
        let r = srv.post("/v1/events", &key, json!({"evts": []})).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        let r = srv.post("/v1/events", &key, json!({"events": {}})).await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["events"]);
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_single_and_batch() {
    for backend in backends("cloudevents") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("acme", Some("pro")).await;
        let key = srv.server_key().await;
        srv.clock.advance(SignedDuration::from_hours(2));

        let single = json!({
            "specversion": "1.0",
            "id": "ce-1",
            "source": "/billing/app",
            "type": "tollgate.usage.api_calls",
            "subject": "acme",
            "time": "2025-01-15T13:00:00Z",
            "datacontenttype": "application/json",
            "data": {"quantity": 3, "region": "eu"},
            "traceparent": "00-abc-01"
        });
        let r = srv
            .call_raw(
                M::POST,
                "/v1/events",
                &key,
                "application/cloudevents+json; charset=utf-8",
                single.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["accepted"], 1, "{name}: {r}");
        assert_eq!(used(&srv, "acme", "api_calls").await, "3");
        // Same id again: a duplicate.
        let r = srv
            .call_raw(
                M::POST,
                "/v1/events",
                &key,
                "application/cloudevents+json",
                single.to_string(),
            )
            .await;
        assert_eq!(result(&r, 0)["status"], "duplicate", "{name}: {r}");

        let batch = json!([
            {"specversion": "1.0", "id": "ce-2", "source": "s", "type": "com.example.usage",
             "subject": "acme", "data": {"feature": "minutes", "quantity": "1.25", "model": "x"}},
            {"specversion": "1.0", "id": "ce-3", "source": "s", "type": "api_calls",
             "subject": "acme"},
            {"specversion": "1.0", "id": "ce-4", "source": "s", "type": "tollgate.usage.api_calls"},
            {"specversion": "0.3", "id": "ce-5", "source": "s", "type": "tollgate.usage.api_calls",
             "subject": "acme"},
            {"specversion": "1.0", "id": "ce-6", "source": "s", "type": "tollgate.usage.api_calls",
             "subject": "acme", "data": {"quantity": "many"}},
            {"specversion": "1.0", "source": "s", "type": "tollgate.usage.api_calls", "subject": "acme"},
            {"specversion": "1.0", "id": "ce-7", "source": "s", "type": "tollgate.usage.api_calls",
             "subject": "acme", "data": [1, 2]},
        ]);
        let r = srv
            .call_raw(
                M::POST,
                "/v1/events",
                &key,
                "application/cloudevents-batch+json",
                batch.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["accepted"], 2, "{name}: {r}");
        assert_eq!(r.body["rejected"], 5);
        assert_eq!(result(&r, 0)["status"], "accepted");
        assert_eq!(result(&r, 1)["status"], "accepted");
        assert_eq!(result(&r, 2)["field"], "subject");
        assert_eq!(result(&r, 3)["field"], "specversion");
        assert_eq!(result(&r, 4)["field"], "data.quantity");
        assert_eq!(result(&r, 5)["reason"], "invalid_event");
        assert_eq!(result(&r, 6)["field"], "data");
        assert_eq!(used(&srv, "acme", "minutes").await, "1.25");
        // A type without a quantity counts one.
        assert_eq!(used(&srv, "acme", "api_calls").await, "4");

        let r = srv
            .get(
                "/v1/admin/usage/export?customer=acme&feature=api_calls",
                &srv.admin_key,
            )
            .await;
        let csv = r.body.as_str().unwrap().to_string();
        let first = csv.lines().nth(1).unwrap();
        assert!(first.contains(",3,2025-01-15T13:00:00Z,"), "{csv}");
        assert!(first.contains(",ce-1,"), "{csv}");
        assert!(first.contains(r#""{""region"":""eu""}""#), "{csv}");

        // A batch body that is not an array.
        let r = srv
            .call_raw(
                M::POST,
                "/v1/events",
                &key,
                "application/cloudevents-batch+json",
                single.to_string(),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100000_events_is_a_422_naming_events_and_large_batches_go_through() {
    for backend in backends("events_bound") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("c", Some("business")).await;
        let key = srv.server_key().await;

        let event = r#"{"customer":"c","feature":"api_calls","quantity":1}"#;
        let body = |n: usize| {
            let mut s = String::with_capacity(n * (event.len() + 1) + 16);
            s.push_str(r#"{"events":["#);
            for i in 0..n {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(event);
            }
            s.push_str("]}");
            s
        };
        let r = srv
            .call_raw(
                M::POST,
                "/v1/events",
                &key,
                "application/json",
                body(100_001),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {r}");
        assert_eq!(r.error_fields(), vec!["events"]);
        assert!(r.body["detail"].as_str().unwrap().contains("100000"), "{r}");
        assert_eq!(used(&srv, "c", "api_calls").await, "0", "{name}");

        let r = srv
            .call_raw(
                M::POST,
                "/v1/events",
                &key,
                "application/json",
                body(20_000),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {}", r.status);
        assert_eq!(r.body["accepted"], 20_000, "{name}");
        assert_eq!(used(&srv, "c", "api_calls").await, "20000", "{name}");
        srv.stop().await;
    }
}
