//! The delivery worker against a real store (SQLite; PostgreSQL when
//! `TOLLGATE_TEST_POSTGRES_URL` is set), a real webhook receiver on 127.0.0.1
//! and a real SMTP server, on a test clock: hours of retries without sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Place, Receiver, SmtpSink, places, verify_with_standardwebhooks};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tollgate_engine::TestClock;
use tollgate_notify::worker::{REQUEUED, health, state};
use tollgate_notify::{
    EndpointChange, NewEndpoint, Notifier, NotifyConfig, NotifyError, SmtpConfig,
};
use tollgate_store::notify::OutboxEvent;
use tollgate_store::{CustomerRecord, Store};

fn config() -> NotifyConfig {
    NotifyConfig {
        allowed_networks: vec!["127.0.0.1/32".parse().unwrap()],
        ..NotifyConfig::default()
    }
}

struct Setup {
    place: Place,
    store: Arc<dyn Store>,
    clock: TestClock,
    notifier: Notifier,
}

impl Setup {
    async fn new(place: Place, config: NotifyConfig) -> Setup {
        let store = place.open().await;
        // The reference verifier checks the timestamp against real time.
        // (Whole seconds: the stores keep microseconds.)
        let clock = TestClock::new(Timestamp::from_second(Timestamp::now().as_second()).unwrap());
        let notifier = Notifier::new(store.clone(), Arc::new(clock.clone()), config).unwrap();
        Setup {
            place,
            store,
            clock,
            notifier,
        }
    }

    /// Writes an event to the outbox (as the engine does).
    async fn event(&self, event_type: &str, customer: &str, data: Value) -> OutboxEvent {
        let e = OutboxEvent {
            id: tollgate_notify::worker::new_id("evt_").unwrap(),
            event_type: event_type.into(),
            customer_id: Some(customer.into()),
            object_key: format!("customer:{customer}"),
            object_seq: 0,
            dedup_key: None,
            payload: data,
            created_at: self.clock.now_ts(),
            seq: 0,
        };
        let mut inserted = self.store.notify().insert_events(&[e]).await.unwrap();
        inserted.pop().unwrap()
    }

    async fn endpoint(&self, url: &str, types: &[&str]) -> tollgate_store::notify::EndpointRecord {
        self.notifier
            .create_endpoint(NewEndpoint {
                url: url.into(),
                event_types: types.iter().map(|t| t.to_string()).collect(),
                enabled: true,
                description: Some("test receiver".into()),
                secret: None,
            })
            .await
            .unwrap()
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(SignedDuration::from_secs(secs));
    }
}

trait Now {
    fn now_ts(&self) -> Timestamp;
}

impl Now for TestClock {
    fn now_ts(&self) -> Timestamp {
        tollgate_engine::Clock::now(self)
    }
}

fn threshold(pct: u32) -> Value {
    json!({"feature": "api_calls", "threshold": pct, "used": pct.to_string(), "limit": "100"})
}

