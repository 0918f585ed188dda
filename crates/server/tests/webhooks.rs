//! Alerts delivered as signed webhooks, over the real server: consumes that
//! cross 80/95/100 % reach a receiver on 127.0.0.1 once each, verified by the
//! third-party `standardwebhooks` library; a receiver down for a while and a
//! server restart in the middle of retries lose nothing; the admin API
//! (endpoints, rotation, delivery log, retry, replay, test) with its scopes.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../notify/tests/common/mod.rs"]
mod peers;

use std::time::Duration;

use common::{CATALOG, Scope, TestServer, backends};
use jiff::{SignedDuration, Timestamp};
use peers::{Receiver, verify_with_standardwebhooks};
use serde_json::{Value, json};
use tollgate_server::config::Settings;

/// Settings that let webhooks reach 127.0.0.1 (and nothing else private).
fn settings() -> Settings {
    let mut s = Settings::embedded();
    s.notify.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
    s
}

/// The server on a test clock set to the real time (the reference verifier
/// checks `webhook-timestamp` against it), in whole seconds.
async fn server(backend: common::Backend) -> TestServer {
    let srv = TestServer::start_with(backend, CATALOG, settings()).await;
    srv.clock
        .set(Timestamp::from_second(Timestamp::now().as_second()).unwrap());
    srv
}

