//! One behavioural suite for every storage backend.
//!
//! Each scenario is written once, as an async function taking `Arc<dyn Store>`,
//! and run against SQLite (a temp file, always) and PostgreSQL (a fresh schema,
//! when `TOLLGATE_TEST_POSTGRES_URL` is set; if it is set but unreachable the
//! PostgreSQL tests fail, they never skip silently).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{PG_ENV, pg_store, sqlite_store};
use jiff::Timestamp;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_store::sqlite::SqliteStore;
use tollgate_store::{
    ApiKeyRecord, CounterSnapshot, CustomerFilter, CustomerRecord, GrantRecord, NewUsageRecord,
    OverrideRecord, PlanVersionRecord, ReservationRecord, ReservationState, Store, StoreError,
    SubscriptionRecord, SubscriptionStatus, UsageQuery, UsageSource, WriteOp,
};

on_every_backend!(
    customers_insert_conflict_get_update,
    customers_soft_delete_filters_and_cursor,
    subscriptions_put_get_replace,
    overrides_put_replace_delete,
    grants_insert_void_list,
    plan_versions_are_frozen,
    append_batch_round_trips_every_field,
    failed_batch_writes_nothing,
    usage_query_filters_and_cursor,
    usage_recorded_since_is_exact,
    usage_after_pages_in_order,
    sum_usage_is_exact_over_ten_thousand_fractional_rows,
    ledger_queries_span_many_blocks,
    reservations_put_change_state_list_open,
    snapshot_save_replaces_previous,
    migrate_is_idempotent,
    api_keys_insert_conflict_list_revoke,
);

// ---- API keys ------------------------------------------------------------------------

fn api_key(id: &str, digest: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_string(),
        name: format!("key {id}"),
        scope: "server".to_string(),
        customer_id: None,
        digest: digest.to_string(),
        prefix: "tg_1234abcd".to_string(),
        created_at: t(1),
        revoked_at: None,
    }
}