#[tokio::test]
async fn each_event_reaches_each_subscribed_endpoint_once_signed_and_verified() {
    for place in places("fanout") {
        let s = Setup::new(place, config()).await;
        let rx = Receiver::start().await;
        let other = Receiver::start().await;
        let usage = s.endpoint(&rx.url, &["usage.*"]).await;
        s.endpoint(&other.url, &["invoice.issued"]).await;
        let mut ids = Vec::new();
        for pct in [80, 95, 100] {
            ids.push(
                s.event("usage.threshold_reached", "acme", threshold(pct))
                    .await
                    .id,
            );
        }
        let t = s.notifier.tick().await.unwrap();
        assert_eq!(
            (t.events, t.created, t.attempted, t.succeeded),
            (3, 3, 3, 3),
            "{}",
            s.place.name()
        );
        // A second pass sends nothing again.
        let again = s.notifier.tick().await.unwrap();
        assert_eq!((again.events, again.attempted), (0, 0));
        let got = rx.accepted();
        assert_eq!(got.len(), 3);
        assert!(other.all().is_empty(), "not subscribed to usage events");
        let verified = verify_with_standardwebhooks(&usage.secrets[0], &got);
        let mut verified_ids: Vec<String> = verified.into_iter().map(|r| r.unwrap()).collect();
        verified_ids.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(verified_ids, expected);
        for r in &got {
            assert_eq!(r.header("webhook-id"), r.json()["id"].as_str());
        }
        // The per-object sequence orders them: 1, 2, 3 for customer:acme.
        let mut seqs: Vec<i64> = got
            .iter()
            .map(|r| r.json()["sequence"].as_i64().unwrap())
            .collect();
        seqs.sort();
        assert_eq!(seqs, vec![1, 2, 3]);
        let wrong = verify_with_standardwebhooks(
            &tollgate_notify::signing::generate_secret().unwrap(),
            &got[..1],
        );
        assert!(
            wrong[0]
                .as_ref()
                .is_err_and(|e| e.contains("No matching signature")),
            "{wrong:?}"
        );
        s.place.cleanup().await;
    }
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_event_after_it_recovers() {
    for place in places("recover") {
        let s = Setup::new(place, config()).await;
        let rx = Receiver::start().await;
        let ep = s.endpoint(&rx.url, &[]).await;
        rx.answer(503, None);
        let mut ids = Vec::new();
        for pct in [80, 95, 100] {
            ids.push(
                s.event("usage.threshold_reached", "acme", threshold(pct))
                    .await
                    .id,
            );
        }
        ids.push(s.event("usage.denied", "globex", threshold(100)).await.id);
        let t = s.notifier.tick().await.unwrap();
        assert_eq!((t.attempted, t.succeeded), (4, 0));
        let e = s.notifier.endpoint(&ep.id).await.unwrap();
        assert_eq!(e.state, health::FAILING);
        assert_eq!(e.failing_since, Some(s.clock.now_ts()));
        // Retried 5 s later (±20 %): nothing due at +3 s, everything at +7 s.
        let pending = s.store.notify().deliveries(None, None, 0).await.unwrap();
        for d in &pending {
            let wait = d.next_attempt_at.unwrap().duration_since(s.clock.now_ts());
            assert!(
                wait >= SignedDuration::from_secs(4) && wait <= SignedDuration::from_secs(6),
                "{wait:?}"
            );
            assert_eq!(
                (d.state.as_str(), d.last_status),
                (state::PENDING, Some(503))
            );
        }
        s.advance(3);
        assert_eq!(s.notifier.tick().await.unwrap().attempted, 0);
        // Second failure asks for two minutes: Retry-After is honoured.
        rx.answer(503, Some("120"));
        s.advance(4);
        assert_eq!(s.notifier.tick().await.unwrap().attempted, 4);
        s.advance(60);
        assert_eq!(
            s.notifier.tick().await.unwrap().attempted,
            0,
            "Retry-After: 120 not honoured"
        );
        rx.answer(200, None);
        s.advance(61);
        let t = s.notifier.tick().await.unwrap();
        assert_eq!((t.attempted, t.succeeded), (4, 4));
        // Every event arrived; each was sent three times with one id.
        let mut got: Vec<String> = rx
            .accepted()
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_string())
            .collect();
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want, "none lost, none twice accepted");
        for id in &ids {
            let n = rx
                .all()
                .iter()
                .filter(|(r, _)| r.header("webhook-id") == Some(id))
                .count();
            assert_eq!(n, 3, "{id}: the duplicates carry the same webhook-id");
        }
        let e = s.notifier.endpoint(&ep.id).await.unwrap();
        assert_eq!((e.state.as_str(), e.failing_since), (health::HEALTHY, None));
        // The delivery log: two 503s then a 200, with response times.
        let d = s
            .store
            .notify()
            .deliveries(Some(&format!("webhook:{}", ep.id)), Some(&ids[0]), 0)
            .await
            .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].state.as_str(), d[0].attempts, d[0].last_status),
            (state::SUCCEEDED, 3, Some(200))
        );
        let log = s.store.notify().attempts(&d[0].id).await.unwrap();
        let statuses: Vec<Option<u16>> = log.iter().map(|a| a.status).collect();
        assert_eq!(statuses, vec![Some(503), Some(503), Some(200)]);
        s.place.cleanup().await;
    }
}

