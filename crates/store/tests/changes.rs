//! The plan-change store (`Store::changes`): history, scheduled changes and
//! pending invoice items, one suite run against SQLite (a temp file, always)
//! and PostgreSQL (a fresh schema, when `TOLLGATE_TEST_POSTGRES_URL` is set;
//! set but unreachable fails).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_store::changes::{PendingItemRecord, PlanChangeRecord, ScheduledChangeRecord};
use tollgate_store::{Store, StoreError};

on_every_backend!(
    history_is_ordered_by_effective_time_and_refuses_duplicates,
    history_between_is_half_open_and_by_customer,
    one_pending_scheduled_change_per_customer,
    scheduled_changes_due_by_time,
    pending_items_attach_once,
);

/// 2026-11-01T00:00:00Z plus `secs`.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_793_491_200 + secs).unwrap()
}

async fn customer(store: &Arc<dyn Store>, id: &str) {
    common::insert_customer(store, id, "USD", t(0)).await;
}

fn change(id: &str, customer: &str, effective: i64, kind: &str) -> PlanChangeRecord {
    PlanChangeRecord {
        id: id.to_string(),
        customer_id: customer.to_string(),
        kind: kind.to_string(),
        from_plan: Some("starter".to_string()),
        from_version: Some(2),
        to_plan: "pro".to_string(),
        to_version: 4,
        effective_at: t(effective),
        requested_at: t(effective - 60),
        actor: "key_admin".to_string(),
        reason: Some("needs more seats".to_string()),
        details: json!({"proration_total": "-12.50", "blockers": [{"feature": "locations"}]}),
    }
}

fn scheduled(id: &str, customer: &str, effective: i64, state: &str) -> ScheduledChangeRecord {
    ScheduledChangeRecord {
        id: id.to_string(),
        customer_id: customer.to_string(),
        action: "change_plan".to_string(),
        to_plan: Some("basic".to_string()),
        to_version: Some(1),
        effective_at: t(effective),
        state: state.to_string(),
        actor: "cli".to_string(),
        reason: None,
        created_at: t(0),
        updated_at: t(0),
    }
}

fn item(id: &str, customer: &str, created: i64) -> PendingItemRecord {
    PendingItemRecord {
        id: id.to_string(),
        customer_id: customer.to_string(),
        line: json!({"kind": "proration", "description": "Unused time on Starter", "amount": "-6.6667"}),
        amount: dec!(-6.6667),
        currency: "USD".to_string(),
        created_at: t(created),
        invoice_id: None,
    }
}