async fn api_keys_insert_conflict_list_revoke(store: Arc<dyn Store>) {
    assert!(store.api_keys().await.unwrap().is_empty());
    let b = api_key("key_b", "d2");
    let mut a = api_key("key_a", "d1");
    a.scope = "customer".into();
    a.customer_id = Some("cus_1".into());
    store.insert_api_key(&b).await.unwrap();
    store.insert_api_key(&a).await.unwrap();
    // Listed by id, every field round-trips.
    assert_eq!(store.api_keys().await.unwrap(), vec![a.clone(), b.clone()]);

    // Same id, or same digest: conflict, nothing written.
    let err = store
        .insert_api_key(&api_key("key_a", "d9"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = store
        .insert_api_key(&api_key("key_c", "d1"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(store.api_keys().await.unwrap().len(), 2);

    // Revocation keeps the first time.
    store.revoke_api_key("key_b", t(5)).await.unwrap();
    store.revoke_api_key("key_b", t(9)).await.unwrap();
    let keys = store.api_keys().await.unwrap();
    assert_eq!(keys[1].revoked_at, Some(t(5)));
    assert_eq!(keys[0].revoked_at, None);
    let err = store.revoke_api_key("key_zz", t(5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: "api key",
                ..
            }
        ),
        "{err:?}"
    );
}

// ---- fixtures ------------------------------------------------------------------------

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap()
}

/// 2024-03-01T00:00:00Z plus `us` microseconds.
fn t(us: i64) -> Timestamp {
    ts(1_709_251_200_000_000 + us)
}

fn customer(id: &str) -> CustomerRecord {
    CustomerRecord {
        id: id.to_string(),
        name: Some(format!("Customer {id}")),
        email: Some(format!("{id}@example.com")),
        currency: "EUR".to_string(),
        time_zone: "Europe/Paris".to_string(),
        metadata: json!({"crm_id": 4711, "tags": ["beta", "eu"], "nested": {"ok": true}}),
        admin_bypass: false,
        created_at: t(1),
        updated_at: t(1),
        deleted_at: None,
    }
}

fn subscription(customer_id: &str, plan: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        customer_id: customer_id.to_string(),
        plan_key: plan.to_string(),
        plan_version: 3,
        status: SubscriptionStatus::Active,
        anchor: t(123_456),
        trial_ends_at: Some(t(86_400_000_000)),
        canceled_at: None,
        created_at: t(7),
        updated_at: t(8),
    }
}

fn usage(customer_id: &str, feature: &str, qty: Decimal, at: Timestamp) -> NewUsageRecord {
    NewUsageRecord {
        customer_id: customer_id.to_string(),
        feature: feature.to_string(),
        quantity: qty,
        timestamp: at,
        recorded_at: at,
        source: UsageSource::Consume,
        properties: BTreeMap::new(),
        billable: true,
        idempotency_key: None,
        allocation: BTreeMap::from([("plan".to_string(), qty)]),
        answer: json!({"allowed": true}),
    }
}

fn appends(records: &[NewUsageRecord]) -> Vec<WriteOp> {
    records.iter().cloned().map(WriteOp::AppendUsage).collect()
}

fn reservation(id: &str, customer_id: &str, qty: Decimal) -> ReservationRecord {
    ReservationRecord {
        id: id.to_string(),
        customer_id: customer_id.to_string(),
        feature: "gpu_seconds".to_string(),
        quantity: qty,
        state: ReservationState::Open,
        created_at: t(10),
        expires_at: t(10 + 300_000_000),
        idempotency_key: Some(format!("key-{id}")),
        properties: BTreeMap::from([("job".to_string(), json!("render-42"))]),
    }
}

fn ids(customers: &[CustomerRecord]) -> Vec<&str> {
    customers.iter().map(|c| c.id.as_str()).collect()
}

// ---- customers -----------------------------------------------------------------------

async fn customers_insert_conflict_get_update(store: Arc<dyn Store>) {
    let mut c = customer("cus_1");
    store.insert_customer(&c).await.unwrap();
    assert_eq!(store.get_customer("cus_1").await.unwrap(), Some(c.clone()));
    assert_eq!(store.get_customer("cus_missing").await.unwrap(), None);

    let dup = store.insert_customer(&customer("cus_1")).await.unwrap_err();
    assert!(
        matches!(dup, StoreError::Conflict { what: "customer", ref id } if id == "cus_1"),
        "{dup:?}"
    );

    c.name = None;
    c.email = Some("billing@acme.test".to_string());
    c.currency = "USD".to_string();
    c.time_zone = "America/New_York".to_string();
    c.metadata = json!({"plan_note": "négocié"});
    c.admin_bypass = true;
    c.updated_at = t(999_999);
    store.update_customer(&c).await.unwrap();
    assert_eq!(store.get_customer("cus_1").await.unwrap(), Some(c.clone()));

    let missing = store
        .update_customer(&customer("cus_ghost"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound { what: "customer", ref id } if id == "cus_ghost"),
        "{missing:?}"
    );
    assert_eq!(store.get_customer("cus_ghost").await.unwrap(), None);
}

async fn customers_soft_delete_filters_and_cursor(store: Arc<dyn Store>) {
    for id in ["cus_a", "cus_b", "cus_c", "cus_d", "cus_e"] {
        store.insert_customer(&customer(id)).await.unwrap();
    }
    store
        .put_subscription(&subscription("cus_a", "pro"))
        .await
        .unwrap();
    store
        .put_subscription(&subscription("cus_c", "pro"))
        .await
        .unwrap();
    store
        .put_subscription(&subscription("cus_d", "free"))
        .await
        .unwrap();

    // Soft delete cus_c: hidden from default listings, still readable.
    let mut deleted = customer("cus_c");
    deleted.deleted_at = Some(t(5_000_000));
    deleted.updated_at = t(5_000_000);
    store.update_customer(&deleted).await.unwrap();
    assert_eq!(
        store.get_customer("cus_c").await.unwrap(),
        Some(deleted.clone())
    );

    let all = CustomerFilter::default();
    let listed = store.list_customers(&all).await.unwrap();
    assert_eq!(ids(&listed), ["cus_a", "cus_b", "cus_d", "cus_e"]);
    let with_deleted = CustomerFilter {
        include_deleted: true,
        ..CustomerFilter::default()
    };
    let listed = store.list_customers(&with_deleted).await.unwrap();
    assert_eq!(ids(&listed), ["cus_a", "cus_b", "cus_c", "cus_d", "cus_e"]);
    assert_eq!(listed[2], deleted);
    assert_eq!(
        ids(&store.all_customers().await.unwrap()),
        ["cus_a", "cus_b", "cus_c", "cus_d", "cus_e"]
    );

    // A deleted id still conflicts.
    assert!(matches!(
        store.insert_customer(&customer("cus_c")).await,
        Err(StoreError::Conflict { .. })
    ));

    // Plan filter (the deleted pro customer only with include_deleted).
    let pro = CustomerFilter {
        plan_key: Some("pro".to_string()),
        ..CustomerFilter::default()
    };
    assert_eq!(ids(&store.list_customers(&pro).await.unwrap()), ["cus_a"]);
    let pro_all = CustomerFilter {
        include_deleted: true,
        ..pro.clone()
    };
    assert_eq!(
        ids(&store.list_customers(&pro_all).await.unwrap()),
        ["cus_a", "cus_c"]
    );

    // Cursor pagination, two per page, over the visible customers.
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_customers(&CustomerFilter {
                starting_after: cursor.clone(),
                limit: 2,
                ..CustomerFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|c| c.id.clone());
        pages.push(ids(&page).iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        vec![vec!["cus_a", "cus_b"], vec!["cus_d", "cus_e"]]
            .into_iter()
            .map(|p| p.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    let after_d = CustomerFilter {
        starting_after: Some("cus_c".to_string()),
        include_deleted: true,
        ..CustomerFilter::default()
    };
    assert_eq!(
        ids(&store.list_customers(&after_d).await.unwrap()),
        ["cus_d", "cus_e"]
    );
}

async fn subscriptions_put_get_replace(store: Arc<dyn Store>) {
    store.insert_customer(&customer("cus_1")).await.unwrap();
    store.insert_customer(&customer("cus_2")).await.unwrap();
    assert_eq!(store.get_subscription("cus_1").await.unwrap(), None);

    let mut sub = subscription("cus_1", "pro");
    store.put_subscription(&sub).await.unwrap();
    assert_eq!(
        store.get_subscription("cus_1").await.unwrap(),
        Some(sub.clone())
    );

    sub.status = SubscriptionStatus::Canceled;
    sub.plan_version = 4;
    sub.trial_ends_at = None;
    sub.canceled_at = Some(t(42_000_001));
    sub.updated_at = t(42_000_001);
    store.put_subscription(&sub).await.unwrap();
    assert_eq!(
        store.get_subscription("cus_1").await.unwrap(),
        Some(sub.clone())
    );

    let other = SubscriptionRecord {
        status: SubscriptionStatus::PastDue,
        ..subscription("cus_2", "team")
    };
    store.put_subscription(&other).await.unwrap();
    assert_eq!(store.all_subscriptions().await.unwrap(), vec![sub, other]);

    let orphan = store
        .put_subscription(&subscription("cus_nobody", "pro"))
        .await
        .unwrap_err();
    assert!(
        matches!(orphan, StoreError::NotFound { what: "customer", ref id } if id == "cus_nobody"),
        "{orphan:?}"
    );
}

async fn overrides_put_replace_delete(store: Arc<dyn Store>) {
    store.insert_customer(&customer("cus_1")).await.unwrap();
    let mut ov = OverrideRecord {
        customer_id: "cus_1".to_string(),
        feature: "api_calls".to_string(),
        entitlement: json!({"limit": "50000", "reset": "month"}),
        updated_at: t(1),
    };
    store.put_override(&ov).await.unwrap();
    ov.entitlement = json!({"limit": "75000.5", "reset": "month", "overage": true});
    ov.updated_at = t(2);
    store.put_override(&ov).await.unwrap();
    let seats = OverrideRecord {
        feature: "seats".to_string(),
        entitlement: json!({"limit": "12"}),
        ..ov.clone()
    };
    store.put_override(&seats).await.unwrap();
    assert_eq!(
        store.all_overrides().await.unwrap(),
        vec![ov.clone(), seats.clone()]
    );

    assert!(store.delete_override("cus_1", "api_calls").await.unwrap());
    assert!(!store.delete_override("cus_1", "api_calls").await.unwrap());
    assert_eq!(store.all_overrides().await.unwrap(), vec![seats]);

    let orphan = OverrideRecord {
        customer_id: "cus_nobody".to_string(),
        ..ov
    };
    assert!(matches!(
        store.put_override(&orphan).await,
        Err(StoreError::NotFound {
            what: "customer",
            ..
        })
    ));
}

async fn grants_insert_void_list(store: Arc<dyn Store>) {
    store.insert_customer(&customer("cus_1")).await.unwrap();
    let g1 = GrantRecord {
        id: "grt_1".to_string(),
        customer_id: "cus_1".to_string(),
        feature: "tokens".to_string(),
        kind: "top_up".to_string(),
        quantity: dec!(0.000001),
        priority: 10,
        effective_at: t(100),
        expires_at: Some(t(2_592_000_000_000)),
        voided_at: None,
        metadata: json!({"order": "ord_77"}),
        created_at: t(99),
    };
    let g2 = GrantRecord {
        id: "grt_2".to_string(),
        kind: "emergency".to_string(),
        quantity: dec!(12345678901234.5),
        priority: -1,
        expires_at: None,
        ..g1.clone()
    };
    store.insert_grant(&g1, &[]).await.unwrap();
    store.insert_grant(&g2, &[]).await.unwrap();
    assert!(matches!(
        store.insert_grant(&g1, &[]).await,
        Err(StoreError::Conflict { what: "grant", .. })
    ));
    // Ordered by customer, feature, priority: the emergency pool (-1) first.
    assert_eq!(
        store.all_grants().await.unwrap(),
        vec![g2.clone(), g1.clone()]
    );

    store.void_grant("grt_1", t(5_000)).await.unwrap();
    // Voiding again keeps the first void time.
    store.void_grant("grt_1", t(9_000)).await.unwrap();
    let voided = GrantRecord {
        voided_at: Some(t(5_000)),
        ..g1
    };
    assert_eq!(store.all_grants().await.unwrap(), vec![g2, voided]);

    let missing = store.void_grant("grt_nope", t(1)).await.unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound { what: "grant", ref id } if id == "grt_nope"),
        "{missing:?}"
    );
}

async fn plan_versions_are_frozen(store: Arc<dyn Store>) {
    let v1 = PlanVersionRecord {
        plan_key: "pro".to_string(),
        version: 1,
        definition: json!({"price": "49.00", "features": {"api_calls": {"limit": "10000"}}}),
        published_at: t(1),
    };
    let v2 = PlanVersionRecord {
        version: 2,
        definition: json!({"price": "59.00"}),
        published_at: t(2),
        ..v1.clone()
    };
    let free = PlanVersionRecord {
        plan_key: "free".to_string(),
        version: 1,
        definition: json!({"price": "0"}),
        published_at: t(3),
    };
    store.put_plan_version(&v2).await.unwrap();
    store.put_plan_version(&v1).await.unwrap();
    store.put_plan_version(&free).await.unwrap();
    // Publishing the same definition again is a no-op.
    store.put_plan_version(&v1).await.unwrap();
    // A different definition under a published version is refused.
    let edited = PlanVersionRecord {
        definition: json!({"price": "1.00"}),
        ..v1.clone()
    };
    let err = store.put_plan_version(&edited).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "plan version", ref id } if id == "pro@1"),
        "{err:?}"
    );
    assert_eq!(store.plan_versions().await.unwrap(), vec![free, v1, v2]);
}

