//! The SQLite ledger thread and its fsync thread (crates/store/src/sqlite/ledger.rs):
//! written batches are visible at once, durable through the fsync thread,
//! numbered in order across block boundaries, and the file is released and
//! reread intact by the next open.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_store::sqlite::{Durability, SqliteStore};
use tollgate_store::{NewUsageRecord, Store, UsageQuery, UsageSource, WriteOp};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + secs).unwrap()
}

fn consumes(customer: &str, n: usize, from_sec: i64) -> Vec<WriteOp> {
    (0..n)
        .map(|i| {
            let qty = Decimal::from(i as i64 % 7 + 1);
            WriteOp::AppendUsage(NewUsageRecord {
                customer_id: customer.to_string(),
                feature: "api_calls".to_string(),
                quantity: qty,
                timestamp: at(from_sec + i as i64),
                recorded_at: at(from_sec + i as i64),
                source: UsageSource::Consume,
                properties: BTreeMap::new(),
                billable: true,
                idempotency_key: None,
                allocation: BTreeMap::from([("plan".to_string(), qty)]),
                answer: json!(null),
            })
        })
        .collect()
}

fn total(ops: &[WriteOp]) -> Decimal {
    ops.iter()
        .map(|op| match op {
            WriteOp::AppendUsage(r) => r.quantity,
            _ => Decimal::ZERO,
        })
        .sum()
}

async fn open(dir: &tempfile::TempDir, durability: Durability) -> SqliteStore {
    let store = SqliteStore::open_with(dir.path().join("ledger.db"), durability)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test]
async fn batches_written_back_to_back_are_visible_at_once_and_durable_through_the_fsync_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Durability::Full).await;
    assert!(store.syncs_in_background());

    // 1,000 rows, then batches that cross the first 1,024-seq block boundary,
    // each written before the previous one is durable.
    let first = consumes("cus_a", 1_000, 0);
    store.append_batch(&first).await.unwrap();
    let mut expected = total(&first);
    let mut pending = Vec::new();
    let mut seqs = Vec::new();
    for b in 0..4 {
        let ops = consumes("cus_a", 20, 2_000 + b * 100);
        expected += total(&ops);
        let written = store.append_batch_written(&ops).await.unwrap();
        assert_eq!(written.seqs.len(), 20);
        seqs.extend(written.seqs);
        pending.push(
            written
                .durable
                .expect("a FULL store syncs in its own thread"),
        );
        // Visible before it is durable: the next batch reads after it.
        let visible = store.max_seq().await.unwrap();
        assert_eq!(visible, *seqs.last().unwrap());
    }
    for durable in pending {
        durable.wait().await.unwrap();
    }
    store.wait_durable().await.unwrap();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(seqs.first(), Some(&1_001));

    let used = store
        .sum_usage("cus_a", "api_calls", at(0), at(10_000))
        .await
        .unwrap();
    assert_eq!(used.get("plan"), Some(&expected));
    let rows = store
        .usage(&UsageQuery {
            customer_id: Some("cus_a".to_string()),
            after_seq: Some(1_000),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    store.close().await;
}

#[tokio::test]
async fn a_process_durability_store_hands_batches_over_the_same_way_without_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Durability::Process).await;
    assert!(store.syncs_in_background());
    // The first batch reads max(seq) through the sqlx connection; the next
    // ones go to the ledger thread.
    assert_eq!(
        store.append_batch(&consumes("cus_b", 1, 0)).await.unwrap(),
        vec![1]
    );
    let written = store
        .append_batch_written(&consumes("cus_b", 5, 1))
        .await
        .unwrap();
    assert_eq!(written.seqs, vec![2, 3, 4, 5, 6]);
    written
        .durable
        .expect("handed to the sync thread")
        .wait()
        .await
        .unwrap();
    let used = store
        .sum_usage("cus_b", "api_calls", at(0), at(100))
        .await
        .unwrap();
    // 1 + (1 + 2 + 3 + 4 + 5)
    assert_eq!(used.get("plan"), Some(&Decimal::from(16)));
    store.close().await;
}

#[tokio::test]
async fn close_releases_the_ledger_and_the_next_open_reads_and_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Durability::Full).await;
    let ops = consumes("cus_c", 50, 0);
    let seqs = store.append_batch(&ops).await.unwrap();
    store.close().await;
    drop(store);

    let store = open(&dir, Durability::Full).await;
    let used = store
        .sum_usage("cus_c", "api_calls", at(0), at(1_000))
        .await
        .unwrap();
    assert_eq!(used.get("plan"), Some(&total(&ops)));
    let more = store
        .append_batch(&consumes("cus_c", 3, 100))
        .await
        .unwrap();
    assert!(more[0] > *seqs.last().unwrap());
    store.close().await;
}

#[tokio::test]
async fn a_large_batch_is_written_in_multi_row_chunks_with_every_row_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Durability::Full).await;
    // The first batch learns the last seq; the next one takes the ledger
    // thread's path, in statements of 512, 512, 128, 128 and 20 rows.
    store.append_batch(&consumes("cus_a", 3, 0)).await.unwrap();
    let mut ops = consumes("cus_b", 650, 100);
    ops.extend(consumes("cus_c", 650, 1_000));
    let written = store.append_batch_written(&ops).await.unwrap();
    assert!(written.durable.is_some(), "the ledger thread wrote it");
    assert_eq!(written.seqs, (4..=1_303).collect::<Vec<i64>>());
    store.wait_durable().await.unwrap();

    let rows = store
        .usage(&UsageQuery {
            after_seq: Some(3),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), ops.len());
    for (row, op) in rows.iter().zip(&ops) {
        let WriteOp::AppendUsage(want) = op else {
            unreachable!()
        };
        assert_eq!(&row.record, want, "row {}", row.seq);
    }
    let used = store
        .sum_usage("cus_c", "api_calls", at(0), at(10_000))
        .await
        .unwrap();
    assert_eq!(used.get("plan"), Some(&total(&ops[650..])));
    store.close().await;
}