async fn history_is_ordered_by_effective_time_and_refuses_duplicates(store: Arc<dyn Store>) {
    customer(&store, "acme").await;
    let changes = store.changes();
    let first = PlanChangeRecord {
        from_plan: None,
        from_version: None,
        reason: None,
        ..change("pch_b", "acme", 100, "subscribe")
    };
    changes
        .insert_plan_change(&change("pch_c", "acme", 900, "upgrade"))
        .await
        .unwrap();
    changes.insert_plan_change(&first).await.unwrap();
    // Same instant as pch_c: ordered by id.
    changes
        .insert_plan_change(&change("pch_a", "acme", 900, "migrate"))
        .await
        .unwrap();

    let got = changes.plan_changes("acme").await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["pch_b", "pch_a", "pch_c"]);
    assert_eq!(got[0], first, "every field round-trips, absent ones too");
    assert_eq!(got[2], change("pch_c", "acme", 900, "upgrade"));

    assert!(matches!(
        changes
            .insert_plan_change(&change("pch_c", "acme", 5, "upgrade"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        changes
            .insert_plan_change(&change("pch_z", "nobody", 5, "upgrade"))
            .await,
        Err(StoreError::NotFound {
            what: "customer",
            ..
        })
    ));
    assert!(changes.plan_changes("nobody").await.unwrap().is_empty());

    // Each change wrote its `subscription.changed` event in its transaction;
    // the refused duplicate and the unknown customer wrote none.
    let mut events = store.notify().customer_events("acme", 100).await.unwrap();
    events.sort_by_key(|e| e.seq);
    let written: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.payload["change"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        written,
        [
            ("subscription.changed", "pch_c"),
            ("subscription.changed", "pch_b"),
            ("subscription.changed", "pch_a")
        ]
    );
    assert_eq!(events[0].object_key, "customer:acme");
    assert_eq!(events[0].payload["kind"], json!("upgrade"));
    assert_eq!(events[1].payload["from"], json!(null));
    assert!(
        store
            .notify()
            .customer_events("nobody", 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn history_between_is_half_open_and_by_customer(store: Arc<dyn Store>) {
    customer(&store, "b-co").await;
    customer(&store, "a-co").await;
    let changes = store.changes();
    for (id, cust, at) in [
        ("pch_1", "b-co", 100),
        ("pch_2", "a-co", 200),
        ("pch_3", "a-co", 150),
        ("pch_4", "a-co", 300),
        ("pch_5", "b-co", 99),
    ] {
        changes
            .insert_plan_change(&change(id, cust, at, "upgrade"))
            .await
            .unwrap();
    }
    let got = changes.plan_changes_between(t(100), t(300)).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    // [100, 300): 99 and 300 are out; customers in order, each by time.
    assert_eq!(ids, ["pch_3", "pch_2", "pch_1"]);
}

async fn one_pending_scheduled_change_per_customer(store: Arc<dyn Store>) {
    customer(&store, "acme").await;
    customer(&store, "other").await;
    let changes = store.changes();
    assert_eq!(
        changes.pending_scheduled_change("acme").await.unwrap(),
        None
    );
    let downgrade = scheduled("sch_1", "acme", 1_000, "pending");
    changes.put_scheduled_change(&downgrade).await.unwrap();
    assert_eq!(
        changes.pending_scheduled_change("acme").await.unwrap(),
        Some(downgrade.clone())
    );
    // A second pending one for the same customer is refused; another
    // customer's is fine.
    match changes
        .put_scheduled_change(&scheduled("sch_2", "acme", 2_000, "pending"))
        .await
    {
        Err(StoreError::Conflict { id, .. }) => assert_eq!(id, "acme"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    changes
        .put_scheduled_change(&scheduled("sch_3", "other", 2_000, "pending"))
        .await
        .unwrap();
    // Replacing by id (canceling it) frees the slot.
    let canceled = ScheduledChangeRecord {
        state: "canceled".to_string(),
        updated_at: t(500),
        reason: Some("customer changed their mind".to_string()),
        ..downgrade
    };
    changes.put_scheduled_change(&canceled).await.unwrap();
    assert_eq!(
        changes.pending_scheduled_change("acme").await.unwrap(),
        None
    );
    // Still found by its id, whatever its state.
    assert_eq!(
        changes.scheduled_change(&canceled.id).await.unwrap(),
        Some(canceled.clone())
    );
    assert_eq!(changes.scheduled_change("sch_none").await.unwrap(), None);
    let cancel = ScheduledChangeRecord {
        action: "cancel".to_string(),
        to_plan: None,
        to_version: None,
        ..scheduled("sch_2", "acme", 2_000, "pending")
    };
    changes.put_scheduled_change(&cancel).await.unwrap();
    assert_eq!(
        changes.pending_scheduled_change("acme").await.unwrap(),
        Some(cancel)
    );
    assert!(matches!(
        changes
            .put_scheduled_change(&scheduled("sch_9", "nobody", 1, "pending"))
            .await,
        Err(StoreError::NotFound {
            what: "customer",
            ..
        })
    ));
}

async fn scheduled_changes_due_by_time(store: Arc<dyn Store>) {
    for c in ["a", "b", "c", "d"] {
        customer(&store, c).await;
    }
    let changes = store.changes();
    changes
        .put_scheduled_change(&scheduled("sch_a", "a", 300, "pending"))
        .await
        .unwrap();
    changes
        .put_scheduled_change(&scheduled("sch_b", "b", 100, "pending"))
        .await
        .unwrap();
    changes
        .put_scheduled_change(&scheduled("sch_c", "c", 200, "applied"))
        .await
        .unwrap();
    changes
        .put_scheduled_change(&scheduled("sch_d", "d", 301, "pending"))
        .await
        .unwrap();
    let due = changes.scheduled_changes_due(t(300)).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["sch_b", "sch_a"],
        "pending, effective at or before, by time"
    );
    assert!(
        changes
            .scheduled_changes_due(t(99))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn pending_items_attach_once(store: Arc<dyn Store>) {
    customer(&store, "acme").await;
    let changes = store.changes();
    changes
        .insert_pending_item(&item("pii_2", "acme", 20))
        .await
        .unwrap();
    changes
        .insert_pending_item(&item("pii_1", "acme", 20))
        .await
        .unwrap();
    changes
        .insert_pending_item(&item("pii_0", "acme", 30))
        .await
        .unwrap();
    assert!(matches!(
        changes.insert_pending_item(&item("pii_1", "acme", 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        changes
            .insert_pending_item(&item("pii_x", "nobody", 1))
            .await,
        Err(StoreError::NotFound {
            what: "customer",
            ..
        })
    ));
    let pending = changes.pending_items("acme").await.unwrap();
    let ids: Vec<&str> = pending.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["pii_1", "pii_2", "pii_0"]);
    assert_eq!(pending[0], item("pii_1", "acme", 20), "the amount is exact");

    let two = ["pii_1".to_string(), "pii_2".to_string()];
    changes.attach_pending_items(&two, "inv_1").await.unwrap();
    changes.attach_pending_items(&two, "inv_1").await.unwrap();
    let left = changes.pending_items("acme").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, "pii_0");

    // One of them on another invoice: refused, and pii_0 stays pending.
    let mixed = ["pii_0".to_string(), "pii_2".to_string()];
    assert!(matches!(
        changes.attach_pending_items(&mixed, "inv_2").await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(changes.pending_items("acme").await.unwrap().len(), 1);
    assert!(matches!(
        changes
            .attach_pending_items(&["pii_0".to_string(), "pii_nope".to_string()], "inv_2")
            .await,
        Err(StoreError::NotFound { .. })
    ));
    changes
        .attach_pending_items(&["pii_0".to_string()], "inv_2")
        .await
        .unwrap();
    assert!(changes.pending_items("acme").await.unwrap().is_empty());
    changes.attach_pending_items(&[], "inv_3").await.unwrap();
}