// ---- the ledger ----------------------------------------------------------------------

fn rich_records() -> Vec<NewUsageRecord> {
    let sources = [
        UsageSource::Consume,
        UsageSource::Commit,
        UsageSource::Event,
        UsageSource::GaugeSet,
        UsageSource::GaugeDelta,
    ];
    let quantities = [
        dec!(0.000001),
        dec!(12345678901234.5),
        dec!(1.50),
        dec!(-3),
        dec!(0),
    ];
    sources
        .iter()
        .zip(quantities)
        .enumerate()
        .map(|(i, (source, qty))| {
            let i = i as i64;
            NewUsageRecord {
                customer_id: format!("cus_{}", i % 2),
                feature: "llm_tokens".to_string(),
                quantity: qty,
                // Microsecond precision, including pre-1970 and odd values.
                timestamp: ts(1_709_251_200_123_457 + i * 1_000_001),
                recorded_at: ts(1_709_251_260_000_001 + i),
                source: *source,
                properties: BTreeMap::from([
                    ("model".to_string(), json!("large-2")),
                    ("region".to_string(), json!({"zone": "eu-west-3b", "n": i})),
                    ("flags".to_string(), json!([true, null, 1.5, "x"])),
                ]),
                billable: i % 2 == 0,
                idempotency_key: (i != 3).then(|| format!("idem-{i}-é")),
                allocation: BTreeMap::from([
                    ("plan".to_string(), dec!(0.000001)),
                    ("overage".to_string(), qty),
                    ("grt_01HX".to_string(), dec!(99999999999999.999999)),
                ]),
                answer: json!({"allowed": true, "remaining": "9.999999", "i": i}),
            }
        })
        .collect()
}

