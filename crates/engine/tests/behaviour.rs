//! The engine's behaviour, on real SQLite files (and PostgreSQL when
//! TOLLGATE_TEST_POSTGRES_URL is set), driven by a TestClock.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use jiff::SignedDuration;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_engine::{
    CommitRequest, DenyReason, EngineError, IngestEvent, IngestResult, NewCustomer, NewGrant,
    SubscribeOptions, TestClock, UsageRequest,
};
use tollgate_store::{ReservationState, SubscriptionStatus, UsageQuery, UsageRecord};

fn req(c: &str, f: &str, q: Decimal) -> UsageRequest {
    UsageRequest::new(c, f, q)
}

async fn ledger(
    engine_store: &Arc<dyn tollgate_store::Store>,
    c: &str,
    f: &str,
) -> Vec<UsageRecord> {
    engine_store
        .usage(&UsageQuery {
            customer_id: Some(c.into()),
            feature: Some(f.into()),
            limit: 100_000,
            ..UsageQuery::default()
        })
        .await
        .unwrap()
}

fn total(recs: &[UsageRecord]) -> Decimal {
    recs.iter().map(|r| r.record.quantity).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_no_overshoot_64_concurrent_tasks() {
    for b in backends("overshoot") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await; // api_calls: hard 100
        let answers = race_64(&engine, "acme").await;
        for d in answers.iter().filter(|d| !d.allowed) {
            assert_eq!(d.reason, Some(DenyReason::LimitReached));
            assert_eq!(d.upgrade_to.as_deref(), Some("pro"));
        }
        let allowed = allowed_total(&answers);
        // 64 × 5 attempts ask for 384 units in all; exactly the limit fits.
        assert_eq!(allowed, dec!(100), "{}", b.name);
        let store = b.store().await;
        let recs = ledger(&store, "acme", "api_calls").await;
        assert_eq!(total(&recs), dec!(100), "{}", b.name);
        let v = engine.verify("acme", "api_calls").await.unwrap();
        assert!(v.consistent, "{v:?}");
        assert_eq!(v.memory["plan"], dec!(100));
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_rollover_at_window_boundary() {
    for b in backends("rollover") {
        // Day reset (minutes: 10.5 per day on free), UTC customer.
        let clock = TestClock::new(ts("2025-01-15T23:59:00Z"));
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await;
        let d = engine
            .consume(req("acme", "minutes", dec!(10.5)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, Some(dec!(0)));
        assert_eq!(d.resets_at, Some(ts("2025-01-16T00:00:00Z")));
        clock.set(ts("2025-01-15T23:59:59.999Z"));
        let d = engine
            .consume(req("acme", "minutes", dec!(0.25)))
            .await
            .unwrap();
        assert!(!d.allowed);
        clock.set(ts("2025-01-16T00:00:00Z"));
        let d = engine
            .consume(req("acme", "minutes", dec!(0.25)))
            .await
            .unwrap();
        assert!(d.allowed, "a new day's window starts at 0");
        assert_eq!(d.used, dec!(0.25));
        assert_eq!(d.remaining, Some(dec!(10.25)));
        assert_eq!(d.resets_at, Some(ts("2025-01-17T00:00:00Z")));

        // Billing period (anniversary, anchored 2025-01-15T23:59Z): api_calls.
        let d = engine
            .consume(req("acme", "api_calls", dec!(100)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.resets_at, Some(ts("2025-02-15T23:59:00Z")));
        clock.set(ts("2025-02-15T23:58:59Z"));
        assert!(
            !engine
                .consume(req("acme", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        clock.set(ts("2025-02-15T23:59:00Z"));
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.used, dec!(1));
        assert!(engine.verify("acme", "api_calls").await.unwrap().consistent);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_grant_burn_order() {
    for b in backends("grants") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await;
        let grant = |kind: &str, q: Decimal, priority: i32, expires: Option<&str>| NewGrant {
            customer: "acme".into(),
            feature: "api_calls".into(),
            kind: kind.into(),
            quantity: q,
            priority,
            effective_at: None,
            expires_at: expires.map(ts),
            metadata: serde_json::Value::Null,
        };
        let a = engine
            .add_grant(grant("top_up", dec!(10), 1, None))
            .await
            .unwrap();
        let bb = engine
            .add_grant(grant(
                "promotional",
                dec!(10),
                1,
                Some("2025-01-25T00:00:00Z"),
            ))
            .await
            .unwrap();
        let c = engine
            .add_grant(grant("top_up", dec!(5), 0, None))
            .await
            .unwrap();
        let d = engine
            .consume(req("acme", "api_calls", dec!(100)))
            .await
            .unwrap();
        assert!(d.allowed);
        // Plan allowance gone; grants hold 25.
        assert_eq!(d.remaining, Some(dec!(25)));
        let d = engine
            .consume(req("acme", "api_calls", dec!(12)))
            .await
            .unwrap();
        assert!(d.allowed);
        let d = engine
            .consume(req("acme", "api_calls", dec!(10)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, Some(dec!(3)));
        // 4 asked, 3 left: all-or-nothing denial.
        let d = engine
            .consume(req("acme", "api_calls", dec!(4)))
            .await
            .unwrap();
        assert!(!d.allowed);
        engine.flush().await.unwrap();
        let store = b.store().await;
        let recs = ledger(&store, "acme", "api_calls").await;
        let allocs: Vec<BTreeMap<String, Decimal>> =
            recs.iter().map(|r| r.record.allocation.clone()).collect();
        assert_eq!(allocs[0], BTreeMap::from([("plan".to_string(), dec!(100))]));
        // priority 0 first (c: 5), then priority 1 with the soonest expiry (b: 7 of 10)
        assert_eq!(
            allocs[1],
            BTreeMap::from([(c.id.clone(), dec!(5)), (bb.id.clone(), dec!(7))])
        );
        // then b's last 3, then the grant without expiry (a: 7 of 10)
        assert_eq!(
            allocs[2],
            BTreeMap::from([(bb.id.clone(), dec!(3)), (a.id.clone(), dec!(7))])
        );
        let left: BTreeMap<String, Decimal> = engine
            .grants("acme")
            .unwrap()
            .into_iter()
            .map(|(g, r)| (g.id, r))
            .collect();
        assert_eq!(left[&a.id], dec!(3));
        assert_eq!(left[&bb.id], dec!(0));
        // Restart: grant draws are rebuilt from the ledger.
        engine.close().await.unwrap();
        let engine = open(&b, &clock).await;
        let left: BTreeMap<String, Decimal> = engine
            .grants("acme")
            .unwrap()
            .into_iter()
            .map(|(g, r)| (g.id, r))
            .collect();
        assert_eq!(left[&a.id], dec!(3));
        assert_eq!(left[&c.id], dec!(0));
        assert!(engine.verify("acme", "api_calls").await.unwrap().consistent);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_emergency_once_per_window() {
    for b in backends("emergency") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "pro").await; // 1000 hard + 100 emergency
        assert!(
            engine
                .consume(req("acme", "api_calls", dec!(1000)))
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !engine
                .consume(req("acme", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        let g = engine.draw_emergency("acme", "api_calls").await.unwrap();
        assert_eq!(g.kind, "emergency");
        assert_eq!(g.quantity, dec!(100));
        assert_eq!(g.expires_at, Some(ts("2025-02-15T12:00:00Z")));
        let d = engine
            .consume(req("acme", "api_calls", dec!(100)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert!(
            !engine
                .consume(req("acme", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        match engine.draw_emergency("acme", "api_calls").await {
            Err(EngineError::EmergencyAlreadyDrawn { resets_at, .. }) => {
                assert_eq!(resets_at, ts("2025-02-15T12:00:00Z"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Also refused after a restart (the grant is persisted).
        engine.close().await.unwrap();
        let engine = open(&b, &clock).await;
        assert!(matches!(
            engine.draw_emergency("acme", "api_calls").await,
            Err(EngineError::EmergencyAlreadyDrawn { .. })
        ));
        // Next window: drawable again, and the old grant has expired.
        clock.set(ts("2025-02-15T12:00:00Z"));
        let g2 = engine.draw_emergency("acme", "api_calls").await.unwrap();
        assert_eq!(g2.expires_at, Some(ts("2025-03-15T12:00:00Z")));
        // Free has no emergency allowance.
        customer(&engine, "small", "free").await;
        assert!(matches!(
            engine.draw_emergency("small", "api_calls").await,
            Err(EngineError::NoEmergencyAllowance { .. })
        ));
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_reservation_hold_commit_release_expire() {
    for b in backends("reservations") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await; // hard 100
        let r = engine
            .reserve(
                req("acme", "api_calls", dec!(60)),
                Some(SignedDuration::from_secs(30)),
            )
            .await
            .unwrap();
        assert!(r.allowed);
        assert_eq!(r.remaining, Some(dec!(40)));
        let rid = r.reservation_id.clone().unwrap();
        assert!(
            !engine
                .consume(req("acme", "api_calls", dec!(50)))
                .await
                .unwrap()
                .allowed
        );
        // Abandoned: expires by itself after 30 s (lazily on the next access).
        clock.advance(SignedDuration::from_secs(30));
        assert!(
            engine
                .consume(req("acme", "api_calls", dec!(50)))
                .await
                .unwrap()
                .allowed
        );
        match engine.commit(CommitRequest::new(&rid, dec!(10))).await {
            Err(EngineError::ReservationClosed { state, .. }) => assert_eq!(state, "expired"),
            other => panic!("expected expired, got {other:?}"),
        }
        engine.flush().await.unwrap();
        let store = b.store().await;
        assert_eq!(
            store.get_reservation(&rid).await.unwrap().unwrap().state,
            ReservationState::Expired
        );

        // Commit less than reserved: the rest is freed. used = 50.
        let r = engine
            .reserve(req("acme", "api_calls", dec!(30)), None)
            .await
            .unwrap();
        let d = engine
            .commit(CommitRequest::new(
                r.reservation_id.clone().unwrap(),
                dec!(20),
            ))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.used, dec!(70));
        assert_eq!(d.remaining, Some(dec!(30)));
        // Committing again replays the first answer.
        let again = engine
            .commit(CommitRequest::new(
                r.reservation_id.clone().unwrap(),
                dec!(20),
            ))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.used, dec!(70));

        // Commit more than reserved: the extra is checked like a consume.
        let r = engine
            .reserve(req("acme", "api_calls", dec!(20)), None)
            .await
            .unwrap();
        let rid = r.reservation_id.clone().unwrap();
        let d = engine
            .commit(CommitRequest::new(&rid, dec!(35)))
            .await
            .unwrap();
        assert!(!d.allowed, "70 + 35 > 100 on a hard limit");
        assert_eq!(d.reason, Some(DenyReason::LimitReached));
        // Denied commit leaves the reservation open; allow_overage records the extra.
        let d = engine
            .commit(CommitRequest::new(&rid, dec!(35)).allow_overage())
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.overage, dec!(5));
        assert_eq!(d.used, dec!(105));

        // Release frees the hold and records nothing.
        clock.set(ts("2025-02-15T12:00:00Z")); // new window
        let r = engine
            .reserve(req("acme", "api_calls", dec!(90)), None)
            .await
            .unwrap();
        assert_eq!(r.remaining, Some(dec!(10)));
        engine
            .release(r.reservation_id.as_deref().unwrap())
            .await
            .unwrap();
        let c = engine
            .check(req("acme", "api_calls", dec!(100)))
            .await
            .unwrap();
        assert!(c.allowed);
        assert!(matches!(
            engine.release(r.reservation_id.as_deref().unwrap()).await,
            Err(EngineError::ReservationClosed { .. })
        ));

        // A reservation survives a restart (persisted) and still holds.
        let r = engine
            .reserve(req("acme", "api_calls", dec!(70)), None)
            .await
            .unwrap();
        engine.close().await.unwrap();
        let engine = open(&b, &clock).await;
        assert!(
            !engine
                .consume(req("acme", "api_calls", dec!(31)))
                .await
                .unwrap()
                .allowed
        );
        let d = engine
            .commit(CommitRequest::new(
                r.reservation_id.clone().unwrap(),
                dec!(70),
            ))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.used, dec!(70));
        // The sweeper expires abandoned reservations without any access.
        let r = engine
            .reserve(
                req("acme", "api_calls", dec!(5)),
                Some(SignedDuration::from_secs(10)),
            )
            .await
            .unwrap();
        clock.advance(SignedDuration::from_secs(11));
        engine.sweep_now();
        engine.flush().await.unwrap();
        let store = b.store().await;
        assert_eq!(
            store
                .get_reservation(r.reservation_id.as_deref().unwrap())
                .await
                .unwrap()
                .unwrap()
                .state,
            ReservationState::Expired
        );
        assert!(engine.verify("acme", "api_calls").await.unwrap().consistent);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_lease_expiry() {
    for b in backends("leases") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await; // 1 job at once, ttl 30 s
        let l = engine.acquire("acme", "jobs").unwrap();
        assert!(l.allowed);
        assert_eq!(l.expires_at, Some(ts("2025-01-15T12:00:30Z")));
        let id = l.lease_id.unwrap();
        let d = engine.acquire("acme", "jobs").unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reason, Some(DenyReason::ConcurrencyLimitReached));
        assert_eq!(d.upgrade_to.as_deref(), Some("pro"));
        assert_eq!(d.retry_at, Some(ts("2025-01-15T12:00:30Z")));
        clock.advance(SignedDuration::from_secs(29));
        assert_eq!(engine.heartbeat(&id).unwrap(), ts("2025-01-15T12:00:59Z"));
        clock.advance(SignedDuration::from_secs(29));
        assert!(!engine.acquire("acme", "jobs").unwrap().allowed);
        clock.advance(SignedDuration::from_secs(1)); // 12:00:59: expired
        let l2 = engine.acquire("acme", "jobs").unwrap();
        assert!(l2.allowed);
        assert!(matches!(
            engine.heartbeat(&id),
            Err(EngineError::LeaseNotFound(_))
        ));
        engine
            .release_lease(l2.lease_id.as_deref().unwrap())
            .unwrap();
        assert_eq!(engine.active_leases("acme", "jobs").unwrap(), 0);
        // Leases are memory only: gone after a restart.
        let l3 = engine.acquire("acme", "jobs").unwrap();
        engine.close().await.unwrap();
        let engine = open(&b, &clock).await;
        assert!(matches!(
            engine.heartbeat(l3.lease_id.as_deref().unwrap()),
            Err(EngineError::LeaseNotFound(_))
        ));
        assert!(engine.acquire("acme", "jobs").unwrap().allowed);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_rate_window_exact_edges() {
    for b in backends("rates") {
        let clock = TestClock::new(ts("2025-01-15T12:00:00Z"));
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await; // 1 per minute
        assert!(
            engine
                .hit(req("acme", "snapshots", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        clock.set(ts("2025-01-15T12:00:59.999Z"));
        let d = engine.hit(req("acme", "snapshots", dec!(1))).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reason, Some(DenyReason::RateLimited));
        assert_eq!(d.resets_at, Some(ts("2025-01-15T12:01:00Z")));
        clock.set(ts("2025-01-15T12:01:00Z"));
        assert!(
            engine
                .hit(req("acme", "snapshots", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        // Restart: the hit at 12:01:00 is rebuilt from the ledger.
        engine.close().await.unwrap();
        clock.set(ts("2025-01-15T12:01:30Z"));
        let engine = open(&b, &clock).await;
        assert!(
            !engine
                .hit(req("acme", "snapshots", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        clock.set(ts("2025-01-15T12:02:00Z"));
        assert!(
            engine
                .hit(req("acme", "snapshots", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_soft_limit_overage() {
    for b in backends("soft") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "pro").await; // minutes: soft 100/day
        let d = engine
            .consume(req("acme", "minutes", dec!(90)))
            .await
            .unwrap();
        assert!(d.allowed && !d.over_limit);
        let d = engine
            .consume(req("acme", "minutes", dec!(20.5)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert!(d.over_limit);
        assert_eq!(d.overage, dec!(10.5));
        assert_eq!(d.used, dec!(110.5));
        assert_eq!(d.remaining, Some(dec!(0)));
        engine.flush().await.unwrap();
        let store = b.store().await;
        let recs = ledger(&store, "acme", "minutes").await;
        assert_eq!(
            recs[1].record.allocation,
            BTreeMap::from([("plan".into(), dec!(10)), ("overage".into(), dec!(10.5))])
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_admin_bypass_records_usage() {
    for b in backends("bypass") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "admin", "free").await;
        assert!(
            engine
                .consume(req("admin", "api_calls", dec!(100)))
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !engine
                .consume(req("admin", "api_calls", dec!(5)))
                .await
                .unwrap()
                .allowed
        );
        engine.set_admin_bypass("admin", true).await.unwrap();
        let d = engine
            .consume(req("admin", "api_calls", dec!(5)))
            .await
            .unwrap();
        assert!(d.allowed && d.bypassed);
        assert_eq!(d.used, dec!(105));
        assert!(engine.flag("admin", "git_export").unwrap());
        assert!(
            engine
                .cap_check("admin", "file_mb", dec!(900))
                .unwrap()
                .allowed
        );
        engine.flush().await.unwrap();
        let store = b.store().await;
        let recs = ledger(&store, "admin", "api_calls").await;
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[1].record.allocation,
            BTreeMap::from([("bypass".into(), dec!(5))])
        );
        assert!(
            engine
                .verify("admin", "api_calls")
                .await
                .unwrap()
                .consistent
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_subscription_inactive_and_trial_expired() {
    for b in backends("subscription") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        engine
            .create_customer(NewCustomer::new("acme"))
            .await
            .unwrap();
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert_eq!(d.reason, Some(DenyReason::NoSubscription));
        engine
            .subscribe(
                "acme",
                "pro",
                SubscribeOptions {
                    status: Some(SubscriptionStatus::Trialing),
                    trial_ends_at: Some(ts("2025-01-29T12:00:00Z")),
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(
            engine
                .consume(req("acme", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        clock.set(ts("2025-01-29T12:00:00Z"));
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reason, Some(DenyReason::TrialExpired));
        assert_eq!(d.upgrade_to.as_deref(), Some("business"));
        engine
            .set_subscription_status("acme", SubscriptionStatus::Active)
            .await
            .unwrap();
        assert!(
            engine
                .consume(req("acme", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        engine
            .set_subscription_status("acme", SubscriptionStatus::PastDue)
            .await
            .unwrap();
        assert!(
            engine
                .consume(req("acme", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed,
            "past due keeps access"
        );
        engine.cancel("acme").await.unwrap();
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert_eq!(d.reason, Some(DenyReason::SubscriptionInactive));
        let s = engine.entitlements("acme").unwrap();
        assert_eq!(s.blocked, Some(DenyReason::SubscriptionInactive));
        assert!(s.features.iter().all(|f| !f.access));
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_idempotent_replay() {
    for b in backends("idempotency") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await;
        let first = engine
            .consume(req("acme", "api_calls", dec!(7)).key("order-1"))
            .await
            .unwrap();
        assert!(first.allowed && !first.replayed);
        engine
            .consume(req("acme", "api_calls", dec!(3)))
            .await
            .unwrap();
        let again = engine
            .consume(req("acme", "api_calls", dec!(7)).key("order-1"))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(
            again.used,
            dec!(7),
            "the first answer, not the current state"
        );
        // 16 concurrent duplicates of a new key count once.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                e.consume(req("acme", "api_calls", dec!(2)).key("order-2"))
                    .await
                    .unwrap()
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            let d = t.await.unwrap();
            assert!(d.allowed);
            assert_eq!(d.used, dec!(12));
            fresh += usize::from(!d.replayed);
        }
        assert_eq!(fresh, 1);
        // A denied request records nothing: its retry is decided again.
        let d = engine
            .consume(req("acme", "api_calls", dec!(95)).key("big"))
            .await
            .unwrap();
        assert!(!d.allowed);
        // The same key for another feature is an error.
        assert!(matches!(
            engine
                .hit(req("acme", "snapshots", dec!(1)).key("order-1"))
                .await,
            Err(EngineError::IdempotencyKeyReused { .. })
        ));
        engine.flush().await.unwrap();
        let store = b.store().await;
        let recs = ledger(&store, "acme", "api_calls").await;
        assert_eq!(total(&recs), dec!(12));
        // After a restart the window is rebuilt from the ledger.
        engine.close().await.unwrap();
        clock.advance(SignedDuration::from_hours(23));
        let engine = open(&b, &clock).await;
        let again = engine
            .consume(req("acme", "api_calls", dec!(7)).key("order-1"))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.used, dec!(7));
        // ... and a denied key is decided again: now it fits (88 left).
        let d = engine
            .consume(req("acme", "api_calls", dec!(88)).key("big"))
            .await
            .unwrap();
        assert!(d.allowed && !d.replayed);
        // After the window (24 h by recorded time) a key counts again (documented).
        clock.advance(SignedDuration::from_hours(2));
        engine.sweep_now();
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)).key("order-2"))
            .await
            .unwrap();
        assert!(!d.replayed);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_restart_rebuilds_counters() {
    for b in backends("restart") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        for i in 0..20 {
            customer(
                &engine,
                &format!("c{i}"),
                if i % 2 == 0 { "free" } else { "pro" },
            )
            .await;
        }
        for i in 0..20 {
            let c = format!("c{i}");
            engine
                .consume(req(&c, "api_calls", Decimal::from(i + 1)))
                .await
                .unwrap();
            engine
                .consume(req(&c, "minutes", dec!(1.25)))
                .await
                .unwrap();
            engine.gauge_set(req(&c, "seats", dec!(2))).await.unwrap();
        }
        let saved = engine.snapshot_now().await.unwrap();
        assert!(saved >= 40, "{saved} counters");
        // After the snapshot: more usage, then a crash (no graceful close).
        for i in 0..20 {
            let c = format!("c{i}");
            engine
                .consume(req(&c, "api_calls", dec!(0.5)))
                .await
                .unwrap();
            engine
                .gauge_decrement(req(&c, "seats", dec!(1)))
                .await
                .unwrap();
        }
        drop(engine);
        let store = b.store().await;
        let (engine, stats) = tollgate_engine::Engine::open_with_stats(
            store,
            catalog(),
            Arc::new(clock.clone()),
            config(),
        )
        .await
        .unwrap();
        assert!(stats.snapshot_seq > 0);
        assert_eq!(
            stats.replayed_records, 40,
            "only the ledger after the snapshot is replayed"
        );
        for i in 0..20 {
            let c = format!("c{i}");
            let s = engine.entitlements(&c).unwrap();
            let api = s
                .features
                .iter()
                .find(|f| f.feature == "api_calls")
                .unwrap();
            assert_eq!(api.used, Some(Decimal::from(i + 1) + dec!(0.5)));
            assert_eq!(engine.gauge_level(&c, "seats").unwrap(), dec!(1));
        }
        let reports = engine.verify_all().await.unwrap();
        assert!(reports.len() >= 60);
        assert!(reports.iter().all(|r| r.consistent), "{reports:?}");
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_bad_input_changes_nothing() {
    for b in backends("bad_input") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await;
        customer(&engine, "gone", "free").await;
        engine
            .consume(req("acme", "api_calls", dec!(10)))
            .await
            .unwrap();
        engine.delete_customer("gone").await.unwrap();
        engine.flush().await.unwrap();
        let store = b.store().await;
        let seq_before = store.max_seq().await.unwrap();
        let used = |e: &tollgate_engine::Engine| {
            e.entitlements("acme")
                .unwrap()
                .features
                .into_iter()
                .find(|f| f.feature == "api_calls")
                .unwrap()
                .used
        };
        let before = used(&engine);
        let cases: Vec<(UsageRequest, &str)> = vec![
            (req("nobody", "api_calls", dec!(1)), "unknown_customer"),
            (req("gone", "api_calls", dec!(1)), "customer_deleted"),
            (req("acme", "nope", dec!(1)), "unknown_feature"),
            (req("acme", "api_calls", dec!(0)), "invalid_quantity"),
            (req("acme", "api_calls", dec!(-1)), "invalid_quantity"),
            (
                req("acme", "api_calls", dec!(1)).key(""),
                "invalid_idempotency_key",
            ),
            (
                req("acme", "api_calls", dec!(1)).key("k".repeat(256)),
                "invalid_idempotency_key",
            ),
            (
                req("acme", "api_calls", dec!(1)).key("a\tb"),
                "invalid_idempotency_key",
            ),
            (req("acme", "seats", dec!(1)), "wrong_feature_kind"),
        ];
        for (r, code) in cases {
            let e = engine.consume(r.clone()).await.unwrap_err();
            assert_eq!(e.code(), code, "{r:?}: {e}");
        }
        assert_eq!(
            engine
                .gauge_increment(req("acme", "api_calls", dec!(1)))
                .await
                .unwrap_err()
                .code(),
            "wrong_feature_kind"
        );
        assert_eq!(
            engine
                .hit(req("acme", "seats", dec!(1)))
                .await
                .unwrap_err()
                .code(),
            "wrong_feature_kind"
        );
        assert_eq!(
            engine
                .gauge_set(req("acme", "seats", dec!(-2)))
                .await
                .unwrap_err()
                .code(),
            "invalid_quantity"
        );
        assert_eq!(
            engine.acquire("acme", "api_calls").unwrap_err().code(),
            "wrong_feature_kind"
        );
        assert_eq!(
            engine.heartbeat("lse_nope").unwrap_err().code(),
            "lease_not_found"
        );
        assert_eq!(
            engine
                .commit(CommitRequest::new("res_nope", dec!(1)))
                .await
                .unwrap_err()
                .code(),
            "reservation_not_found"
        );
        assert_eq!(
            engine
                .create_customer(NewCustomer::new("acme"))
                .await
                .unwrap_err()
                .code(),
            "customer_exists"
        );
        engine.flush().await.unwrap();
        assert_eq!(
            store.max_seq().await.unwrap(),
            seq_before,
            "nothing was written"
        );
        assert_eq!(used(&engine), before, "no counter moved");
        assert_eq!(engine.gauge_level("acme", "seats").unwrap(), dec!(0));
        // A restored customer is served again; its usage stayed.
        engine.restore_customer("gone").await.unwrap();
        assert!(
            engine
                .consume(req("gone", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_gauge_limits() {
    for b in backends("gauges") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await; // seats 2
        assert!(
            engine
                .gauge_set(req("acme", "seats", dec!(2)))
                .await
                .unwrap()
                .allowed
        );
        let d = engine
            .gauge_increment(req("acme", "seats", dec!(1)))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reason, Some(DenyReason::LimitReached));
        assert_eq!(d.upgrade_to.as_deref(), Some("pro"));
        assert_eq!(d.used, dec!(2));
        let d = engine
            .gauge_decrement(req("acme", "seats", dec!(5)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.used, dec!(0), "never below 0");
        assert!(
            engine
                .gauge_increment(req("acme", "seats", dec!(1.5)))
                .await
                .unwrap()
                .allowed
        );
        engine.close().await.unwrap();
        let engine = open(&b, &clock).await;
        assert_eq!(engine.gauge_level("acme", "seats").unwrap(), dec!(1.5));
        assert!(engine.verify("acme", "seats").await.unwrap().consistent);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_caps_flags_values_overrides() {
    for b in backends("caps_flags") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "free1", "free").await;
        customer(&engine, "pro1", "pro").await;
        let c = engine.cap_check("free1", "file_mb", dec!(60)).unwrap();
        assert!(!c.allowed);
        assert_eq!(c.max, Some(dec!(50)));
        assert_eq!(c.reason, Some(DenyReason::AboveCap));
        assert_eq!(c.upgrade_to.as_deref(), Some("pro"));
        assert!(
            engine
                .cap_check("free1", "file_mb", dec!(50))
                .unwrap()
                .allowed
        );
        assert!(!engine.flag("free1", "git_export").unwrap());
        assert!(engine.flag("pro1", "git_export").unwrap());
        assert!(
            !engine
                .value_contains("free1", "export_formats", "srt")
                .unwrap()
        );
        assert!(
            engine
                .value_contains("pro1", "export_formats", "srt")
                .unwrap()
        );
        // An override of one feature for one customer.
        engine
            .set_override(
                "free1",
                "git_export",
                &tollgate_core::catalog::Entitlement::Flag { enabled: true },
            )
            .await
            .unwrap();
        engine
            .set_override(
                "free1",
                "api_calls",
                &serde_json::from_value(serde_json::json!({
                    "kind": "metered", "limit": "150", "enforcement": "hard", "overage": false,
                    "reset": null, "emergency_allowance": null, "emergency_unit_price": null,
                    "alert_thresholds": null
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        assert!(engine.flag("free1", "git_export").unwrap());
        assert!(
            engine
                .consume(req("free1", "api_calls", dec!(150)))
                .await
                .unwrap()
                .allowed
        );
        let s = engine.entitlements("free1").unwrap();
        let api = s
            .features
            .iter()
            .find(|f| f.feature == "api_calls")
            .unwrap();
        assert!(api.overridden);
        assert_eq!(api.limit, Some(dec!(150)));
        // Overrides survive a restart.
        engine.close().await.unwrap();
        let engine = open(&b, &clock).await;
        assert!(engine.flag("free1", "git_export").unwrap());
        assert!(
            !engine
                .consume(req("free1", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        engine.remove_override("free1", "api_calls").await.unwrap();
        assert!(
            !engine
                .check(req("free1", "api_calls", dec!(1)))
                .await
                .unwrap()
                .allowed
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_ingest_results() {
    for b in backends("ingest") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await; // anchored at t0: window starts at t0
        engine
            .create_customer(NewCustomer::new("gone"))
            .await
            .unwrap();
        engine.delete_customer("gone").await.unwrap();
        let ev = |c: &str, f: &str, q: Decimal, at: &str, key: Option<&str>| IngestEvent {
            customer: c.into(),
            feature: f.into(),
            quantity: q,
            timestamp: ts(at),
            idempotency_key: key.map(String::from),
            properties: BTreeMap::new(),
            billable: true,
        };
        let results = engine
            .ingest(vec![
                ev(
                    "acme",
                    "api_calls",
                    dec!(60),
                    "2025-01-15T12:00:00Z",
                    Some("e1"),
                ),
                ev(
                    "acme",
                    "api_calls",
                    dec!(60),
                    "2025-01-15T11:59:00Z",
                    Some("e2"),
                ),
                ev(
                    "acme",
                    "api_calls",
                    dec!(1),
                    "2025-01-15T12:00:00Z",
                    Some("e1"),
                ),
                ev(
                    "acme",
                    "api_calls",
                    dec!(50),
                    "2025-01-15T12:03:00Z",
                    Some("e3"),
                ),
                ev("acme", "api_calls", dec!(1), "2025-01-13T11:59:59Z", None),
                ev("acme", "api_calls", dec!(1), "2025-01-15T12:05:01Z", None),
                ev("nobody", "api_calls", dec!(1), "2025-01-15T12:00:00Z", None),
                ev("gone", "api_calls", dec!(1), "2025-01-15T12:00:00Z", None),
                ev("acme", "seats", dec!(1), "2025-01-15T12:00:00Z", None),
                ev("acme", "api_calls", dec!(0), "2025-01-15T12:00:00Z", None),
            ])
            .await
            .unwrap();
        use IngestResult::*;
        let rej = |r: &str| Rejected { reason: r.into() };
        assert_eq!(
            results,
            vec![
                Accepted {
                    counted: true,
                    over_limit: false
                },
                // before the subscription's first window: only in the ledger
                Accepted {
                    counted: false,
                    over_limit: false
                },
                Duplicate,
                // 60 + 50 > 100 on a hard limit: accepted and flagged
                Accepted {
                    counted: true,
                    over_limit: true
                },
                rej("too_old"),
                rej("in_the_future"),
                rej("unknown_customer"),
                rej("customer_deleted"),
                rej("wrong_feature_kind"),
                rej("invalid_quantity"),
            ]
        );
        // Counted usage is 110 (above the hard limit); consumes are denied.
        let d = engine
            .check(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.used, dec!(110));
        // A retried batch is all duplicates.
        let again = engine
            .ingest(vec![ev(
                "acme",
                "api_calls",
                dec!(60),
                "2025-01-15T12:00:00Z",
                Some("e1"),
            )])
            .await
            .unwrap();
        assert_eq!(again, vec![Duplicate]);
        assert!(engine.verify("acme", "api_calls").await.unwrap().consistent);
        let store = b.store().await;
        assert_eq!(total(&ledger(&store, "acme", "api_calls").await), dec!(170));
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_plan_versions_pinned() {
    for b in backends("versions") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        assert_eq!(engine.latest_version("free"), Some(1));
        customer(&engine, "old", "free").await;
        engine.close().await.unwrap();
        // The free plan's api_calls limit changes from 100 to 200.
        let text = CATALOG.replacen("api_calls = 100\n", "api_calls = 200\n", 1);
        let changed = tollgate_core::catalog::load_catalog("t", &text).unwrap();
        let engine = tollgate_engine::Engine::open(
            b.store().await,
            changed,
            Arc::new(clock.clone()),
            config(),
        )
        .await
        .unwrap();
        assert_eq!(engine.plan_versions("free"), vec![1, 2]);
        assert_eq!(engine.latest_version("pro"), Some(1));
        customer(&engine, "new", "free").await;
        assert_eq!(engine.subscription("new").unwrap().unwrap().plan_version, 2);
        assert_eq!(engine.subscription("old").unwrap().unwrap().plan_version, 1);
        assert!(
            !engine
                .check(req("old", "api_calls", dec!(150)))
                .await
                .unwrap()
                .allowed
        );
        assert!(
            engine
                .check(req("new", "api_calls", dec!(150)))
                .await
                .unwrap()
                .allowed
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_entitlements_summary() {
    for b in backends("summary") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "pro").await;
        engine
            .consume(req("acme", "api_calls", dec!(250)))
            .await
            .unwrap();
        engine
            .gauge_set(req("acme", "seats", dec!(3)))
            .await
            .unwrap();
        engine.acquire("acme", "jobs").unwrap();
        engine
            .add_grant(NewGrant {
                customer: "acme".into(),
                feature: "api_calls".into(),
                kind: "top_up".into(),
                quantity: dec!(50),
                priority: 0,
                effective_at: None,
                expires_at: None,
                metadata: serde_json::Value::Null,
            })
            .await
            .unwrap();
        let s = engine.entitlements("acme").unwrap();
        assert_eq!(s.plan_key.as_deref(), Some("pro"));
        assert_eq!(s.period_start, Some(ts("2025-01-15T12:00:00Z")));
        assert_eq!(s.period_end, Some(ts("2025-02-15T12:00:00Z")));
        assert_eq!(s.features.len(), 8);
        let f = |k: &str| s.features.iter().find(|f| f.feature == k).unwrap().clone();
        let api = f("api_calls");
        assert_eq!(
            (api.limit, api.used, api.remaining),
            (Some(dec!(1000)), Some(dec!(250)), Some(dec!(800)))
        );
        assert_eq!(api.grants_remaining, Some(dec!(50)));
        assert_eq!(api.resets_at, Some(ts("2025-02-15T12:00:00Z")));
        assert_eq!(f("seats").level, Some(dec!(3)));
        assert_eq!(f("jobs").active_leases, Some(1));
        assert_eq!(f("git_export").enabled, Some(true));
        assert_eq!(f("file_mb").limit, Some(dec!(200)));
        assert!(f("export_formats").value.is_some());
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_plan_change_keeps_the_window_usage() {
    for b in backends("plan_change") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await;
        assert!(
            engine
                .consume(req("acme", "api_calls", dec!(100)))
                .await
                .unwrap()
                .allowed
        );
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert_eq!(d.upgrade_to.as_deref(), Some("pro"));
        // Upgrade mid-period: same anchor, same window, usage carried over.
        clock.advance(SignedDuration::from_hours(24 * 3));
        engine
            .subscribe("acme", "pro", SubscribeOptions::default())
            .await
            .unwrap();
        let sub = engine.subscription("acme").unwrap().unwrap();
        assert_eq!(sub.anchor, t0());
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.used, dec!(101));
        assert_eq!(d.remaining, Some(dec!(899)));
        assert!(engine.verify("acme", "api_calls").await.unwrap().consistent);
        // The snapshot after the change and a restart agree with the ledger.
        engine.snapshot_now().await.unwrap();
        engine
            .consume(req("acme", "api_calls", dec!(9)))
            .await
            .unwrap();
        drop(engine);
        let engine = open(&b, &clock).await;
        let d = engine
            .check(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert_eq!(d.used, dec!(110));
        assert!(
            engine
                .verify_all()
                .await
                .unwrap()
                .iter()
                .all(|r| r.consistent)
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_new_anchor_moves_the_window() {
    for b in backends("new_anchor") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "acme", "free").await;
        engine
            .consume(req("acme", "api_calls", dec!(60)))
            .await
            .unwrap();
        clock.advance(SignedDuration::from_hours(24 * 3));
        engine
            .consume(req("acme", "api_calls", dec!(30)))
            .await
            .unwrap();
        engine.snapshot_now().await.unwrap();
        // Re-anchored one day ago: the new window holds only the last 30.
        let anchor = engine.now() - SignedDuration::from_hours(24);
        engine
            .subscribe(
                "acme",
                "free",
                SubscribeOptions {
                    anchor: Some(anchor),
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
        let d = engine
            .check(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert_eq!(d.used, dec!(30));
        assert_eq!(
            d.resets_at,
            Some(anchor + SignedDuration::from_hours(24 * 31))
        );
        engine
            .consume(req("acme", "api_calls", dec!(5)))
            .await
            .unwrap();
        engine.snapshot_now().await.unwrap();
        engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        drop(engine);
        let engine = open(&b, &clock).await;
        let d = engine
            .check(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert_eq!(d.used, dec!(36));
        assert!(engine.verify("acme", "api_calls").await.unwrap().consistent);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}