async fn create_endpoint(srv: &TestServer, url: &str, types: Value) -> Value {
    let r = srv
        .post(
            "/v1/webhooks/endpoints",
            &srv.admin_key,
            json!({"url": url, "event_types": types, "description": "alerts"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    r.body
}

async fn consume(srv: &TestServer, key: &str, customer: &str, qty: u32) -> u16 {
    srv.post(
        "/v1/check",
        key,
        json!({"customer": customer, "feature": "api_calls", "quantity": qty, "consume": true}),
    )
    .await
    .status
}

#[tokio::test]
async fn consumes_through_80_95_100_percent_deliver_one_verified_webhook_per_threshold() {
    for backend in backends("wh_thresholds") {
        let srv = server(backend).await;
        let rx = Receiver::start().await;
        let ep = create_endpoint(&srv, &rx.url, json!(["usage.threshold_reached"])).await;
        srv.customer("acme", Some("free")).await; // api_calls: 100, hard
        let key = srv.server_key().await;
        for qty in [50, 30, 10, 5, 3, 2] {
            assert_eq!(consume(&srv, &key, "acme", qty).await, 200);
        }
        assert_eq!(consume(&srv, &key, "acme", 1).await, 429);
        let got = rx.wait_accepted(3, Duration::from_secs(20)).await;
        // Nothing more arrives: one delivery per threshold.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got_all = rx.all();
        assert_eq!(got.len(), 3, "{got_all:?}");
        assert_eq!(got_all.len(), 3);
        let secret = ep["secret"].as_str().unwrap();
        let verified = verify_with_standardwebhooks(secret, &got);
        assert!(verified.iter().all(Result::is_ok), "{verified:?}");
        let mut thresholds: Vec<String> = got
            .iter()
            .map(|r| {
                r.json()["data"]["threshold"]["value"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        thresholds.sort_by_key(|t| t.parse::<u32>().unwrap_or(0));
        assert_eq!(thresholds, vec!["80", "95", "100"]);
        let mut seqs: Vec<i64> = got
            .iter()
            .map(|r| r.json()["sequence"].as_i64().unwrap())
            .collect();
        seqs.sort();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        for r in &got {
            assert_eq!(r.json()["customer_id"], "acme");
            assert_eq!(r.json()["data"]["feature"], "api_calls");
        }
        srv.stop().await;
    }
}

#[tokio::test]
async fn a_restart_in_the_middle_of_retries_loses_nothing_and_duplicates_share_the_id() {
    for backend in backends("wh_restart") {
        let srv = server(backend).await;
        let rx = Receiver::start().await;
        create_endpoint(&srv, &rx.url, json!([])).await;
        rx.answer(503, None);
        srv.customer("acme", Some("free")).await;
        let key = srv.server_key().await;
        assert_eq!(consume(&srv, &key, "acme", 80).await, 200);
        assert_eq!(consume(&srv, &key, "acme", 15).await, 200);
        // Both events were tried and refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while rx.all().len() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(rx.all().len() >= 2, "{:?}", rx.all());
        let srv = srv.restart().await;
        rx.answer(200, None);
        // The retry is due 5 s (±20 %) after the failure, on the test clock.
        srv.clock.advance(SignedDuration::from_secs(7));
        let got = rx.wait_accepted(2, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 2, "{:?}", rx.all());
        let accepted: Vec<String> = got
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_string())
            .collect();
        for (r, _) in rx.all() {
            assert!(
                accepted
                    .iter()
                    .any(|id| Some(id.as_str()) == r.header("webhook-id")),
                "an unknown id"
            );
        }
        srv.stop().await;
    }
}

#[tokio::test]
async fn the_admin_api_manages_endpoints_and_the_delivery_log() {
    for backend in backends("wh_admin") {
        let srv = server(backend).await;
        let admin = srv.admin_key.clone();
        let rx = Receiver::start().await;
        // Refused: a private address, a bad event type, an unknown field.
        let r = srv
            .post(
                "/v1/webhooks/endpoints",
                &admin,
                json!({"url": "http://10.0.0.7/hook"}),
            )
            .await;
        assert_eq!(r.status, 422, "{r}");
        assert_eq!(r.error_fields(), vec!["url"]);
        assert!(
            r.body["detail"].as_str().unwrap().contains("private"),
            "{r}"
        );
        let r = srv
            .post(
                "/v1/webhooks/endpoints",
                &admin,
                json!({"url": rx.url, "event_types": ["Usage!"]}),
            )
            .await;
        assert_eq!(
            (r.status, r.error_fields()),
            (422, vec!["event_types".to_string()]),
            "{r}"
        );
        let r = srv
            .post(
                "/v1/webhooks/endpoints",
                &admin,
                json!({"url": rx.url, "colour": "red"}),
            )
            .await;
        assert!(r.status == 400 || r.status == 422, "{r}");
        // Scopes: admin only.
        for scope in [Scope::Server, Scope::Customer] {
            let key = match scope {
                Scope::Customer => {
                    srv.customer("acme", Some("free")).await;
                    srv.customer_key("acme").await
                }
                _ => srv.server_key().await,
            };
            assert_eq!(srv.get("/v1/webhooks/endpoints", &key).await.status, 403);
            let r = srv
                .post("/v1/webhooks/endpoints", &key, json!({"url": rx.url}))
                .await;
            assert_eq!(r.status, 403);
        }
        let ep = create_endpoint(&srv, &rx.url, json!(["usage.*"])).await;
        let id = ep["id"].as_str().unwrap().to_string();
        assert!(ep["secret"].as_str().unwrap().starts_with("whsec_"));
        assert_eq!(
            (ep["state"].as_str(), ep["enabled"].as_bool()),
            (Some("healthy"), Some(true))
        );
        let list = srv.get("/v1/webhooks/endpoints", &admin).await;
        assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
        let r = srv
            .patch(
                &format!("/v1/webhooks/endpoints/{id}"),
                &admin,
                json!({"description": null, "event_types": []}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(
            (r.body["description"].clone(), r.body["event_types"].clone()),
            (Value::Null, json!([]))
        );
        // Rotation: a new secret; the old one signs for 24 h more.
        let old = ep["secret"].as_str().unwrap().to_string();
        let r = srv
            .post(
                &format!("/v1/webhooks/endpoints/{id}/rotate-secret"),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        let new = r.body["secret"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        let expires: Timestamp = r.body["previous_secret_expires_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            expires,
            tollgate_engine::Clock::now(&srv.clock) + SignedDuration::from_hours(24)
        );
        // A test event reaches the receiver, signed with both secrets.
        let r = srv
            .post(
                &format!("/v1/webhooks/endpoints/{id}/test"),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 202, "{r}");
        let delivery = r.body["id"].as_str().unwrap().to_string();
        let got = rx.wait_accepted(1, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].json()["type"], "webhook.test");
        assert!(verify_with_standardwebhooks(&old, &got)[0].is_ok());
        assert!(verify_with_standardwebhooks(&new, &got)[0].is_ok());
        // The delivery log.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let d = loop {
            let d = srv
                .get(&format!("/v1/webhooks/deliveries/{delivery}"), &admin)
                .await;
            if d.body["state"] == "succeeded" || std::time::Instant::now() > deadline {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(d.status, 200, "{d}");
        assert_eq!(
            (d.body["state"].as_str(), d.body["last_status"].as_u64()),
            (Some("succeeded"), Some(200)),
            "{d}"
        );
        assert_eq!(d.body["log"][0]["status"], 200);
        assert!(d.body["log"][0]["duration_ms"].is_u64());
        let list = srv
            .get(&format!("/v1/webhooks/deliveries?endpoint_id={id}"), &admin)
            .await;
        assert_eq!(list.body["data"].as_array().unwrap().len(), 1, "{list}");
        // Retry by hand: delivered again with the same webhook-id.
        let r = srv
            .post(
                &format!("/v1/webhooks/deliveries/{delivery}/retry"),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, 202, "{r}");
        let got = rx.wait_accepted(2, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
        // Replay: the range must be the right way round.
        let now = tollgate_engine::Clock::now(&srv.clock);
        let r = srv
            .post("/v1/webhooks/replay", &admin, json!({"from": now.to_string(), "to": (now - SignedDuration::from_hours(1)).to_string()}))
            .await;
        assert_eq!(
            (r.status, r.error_fields()),
            (422, vec!["to".to_string()]),
            "{r}"
        );
        srv.customer("globex", Some("free")).await;
        let key = srv.server_key().await;
        assert_eq!(consume(&srv, &key, "globex", 90).await, 200);
        let got = rx.wait_accepted(3, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 3, "the 80 % alert of globex");
        let r = srv
            .post(
                "/v1/webhooks/replay",
                &admin,
                json!({"from": (now - SignedDuration::from_hours(1)).to_string(), "to": (now + SignedDuration::from_hours(1)).to_string(), "endpoint_id": id}),
            )
            .await;
        assert_eq!(r.status, 202, "{r}");
        assert_eq!(
            r.body["queued"], 1,
            "the test event is not replayed; the alert is: {r}"
        );
        let got = rx.wait_accepted(4, Duration::from_secs(20)).await;
        assert_eq!(got[3].header("webhook-id"), got[2].header("webhook-id"));
        // Delete.
        assert_eq!(
            srv.delete(&format!("/v1/webhooks/endpoints/{id}"), &admin)
                .await
                .status,
            204
        );
        let r = srv
            .get(&format!("/v1/webhooks/endpoints/{id}"), &admin)
            .await;
        assert_eq!(r.status, 404);
        assert_eq!(r.content_type(), "application/problem+json");
        srv.stop().await;
    }
}