async fn append_batch_round_trips_every_field(store: Arc<dyn Store>) {
    assert_eq!(store.max_seq().await.unwrap(), 0);
    assert_eq!(store.append_batch(&[]).await.unwrap(), Vec::<i64>::new());

    let mut first = rich_records();
    first[0].timestamp = ts(-1_234_567); // before 1970, to the microsecond
    let seqs1 = store.append_batch(&appends(&first)).await.unwrap();
    let second = rich_records();
    let seqs2 = store.append_batch(&appends(&second)).await.unwrap();
    assert_eq!(seqs1.len(), 5);
    assert_eq!(seqs2.len(), 5);
    let all_seqs: Vec<i64> = seqs1.iter().chain(&seqs2).copied().collect();
    assert!(all_seqs.windows(2).all(|w| w[0] < w[1]), "{all_seqs:?}");
    assert!(all_seqs[0] >= 1);
    assert_eq!(store.max_seq().await.unwrap(), *all_seqs.last().unwrap());

    let stored = store.usage_after(0, 0).await.unwrap();
    let expected: Vec<NewUsageRecord> = first.into_iter().chain(second).collect();
    assert_eq!(stored.len(), expected.len());
    for ((got, want), seq) in stored.iter().zip(&expected).zip(&all_seqs) {
        assert_eq!(got.seq, *seq);
        assert_eq!(&got.record, want);
        // Exact decimal text, scale included ("1.50" stays "1.50").
        assert_eq!(got.record.quantity.to_string(), want.quantity.to_string());
    }
    assert_eq!(stored[1].record.quantity.to_string(), "12345678901234.5");
    assert_eq!(stored[0].record.quantity.to_string(), "0.000001");
    assert_eq!(
        stored[0].record.timestamp.as_microsecond(),
        -1_234_567,
        "microsecond timestamps round-trip"
    );
}

async fn failed_batch_writes_nothing(store: Arc<dyn Store>) {
    let ok = vec![usage("cus_1", "api", dec!(1), t(1))];
    let before = store.append_batch(&appends(&ok)).await.unwrap();

    let mut bad = vec![
        WriteOp::PutReservation(reservation("res_new", "cus_1", dec!(5))),
        WriteOp::AppendUsage(usage("cus_1", "api", dec!(2), t(2))),
        WriteOp::AppendUsage(usage("cus_1", "api", dec!(3), t(3))),
    ];
    // The last op fails: the reservation does not exist.
    bad.push(WriteOp::SetReservationState {
        id: "res_missing".to_string(),
        state: ReservationState::Committed,
    });
    let err = store.append_batch(&bad).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "reservation", ref id } if id == "res_missing"),
        "{err:?}"
    );
    assert_eq!(store.max_seq().await.unwrap(), before[0]);
    assert_eq!(store.usage_after(0, 0).await.unwrap().len(), 1);
    assert_eq!(store.get_reservation("res_new").await.unwrap(), None);
    assert!(store.open_reservations().await.unwrap().is_empty());

    // The store is still usable and seqs keep growing.
    let after = store
        .append_batch(&appends(&[usage("cus_1", "api", dec!(4), t(4))]))
        .await
        .unwrap();
    assert!(after[0] > before[0]);
    let quantities: Vec<Decimal> = store
        .usage_after(0, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.record.quantity)
        .collect();
    assert_eq!(quantities, vec![dec!(1), dec!(4)]);
}