#[tokio::test]
async fn a_restart_in_the_middle_of_retries_loses_nothing() {
    for place in places("restart") {
        let s = Setup::new(place, config()).await;
        let rx = Receiver::start().await;
        s.endpoint(&rx.url, &[]).await;
        rx.answer(500, None);
        let first = s
            .event("usage.threshold_reached", "acme", threshold(80))
            .await;
        assert_eq!(s.notifier.tick().await.unwrap().attempted, 1);
        // An event written but not yet fanned out when the process stops.
        let second = s
            .event("usage.threshold_reached", "acme", threshold(95))
            .await;
        let Setup {
            place,
            store,
            clock,
            notifier,
        } = s;
        drop(notifier);
        drop(store);
        // A new process on the same database, the receiver back up.
        rx.answer(200, None);
        let store = place.open().await;
        let notifier = Notifier::new(store.clone(), Arc::new(clock.clone()), config()).unwrap();
        clock.advance(SignedDuration::from_secs(10));
        let t = notifier.tick().await.unwrap();
        assert_eq!((t.events, t.attempted, t.succeeded), (1, 2, 2));
        let mut got: Vec<String> = rx
            .accepted()
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        let mut want = vec![first.id, second.id];
        want.sort();
        assert_eq!(got, want);
        place.cleanup().await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_for_three_days_is_disabled_and_can_be_enabled_again() {
    for place in places("disable") {
        let s = Setup::new(place, config()).await;
        let rx = Receiver::start().await;
        let ep = s.endpoint(&rx.url, &[]).await;
        rx.answer(500, None);
        let started = s.clock.now_ts();
        let mut hours = 0;
        loop {
            s.event(
                "usage.threshold_reached",
                &format!("c{hours}"),
                threshold(80),
            )
            .await;
            s.notifier.tick().await.unwrap();
            if s.notifier.endpoint(&ep.id).await.unwrap().state == health::DISABLED {
                break;
            }
            assert!(hours < 80, "never disabled");
            s.advance(3600);
            hours += 1;
        }
        assert_eq!(hours, 72, "disabled after exactly 72 h of failure");
        let e = s.notifier.endpoint(&ep.id).await.unwrap();
        assert!(!e.enabled);
        assert_eq!(e.failing_since, Some(started));
        // What was still pending is canceled, not sent.
        let before = rx.all().len();
        s.advance(86_400);
        s.notifier.tick().await.unwrap();
        assert_eq!(rx.all().len(), before);
        let canceled = s.store.notify().deliveries(None, None, 0).await.unwrap();
        assert!(canceled.iter().any(|d| d.state == state::CANCELED
            && d.last_error.as_deref() == Some("not sent: the endpoint is disabled")));
        let e = s
            .notifier
            .update_endpoint(
                &ep.id,
                EndpointChange {
                    enabled: Some(true),
                    ..EndpointChange::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (e.enabled, e.state.as_str(), e.failing_since),
            (true, health::HEALTHY, None)
        );
        s.place.cleanup().await;
    }
}

#[tokio::test]
async fn a_delivery_that_gave_up_is_retried_by_hand_and_a_time_range_replayed() {
    for place in places("retry") {
        let cfg = NotifyConfig {
            retry_schedule_secs: vec![5, 30],
            ..config()
        };
        let s = Setup::new(place, cfg).await;
        let rx = Receiver::start().await;
        let ep = s.endpoint(&rx.url, &[]).await;
        rx.answer(500, None);
        let from = s.clock.now_ts();
        let ev = s
            .event("usage.limit_exceeded", "acme", threshold(100))
            .await;
        for wait in [0, 7, 37] {
            s.advance(wait);
            assert_eq!(s.notifier.tick().await.unwrap().attempted, 1);
        }
        let d = s
            .store
            .notify()
            .deliveries(None, Some(&ev.id), 0)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(
            (d.state.as_str(), d.attempts, d.next_attempt_at),
            (state::FAILED, 3, None)
        );
        rx.answer(200, None);
        let requeued = s.notifier.retry(&d.id).await.unwrap();
        assert_eq!(requeued.state, state::PENDING);
        assert_eq!(s.notifier.tick().await.unwrap().succeeded, 1);
        let log = s.store.notify().attempts(&d.id).await.unwrap();
        let lines: Vec<(Option<u16>, bool)> = log
            .iter()
            .map(|a| {
                (
                    a.status,
                    a.error.as_deref().is_some_and(|e| e.starts_with(REQUEUED)),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                (Some(500), false),
                (Some(500), false),
                (Some(500), false),
                (None, true),
                (Some(200), false)
            ]
        );
        // Replay the last minute: the event goes out again, with the same id.
        s.advance(1);
        let other = s
            .event("usage.threshold_reached", "acme", threshold(80))
            .await;
        s.notifier.tick().await.unwrap();
        assert_eq!(rx.accepted().len(), 2);
        let to = s.clock.now_ts() + SignedDuration::from_secs(1);
        let queued = s.notifier.replay(from, to, Some(&ep.id)).await.unwrap();
        assert_eq!(queued.len(), 2);
        assert_eq!(s.notifier.tick().await.unwrap().succeeded, 2);
        let ids: Vec<String> = rx
            .accepted()
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.iter().filter(|i| **i == ev.id).count(), 2);
        assert_eq!(ids.iter().filter(|i| **i == other.id).count(), 2);
        // A range the wrong way round names the field.
        let err = s.notifier.replay(to, from, None).await.err().unwrap();
        assert!(
            matches!(err, NotifyError::Invalid { field: "to", .. }),
            "{err}"
        );
        s.place.cleanup().await;
    }
}

#[tokio::test]
async fn after_a_secret_rotation_both_secrets_sign_until_the_grace_period_ends() {
    for place in places("rotate") {
        let s = Setup::new(place, config()).await;
        let rx = Receiver::start().await;
        let ep = s.endpoint(&rx.url, &[]).await;
        let old = ep.secrets[0].clone();
        let (_, new) = s.notifier.rotate_secret(&ep.id).await.unwrap();
        s.event("usage.threshold_reached", "acme", threshold(80))
            .await;
        s.notifier.tick().await.unwrap();
        let got = rx.accepted();
        assert_eq!(
            got[0]
                .header("webhook-signature")
                .unwrap()
                .split(' ')
                .count(),
            2
        );
        assert!(verify_with_standardwebhooks(&old, &got)[0].is_ok());
        assert!(verify_with_standardwebhooks(&new, &got)[0].is_ok());
        // 24 h later only the new secret signs (checked locally: the
        // reference verifier refuses a timestamp a day from real time).
        s.advance(24 * 3600);
        s.event("usage.threshold_reached", "acme", threshold(95))
            .await;
        s.notifier.tick().await.unwrap();
        let last = rx.accepted().pop().unwrap();
        let sig = last.header("webhook-signature").unwrap();
        let ts: i64 = last.header("webhook-timestamp").unwrap().parse().unwrap();
        let id = last.header("webhook-id").unwrap();
        assert_eq!(sig.split(' ').count(), 1);
        assert!(tollgate_notify::signing::verify(
            &new,
            id,
            ts,
            last.body.as_bytes(),
            sig
        ));
        assert!(!tollgate_notify::signing::verify(
            &old,
            id,
            ts,
            last.body.as_bytes(),
            sig
        ));
        s.place.cleanup().await;
    }
}

#[tokio::test]
async fn loopback_endpoints_are_refused_unless_allowed() {
    for place in places("ssrf") {
        let s = Setup::new(place, NotifyConfig::default()).await;
        let err = s
            .notifier
            .create_endpoint(NewEndpoint {
                url: "http://127.0.0.1:9/hook".into(),
                enabled: true,
                ..NewEndpoint::default()
            })
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, NotifyError::Invalid { field: "url", message } if message.contains("loopback")),
            "{err}"
        );
        // An endpoint created while allowed is refused at send time once not.
        let rx = Receiver::start().await;
        let allowed = Notifier::new(s.store.clone(), Arc::new(s.clock.clone()), config()).unwrap();
        allowed
            .create_endpoint(NewEndpoint {
                url: rx.url.clone(),
                enabled: true,
                ..NewEndpoint::default()
            })
            .await
            .unwrap();
        let ev = s
            .event("usage.threshold_reached", "acme", threshold(80))
            .await;
        let t = s.notifier.tick().await.unwrap();
        assert_eq!((t.attempted, t.succeeded), (1, 0));
        assert!(rx.all().is_empty());
        let d = s
            .store
            .notify()
            .deliveries(None, Some(&ev.id), 0)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert!(
            d.last_error
                .as_deref()
                .is_some_and(|e| e.contains("refused") && e.contains("loopback")),
            "{d:?}"
        );
        s.place.cleanup().await;
    }
}

#[tokio::test]
async fn alerts_are_emailed_to_the_customers_and_the_operators_recipients() {
    for place in places("email") {
        let sink = SmtpSink::start();
        let cfg = NotifyConfig {
            admin_emails: vec!["ops@tollgate.test".into()],
            smtp: Some(SmtpConfig {
                url: sink.url(),
                from: "Tollgate <alerts@tollgate.test>".into(),
            }),
            ..config()
        };
        let s = Setup::new(place, cfg).await;
        let now = s.clock.now_ts();
        s.store
            .insert_customer(&CustomerRecord {
                id: "acme".into(),
                name: Some("Acme".into()),
                email: Some("billing@acme.test".into()),
                currency: "USD".into(),
                time_zone: "UTC".into(),
                metadata: json!({"alert_emails": ["cto@acme.test", "ops@acme.test"]}),
                admin_bypass: false,
                created_at: now,
                updated_at: now,
                deleted_at: None,
            })
            .await
            .unwrap();
        s.event("usage.threshold_reached", "acme", threshold(95))
            .await;
        let t = s.notifier.tick().await.unwrap();
        assert_eq!((t.created, t.succeeded), (3, 3));
        let mails = sink.wait_for(3);
        let mut rcpt: Vec<String> = mails.iter().flat_map(|m| m.rcpt.clone()).collect();
        rcpt.sort();
        assert_eq!(
            rcpt,
            vec!["cto@acme.test", "ops@acme.test", "ops@tollgate.test"]
        );
        assert!(
            mails[0]
                .raw
                .contains("Subject: [Tollgate] acme has used 95 % of its api_calls limit"),
            "{}",
            mails[0].raw
        );
        let d = s
            .store
            .notify()
            .deliveries(Some("email:cto@acme.test"), None, 0)
            .await
            .unwrap();
        assert_eq!(
            (d[0].state.as_str(), d[0].last_status),
            (state::SUCCEEDED, Some(250))
        );
        drop(sink);
        s.place.cleanup().await;
    }
}

#[tokio::test]
async fn the_worker_loop_delivers_in_the_background_and_stops_on_shutdown() {
    let place = places("loop").remove(0);
    let s = Setup::new(place, config()).await;
    let rx = Receiver::start().await;
    s.endpoint(&rx.url, &[]).await;
    let notifier = Arc::new(s.notifier);
    let (tx, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(notifier.clone().run(shutdown));
    let ev = {
        let e = OutboxEvent {
            id: "evt_loop".into(),
            event_type: "usage.threshold_reached".into(),
            customer_id: Some("acme".into()),
            object_key: "customer:acme".into(),
            object_seq: 0,
            dedup_key: None,
            payload: threshold(80),
            created_at: s.clock.now_ts(),
            seq: 0,
        };
        s.store
            .notify()
            .insert_events(&[e])
            .await
            .unwrap()
            .pop()
            .unwrap()
    };
    let got = rx.wait_accepted(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("webhook-id"), Some(ev.id.as_str()));
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// `usage.daily_summary` is opt-in: it goes only to the endpoints naming it
/// (not to "every event" nor to `usage.*`), and is e-mailed only when
/// `email_event_types` names it; other events fan out as before.
#[tokio::test]
async fn daily_summaries_go_only_to_endpoints_and_email_lists_that_name_them() {
    for place in places("optin") {
        let smtp = Some(SmtpConfig {
            url: "smtp://127.0.0.1:2525".into(),
            from: "Tollgate <alerts@tollgate.test>".into(),
        });
        let cfg = NotifyConfig {
            admin_emails: vec!["ops@tollgate.test".into()],
            smtp: smtp.clone(),
            ..config()
        };
        let s = Setup::new(place, cfg).await;
        let all = s.endpoint("https://127.0.0.1:9/all", &[]).await;
        let usage = s.endpoint("https://127.0.0.1:9/usage", &["usage.*"]).await;
        let daily = s
            .endpoint("https://127.0.0.1:9/daily", &["usage.daily_summary"])
            .await;
        let summary = s
            .event(
                "usage.daily_summary",
                "acme",
                json!({"customer": "acme", "day": "2026-11-22", "features": []}),
            )
            .await;
        let alert = s
            .event("usage.threshold_reached", "acme", threshold(80))
            .await;
        let t = s.notifier.fan_out().await.unwrap();
        assert_eq!((t.events, t.created), (2, 4), "{}", s.place.name());
        let targets = |event: &str| {
            let store = s.store.clone();
            let event = event.to_string();
            async move {
                let mut t: Vec<String> = store
                    .notify()
                    .deliveries(None, Some(&event), 0)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|d| d.target)
                    .collect();
                t.sort();
                t
            }
        };
        assert_eq!(
            targets(&summary.id).await,
            [format!("webhook:{}", daily.id)]
        );
        let mut expected = vec![
            format!("webhook:{}", all.id),
            format!("webhook:{}", usage.id),
            "email:ops@tollgate.test".to_string(),
        ];
        expected.sort();
        assert_eq!(targets(&alert.id).await, expected);

        // E-mail: only a list naming the type takes it.
        let listing = |types: &[&str]| NotifyConfig {
            email_event_types: types.iter().map(|t| t.to_string()).collect(),
            smtp: smtp.clone(),
            ..config()
        };
        assert!(!listing(&[]).emails("usage.daily_summary"));
        assert!(!listing(&["usage.*"]).emails("usage.daily_summary"));
        assert!(listing(&["usage.*", "usage.daily_summary"]).emails("usage.daily_summary"));
        assert!(listing(&[]).emails("usage.denied"));
        assert!(!config().emails("usage.denied"), "no SMTP relay, no e-mail");
        s.place.cleanup().await;
    }
}