async fn usage_query_filters_and_cursor(store: Arc<dyn Store>) {
    let mut records = Vec::new();
    for i in 0..30i64 {
        let c = ["cus_a", "cus_b", "cus_c"][(i % 3) as usize];
        let f = ["api", "storage"][(i % 2) as usize];
        records.push(usage(c, f, Decimal::new(i, 2), t(i * 1_000_000)));
    }
    let seqs = store.append_batch(&appends(&records)).await.unwrap();

    let by_customer = store
        .usage(&UsageQuery {
            customer_id: Some("cus_a".to_string()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_customer.len(), 10);
    assert!(by_customer.iter().all(|u| u.record.customer_id == "cus_a"));
    assert!(by_customer.windows(2).all(|w| w[0].seq < w[1].seq));

    let by_feature = store
        .usage(&UsageQuery {
            feature: Some("storage".to_string()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_feature.len(), 15);

    // [from, to): from is inclusive, to exclusive. i = 6..=23 in event time,
    // and cus_a with api means i ≡ 0 (mod 6): 6, 12, 18.
    let window = store
        .usage(&UsageQuery {
            customer_id: Some("cus_a".to_string()),
            feature: Some("api".to_string()),
            from: Some(t(6_000_000)),
            to: Some(t(24_000_000)),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    let qs: Vec<Decimal> = window.iter().map(|u| u.record.quantity).collect();
    assert_eq!(qs, vec![dec!(0.06), dec!(0.12), dec!(0.18)]);

    // Cursor paging over a filter returns each record once, in seq order.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .usage(&UsageQuery {
                customer_id: Some("cus_b".to_string()),
                after_seq: after,
                limit: 4,
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().map(|u| u.seq);
        paged.extend(page);
    }
    let expected: Vec<i64> = seqs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 1)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(paged.iter().map(|u| u.seq).collect::<Vec<_>>(), expected);
}

async fn usage_recorded_since_is_exact(store: Arc<dyn Store>) {
    let mut records = Vec::new();
    // recorded_at mostly grows with seq, but the clock stepped back once.
    for (i, rec_us) in [10, 20, 30, 25, 40, 50].into_iter().enumerate() {
        let mut r = usage("cus_1", "api", Decimal::from(i as i64), t(0));
        r.recorded_at = t(rec_us);
        r.idempotency_key = Some(format!("k{i}"));
        records.push(r);
    }
    store.append_batch(&appends(&records)).await.unwrap();
    let since = store.usage_recorded_since(t(25)).await.unwrap();
    let keys: Vec<&str> = since
        .iter()
        .map(|u| u.record.idempotency_key.as_deref().unwrap())
        .collect();
    assert_eq!(keys, ["k2", "k3", "k4", "k5"]);
    assert!(since.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(store.usage_recorded_since(t(51)).await.unwrap().is_empty());
    assert_eq!(store.usage_recorded_since(t(0)).await.unwrap().len(), 6);
}

async fn usage_after_pages_in_order(store: Arc<dyn Store>) {
    let records: Vec<NewUsageRecord> = (0..25)
        .map(|i| usage("cus_1", "api", Decimal::from(i), t(i)))
        .collect();
    let mut seqs = store.append_batch(&appends(&records[..12])).await.unwrap();
    seqs.extend(store.append_batch(&appends(&records[12..])).await.unwrap());

    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.usage_after(cursor, 10).await.unwrap();
        sizes.push(page.len());
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        seen.extend(page.into_iter().map(|u| (u.seq, u.record.quantity)));
    }
    assert_eq!(sizes, vec![10, 10, 5, 0]);
    let expected: Vec<(i64, Decimal)> = seqs
        .iter()
        .copied()
        .zip((0..25).map(Decimal::from))
        .collect();
    assert_eq!(seen, expected);
    assert!(store.usage_after(seqs[24], 10).await.unwrap().is_empty());
    assert_eq!(store.usage_after(seqs[19], 0).await.unwrap().len(), 5);
}

async fn sum_usage_is_exact_over_ten_thousand_fractional_rows(store: Arc<dyn Store>) {
    let mut expected: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut records = Vec::with_capacity(10_000);
    for i in 0..10_000i64 {
        // 0.000001 … 0.010000, with odd scales mixed in.
        let plan = Decimal::new(i + 1, 6);
        let overage = Decimal::new(i % 7, 1 + (i % 3) as u32);
        let mut r = usage("cus_sum", "tokens", plan + overage, t(i * 1_000));
        r.allocation = BTreeMap::from([("plan".to_string(), plan)]);
        if !overage.is_zero() {
            r.allocation.insert("overage".to_string(), overage);
        }
        if i % 1000 == 0 {
            r.allocation
                .insert("grt_promo".to_string(), dec!(0.333333333333));
        }
        for (bucket, q) in &r.allocation {
            *expected.entry(bucket.clone()).or_default() += *q;
        }
        records.push(r);
    }
    // Noise outside the query: other customer, other feature, outside the window.
    let mut noise = vec![
        usage("cus_other", "tokens", dec!(5), t(10)),
        usage("cus_sum", "images", dec!(7), t(10)),
        usage("cus_sum", "tokens", dec!(11), t(-1)),
        usage("cus_sum", "tokens", dec!(13), t(10_000_000)),
    ];
    records.append(&mut noise);
    for chunk in records.chunks(2_500) {
        store.append_batch(&appends(chunk)).await.unwrap();
    }
    let sums = store
        .sum_usage("cus_sum", "tokens", t(0), t(10_000_000))
        .await
        .unwrap();
    assert_eq!(sums, expected);
    assert_eq!(sums["plan"], dec!(50.005000)); // Σ (i+1)/10^6 for i < 10,000
    assert_eq!(sums["grt_promo"], dec!(3.33333333333));
    assert!(
        store
            .sum_usage("cus_nobody", "tokens", t(0), t(10_000_000))
            .await
            .unwrap()
            .is_empty()
    );
}

/// 20,000 records (several of SQLite's 8,192-seq ledger blocks), with backdated
/// events in late blocks and a clock that stepped back: every query must still
/// be exact.
async fn ledger_queries_span_many_blocks(store: Arc<dyn Store>) {
    let mut records = Vec::with_capacity(20_000);
    for i in 0..20_000i64 {
        let mut r = usage(
            &format!("cus_{}", i % 50),
            "api",
            Decimal::new(i + 1, 3),
            t(i * 1_000),
        );
        r.recorded_at = t(1_000_000 + i);
        if i % 5_000 == 4_999 {
            // An ingested event from long ago, arriving late.
            r.timestamp = t(-5_000_000 - i);
        }
        if i == 19_000 {
            // The clock stepped back while recording this one.
            r.recorded_at = t(10);
        }
        records.push(r);
    }
    let mut seqs = Vec::new();
    for chunk in records.chunks(3_000) {
        seqs.extend(store.append_batch(&appends(chunk)).await.unwrap());
    }
    let rows: Vec<(i64, &NewUsageRecord)> = seqs.iter().copied().zip(&records).collect();

    // Backdated events only: i = 4999, 9999, 14999, 19999, all of cus_49.
    let old = store
        .sum_usage("cus_49", "api", t(-100_000_000), t(0))
        .await
        .unwrap();
    assert_eq!(
        old,
        BTreeMap::from([(
            "plan".to_string(),
            dec!(5.000) + dec!(10.000) + dec!(15.000) + dec!(20.000)
        )])
    );
    for c in ["cus_0", "cus_49"] {
        let want: Decimal = rows
            .iter()
            .filter(|(_, r)| r.customer_id == c)
            .map(|(_, r)| r.quantity)
            .sum();
        let got = store
            .sum_usage(c, "api", t(-100_000_000), t(100_000_000))
            .await
            .unwrap();
        assert_eq!(got["plan"], want, "{c}");
    }

    // Paging one customer over a time range crossing block boundaries.
    let (from, to) = (t(3_000_000), t(17_000_000));
    let want: Vec<i64> = rows
        .iter()
        .filter(|(_, r)| r.customer_id == "cus_7" && r.timestamp >= from && r.timestamp < to)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(want.len(), 280);
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .usage(&UsageQuery {
                customer_id: Some("cus_7".to_string()),
                feature: Some("api".to_string()),
                from: Some(from),
                to: Some(to),
                after_seq: after,
                limit: 37,
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        got.extend(page.iter().map(|u| u.seq));
    }
    assert_eq!(got, want);

    // The idempotency window, across blocks and a clock step back.
    let since = store.usage_recorded_since(t(1_019_500)).await.unwrap();
    assert_eq!(since.len(), 500);
    assert_eq!(since[0].seq, seqs[19_500]);
    let since = store.usage_recorded_since(t(5)).await.unwrap();
    assert_eq!(since.len(), 20_000);
    assert!(since.windows(2).all(|w| w[0].seq < w[1].seq));
    let late = store.usage_recorded_since(t(1_018_990)).await.unwrap();
    let want: Vec<i64> = rows
        .iter()
        .filter(|(_, r)| r.recorded_at >= t(1_018_990))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(late.iter().map(|u| u.seq).collect::<Vec<_>>(), want);
    assert!(!want.contains(&seqs[19_000]));
}

// ---- reservations and snapshots ----------------------------------------------------

async fn reservations_put_change_state_list_open(store: Arc<dyn Store>) {
    let r1 = reservation("res_1", "cus_1", dec!(120.5));
    let r2 = reservation("res_2", "cus_1", dec!(0.25));
    let r3 = ReservationRecord {
        idempotency_key: None,
        properties: BTreeMap::new(),
        ..reservation("res_3", "cus_2", dec!(9))
    };
    let seqs = store
        .append_batch(&[
            WriteOp::PutReservation(r1.clone()),
            WriteOp::PutReservation(r2.clone()),
            WriteOp::PutReservation(r3.clone()),
        ])
        .await
        .unwrap();
    assert!(seqs.is_empty());
    assert_eq!(
        store.get_reservation("res_2").await.unwrap(),
        Some(r2.clone())
    );
    assert_eq!(store.get_reservation("res_9").await.unwrap(), None);
    assert_eq!(
        store.open_reservations().await.unwrap(),
        vec![r1.clone(), r2.clone(), r3.clone()]
    );

    // Commit res_1 with its usage in the same batch; release res_3.
    let seqs = store
        .append_batch(&[
            WriteOp::SetReservationState {
                id: "res_1".to_string(),
                state: ReservationState::Committed,
            },
            WriteOp::AppendUsage(NewUsageRecord {
                source: UsageSource::Commit,
                ..usage("cus_1", "gpu_seconds", dec!(97.25), t(20))
            }),
            WriteOp::SetReservationState {
                id: "res_3".to_string(),
                state: ReservationState::Released,
            },
        ])
        .await
        .unwrap();
    assert_eq!(seqs.len(), 1);
    assert_eq!(store.open_reservations().await.unwrap(), vec![r2.clone()]);
    let committed = store.get_reservation("res_1").await.unwrap().unwrap();
    assert_eq!(committed.state, ReservationState::Committed);
    assert_eq!(committed.quantity, dec!(120.5));

    // Put replaces (e.g. an extended expiry).
    let extended = ReservationRecord {
        expires_at: t(999_000_000),
        ..r2
    };
    store
        .append_batch(&[WriteOp::PutReservation(extended.clone())])
        .await
        .unwrap();
    assert_eq!(
        store.get_reservation("res_2").await.unwrap(),
        Some(extended)
    );
    store
        .append_batch(&[WriteOp::SetReservationState {
            id: "res_2".to_string(),
            state: ReservationState::Expired,
        }])
        .await
        .unwrap();
    assert!(store.open_reservations().await.unwrap().is_empty());
}

fn counter(
    customer_id: &str,
    feature: &str,
    start: i64,
    used: &[(&str, Decimal)],
) -> CounterSnapshot {
    CounterSnapshot {
        customer_id: customer_id.to_string(),
        feature: feature.to_string(),
        window_start: t(start),
        window_end: t(start + 2_592_000_000_000),
        used: used.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

async fn snapshot_save_replaces_previous(store: Arc<dyn Store>) {
    assert_eq!(store.load_snapshot().await.unwrap(), None);

    let a = counter(
        "cus_a",
        "api",
        0,
        &[("plan", dec!(100.000001)), ("overage", dec!(3))],
    );
    let b = counter("cus_b", "api", 0, &[("grt_1", dec!(12345678901234.5))]);
    let b_next = counter("cus_b", "api", 2_592_000_000_000, &[("plan", dec!(0.5))]);
    store
        .save_snapshot(5, &[b_next.clone(), a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.load_snapshot().await.unwrap(),
        Some((5, vec![a.clone(), b, b_next]))
    );

    let c = counter("cus_c", "seats", 7, &[("gauge", dec!(4))]);
    store
        .save_snapshot(9, std::slice::from_ref(&c))
        .await
        .unwrap();
    assert_eq!(store.load_snapshot().await.unwrap(), Some((9, vec![c])));

    store.save_snapshot(10, &[]).await.unwrap();
    assert_eq!(store.load_snapshot().await.unwrap(), Some((10, vec![])));

    // Two counters for one window are refused, and the previous snapshot stays.
    let twice = counter("cus_c", "seats", 7, &[("gauge", dec!(5))]);
    let err = store
        .save_snapshot(12, &[twice.clone(), twice])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                what: "counter snapshot",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.load_snapshot().await.unwrap(), Some((10, vec![])));

    // A big snapshot (more rows than one INSERT statement holds on SQLite).
    let many: Vec<CounterSnapshot> = (0..9_000)
        .map(|i| {
            counter(
                &format!("cus_{i:05}"),
                "api",
                0,
                &[("plan", Decimal::new(i, 3))],
            )
        })
        .collect();
    store.save_snapshot(11, &many).await.unwrap();
    assert_eq!(store.load_snapshot().await.unwrap(), Some((11, many)));
}

async fn migrate_is_idempotent(store: Arc<dyn Store>) {
    store.insert_customer(&customer("cus_1")).await.unwrap();
    let seqs = store
        .append_batch(&appends(&[usage("cus_1", "api", dec!(1.25), t(1))]))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        store.get_customer("cus_1").await.unwrap(),
        Some(customer("cus_1"))
    );
    assert_eq!(store.max_seq().await.unwrap(), seqs[0]);
}

// ---- backend-specific ------------------------------------------------------------------

#[tokio::test]
async fn sqlite_creates_parent_dirs_and_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("deeper").join("tollgate.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    assert!(path.exists());

    store.insert_customer(&customer("cus_1")).await.unwrap();
    store
        .put_subscription(&subscription("cus_1", "pro"))
        .await
        .unwrap();
    let records = rich_records();
    let seqs = store.append_batch(&appends(&records)).await.unwrap();
    store
        .append_batch(&[WriteOp::PutReservation(reservation(
            "res_1",
            "cus_1",
            dec!(2),
        ))])
        .await
        .unwrap();
    let snap = vec![counter("cus_1", "api", 0, &[("plan", dec!(7.5))])];
    store.save_snapshot(seqs[4], &snap).await.unwrap();
    store.close().await;
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    reopened.migrate().await.unwrap();
    assert_eq!(
        reopened.get_customer("cus_1").await.unwrap(),
        Some(customer("cus_1"))
    );
    assert_eq!(
        reopened.get_subscription("cus_1").await.unwrap(),
        Some(subscription("cus_1", "pro"))
    );
    let stored = reopened.usage_after(0, 0).await.unwrap();
    assert_eq!(
        stored.iter().map(|u| u.record.clone()).collect::<Vec<_>>(),
        records
    );
    assert_eq!(stored.iter().map(|u| u.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(reopened.open_reservations().await.unwrap().len(), 1);
    assert_eq!(
        reopened.load_snapshot().await.unwrap(),
        Some((seqs[4], snap))
    );
    let next = reopened
        .append_batch(&appends(&[usage("cus_1", "api", dec!(1), t(9))]))
        .await
        .unwrap();
    assert_eq!(next, vec![seqs[4] + 1]);
    reopened.close().await;
}

#[tokio::test]
async fn sqlite_seqs_are_never_reused_after_rows_are_deleted() {
    let (store, dir) = sqlite_store().await;
    let seqs = store
        .append_batch(&appends(&[
            usage("cus_1", "api", dec!(1), t(1)),
            usage("cus_1", "api", dec!(2), t(2)),
        ]))
        .await
        .unwrap();
    // Someone prunes the tail of the ledger by hand.
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("tollgate.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("DELETE FROM usage WHERE seq = $1")
        .bind(seqs[1])
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    let next = store
        .append_batch(&appends(&[usage("cus_1", "api", dec!(3), t(3))]))
        .await
        .unwrap();
    assert_eq!(next, vec![seqs[1] + 1]);
}

/// Group-commit-sized batches (the one-statement path) across block
/// boundaries: consecutive seqs, one zone per 1,024-seq block, and every row
/// found again by customer and by recorded time.
#[tokio::test]
async fn sqlite_small_batches_cross_blocks_and_stay_queryable() {
    let (store, dir) = sqlite_store().await;
    let mut seqs = Vec::new();
    let mut records = Vec::new();
    let mut i = 0i64;
    for size in (1..=64).cycle().take(70) {
        let batch: Vec<NewUsageRecord> = (0..size)
            .map(|k| {
                let mut r = usage(
                    &format!("cus_{}", (i + k) % 7),
                    "api",
                    Decimal::from(i + k + 1),
                    t(i + k),
                );
                r.recorded_at = t(1_000 + i + k);
                r
            })
            .collect();
        i += size;
        seqs.extend(store.append_batch(&appends(&batch)).await.unwrap());
        records.extend(batch);
    }
    assert_eq!(records.len(), 2_101);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs are consecutive"
    );
    let mine = store
        .usage(&UsageQuery {
            customer_id: Some("cus_3".to_string()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    let want: Vec<i64> = seqs
        .iter()
        .zip(&records)
        .filter(|(_, r)| r.customer_id == "cus_3")
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(mine.iter().map(|u| u.seq).collect::<Vec<_>>(), want);
    assert_eq!(store.usage_recorded_since(t(0)).await.unwrap().len(), 2_101);
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("tollgate.db").display()
    ))
    .await
    .unwrap();
    let zones: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT block, min_ts, max_ts FROM usage_blocks ORDER BY block")
            .fetch_all(&raw)
            .await
            .unwrap();
    let last = *seqs.last().unwrap();
    assert_eq!(zones.len() as i64, (last >> 10) - (seqs[0] >> 10) + 1);
    for (block, min_ts, max_ts) in zones {
        let in_block: Vec<i64> = seqs
            .iter()
            .zip(&records)
            .filter(|(s, _)| **s >> 10 == block)
            .map(|(_, r)| r.timestamp.as_microsecond())
            .collect();
        // The zone covers the block's rows, widened to whole minutes at most
        // (the ledger thread rounds the zones it writes).
        let (lo, hi) = (
            *in_block.iter().min().unwrap(),
            *in_block.iter().max().unwrap(),
        );
        let minute = 60_000_000;
        assert!(
            min_ts <= lo && lo - min_ts < minute,
            "block {block}: {min_ts} vs {lo}"
        );
        assert!(
            max_ts >= hi && max_ts - hi < minute,
            "block {block}: {max_ts} vs {hi}"
        );
    }
    // Every block before the last one is sealed: its rows, and only those,
    // are in the per-block index (migration 0009); the open one is not.
    let sealed: Vec<(i64, i64)> =
        sqlx::query_as("SELECT block, indexed FROM usage_blocks ORDER BY block")
            .fetch_all(&raw)
            .await
            .unwrap();
    let open = last >> 10;
    for (block, indexed) in &sealed {
        assert_eq!(*indexed == 1, *block < open, "block {block}");
    }
    let indexed: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, customer_id FROM usage_index ORDER BY seq")
            .fetch_all(&raw)
            .await
            .unwrap();
    let want: Vec<(i64, String)> = seqs
        .iter()
        .zip(&records)
        .filter(|(s, _)| **s >> 10 < open)
        .map(|(s, r)| (*s, r.customer_id.clone()))
        .collect();
    assert_eq!(indexed, want);
    raw.close().await;
}

/// A ledger written before migration 0009 (rows indexed one by one) is sealed
/// by the migration: every block but the last goes to the per-block index,
/// and queries by customer return the same rows before and after.
#[tokio::test]
async fn sqlite_migration_0009_seals_the_blocks_of_an_existing_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    let migrations: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 9)
        .cloned()
        .collect();
    migrator.migrations = std::borrow::Cow::Owned(migrations);
    migrator.run(&raw).await.unwrap();
    // 2,500 rows of 1,024-seq blocks (0, 1 and the open 2), with their zones,
    // as the store wrote them before 0009.
    for seq in 1..=2_500i64 {
        sqlx::query(
            "INSERT INTO usage (seq, block, customer_id, feature, quantity, ts, recorded_at, \
             source, properties, billable, idempotency_key, allocation, answer) \
             VALUES ($1, $1 >> 10, 'cus_' || ($1 % 5), 'api', '1', $1, $1, 'event', '{}', 1, \
             NULL, '{\"plan\":\"1\"}', 'null')",
        )
        .bind(seq)
        .execute(&raw)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO usage_blocks (block, min_ts, max_ts, min_recorded_at, max_recorded_at) \
         SELECT block, MIN(ts), MAX(ts), MIN(recorded_at), MAX(recorded_at) FROM usage \
         GROUP BY block",
    )
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    let mine = store
        .usage(&UsageQuery {
            customer_id: Some("cus_3".to_string()),
            from: Some(Timestamp::from_microsecond(1_000).unwrap()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    let want: Vec<i64> = (1_000..=2_500).filter(|s| s % 5 == 3).collect();
    assert_eq!(mine.iter().map(|u| u.seq).collect::<Vec<_>>(), want);
    let used = store
        .sum_usage(
            "cus_3",
            "api",
            Timestamp::from_microsecond(0).unwrap(),
            Timestamp::from_microsecond(10_000).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(used.get("plan"), Some(&Decimal::from(500)));
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (sealed, entries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM usage_blocks WHERE indexed = 1), \
         (SELECT COUNT(*) FROM usage_index)",
    )
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!((sealed, entries), (2, 2_047));
    raw.close().await;
    store.close().await;
}

/// The store numbers batches from the last seq it wrote; a row appended
/// behind its back (another process on the same file) makes the next batch
/// read `max(seq)` again instead of failing or overwriting.
#[tokio::test]
async fn sqlite_rows_appended_by_another_process_are_numbered_around() {
    let (store, dir) = sqlite_store().await;
    let first = store
        .append_batch(&appends(&[usage("cus_1", "api", dec!(1), t(1))]))
        .await
        .unwrap();
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("tollgate.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO usage (seq, block, customer_id, feature, quantity, ts, recorded_at, \
         source, properties, billable, idempotency_key, allocation, answer) \
         VALUES ($1, $1 >> 10, 'cus_2', 'api', '5', 2, 2, 'event', '{}', 1, NULL, '{}', 'null')",
    )
    .bind(first[0] + 1)
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;
    let next = store
        .append_batch(&appends(&[
            usage("cus_1", "api", dec!(2), t(3)),
            usage("cus_1", "api", dec!(3), t(4)),
        ]))
        .await
        .unwrap();
    assert_eq!(next, vec![first[0] + 2, first[0] + 3]);
    let all = store.usage_after(0, 0).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|u| (u.seq, u.record.customer_id.as_str(), u.record.quantity))
            .collect::<Vec<_>>(),
        vec![
            (first[0], "cus_1", dec!(1)),
            (first[0] + 1, "cus_2", dec!(5)),
            (first[0] + 2, "cus_1", dec!(2)),
            (first[0] + 3, "cus_1", dec!(3)),
        ]
    );
}

#[tokio::test]
async fn sqlite_corrupt_values_are_errors_not_panics() {
    let (store, dir) = sqlite_store().await;
    store.insert_customer(&customer("cus_1")).await.unwrap();
    store
        .append_batch(&appends(&[usage("cus_1", "api", dec!(1), t(1))]))
        .await
        .unwrap();
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("tollgate.db").display()
    ))
    .await
    .unwrap();
    corrupt_and_check(&store, |sql| {
        let raw = raw.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&raw)
                .await
                .unwrap();
        }
    })
    .await;
    raw.close().await;
}

#[tokio::test]
async fn postgres_corrupt_values_are_errors_not_panics() {
    let Some(pg) = pg_store().await else { return };
    let store: Arc<dyn Store> = Arc::new(pg.clone());
    store.insert_customer(&customer("cus_1")).await.unwrap();
    store
        .append_batch(&appends(&[usage("cus_1", "api", dec!(1), t(1))]))
        .await
        .unwrap();
    let url = std::env::var(PG_ENV).unwrap();
    let schema = pg.schema().unwrap().to_string();
    corrupt_and_check(&store, |sql| {
        let url = url.clone();
        let schema = schema.clone();
        async move {
            use sqlx::{Connection, Executor};
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            conn.execute(sqlx::AssertSqlSafe(format!(
                "SET search_path TO \"{schema}\""
            )))
            .await
            .unwrap();
            conn.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
            conn.close().await.unwrap();
        }
    })
    .await;
    pg.drop_schema().await.unwrap();
}

/// Writes bad values behind the store's back and checks each read reports
/// `Corrupt`.
async fn corrupt_and_check<F, Fut>(store: &Arc<dyn Store>, exec: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let corrupt = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains(what), "{msg}"),
        other => panic!("expected Corrupt for {what}, got {other:?}"),
    };

    exec("UPDATE usage SET quantity = '1.2.3'".to_string()).await;
    corrupt(store.usage_after(0, 0).await.map(drop), "usage.quantity");
    exec("UPDATE usage SET quantity = '1', allocation = '{\"plan\": \"x\"}'".to_string()).await;
    corrupt(store.usage_after(0, 0).await.map(drop), "usage.allocation");
    corrupt(
        store.sum_usage("cus_1", "api", t(0), t(10)).await.map(drop),
        "usage.allocation",
    );
    exec("UPDATE usage SET allocation = '{}', source = 'teleport'".to_string()).await;
    corrupt(store.usage_after(0, 0).await.map(drop), "usage.source");
    exec("UPDATE usage SET source = 'event', properties = 'not json'".to_string()).await;
    corrupt(
        store.usage_recorded_since(t(0)).await.map(drop),
        "usage.properties",
    );
    exec("UPDATE customers SET metadata = '{'".to_string()).await;
    corrupt(
        store.get_customer("cus_1").await.map(drop),
        "customers.metadata",
    );
    exec("UPDATE customers SET metadata = '{}', created_at = 9223372036854775807".to_string())
        .await;
    corrupt(
        store.all_customers().await.map(drop),
        "customers.created_at",
    );
}
