//! The billing store's behaviour (invoices, numbering, payments, credit notes,
//! provider events, run aggregation), once for every backend: SQLite always,
//! PostgreSQL in a fresh schema when `TOLLGATE_TEST_POSTGRES_URL` is set (and
//! failing, not skipping, when it is set but unreachable).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_core::billing::credit::{CreditBasis, CreditNote, CreditNoteLine};
use tollgate_core::billing::{
    Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus, InvoiceTotals, Party, TaxMode, TaxRule,
};
use tollgate_core::money::Currency;
use tollgate_store::billing::{
    InvoiceFilter, InvoiceKind, NewInvoice, PaymentRecord, RefundRecord, UsageWindow,
};
use tollgate_store::changes::PendingItemRecord;
use tollgate_store::{CustomerRecord, NewUsageRecord, Store, StoreError, UsageSource, WriteOp};

on_every_backend!(
    a_cycle_invoice_is_written_once_per_customer_and_period,
    only_drafts_change,
    issuing_numbers_gapless_per_prefix_and_never_reuses,
    concurrent_issues_get_distinct_consecutive_numbers,
    invoices_written_issued_take_numbers_only_when_new,
    status_changes_follow_the_lifecycle,
    payments_add_up_and_repeat_idempotently,
    credit_notes_are_numbered_and_never_exceed_the_total,
    lists_filter_and_page,
    provider_events_are_remembered_once,
    usage_totals_sum_each_window_in_one_pass,
    discounts_are_stored_listed_and_removed_per_customer,
    idempotent_responses_are_kept_once_per_scope_and_key,
    refunds_never_exceed_what_was_paid_and_a_key_refunds_once,
);

// ---- fixtures ------------------------------------------------------------------------

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn nov() -> (Timestamp, Timestamp) {
    (ts("2026-11-01T00:00:00Z"), ts("2026-12-01T00:00:00Z"))
}

fn customer(id: &str) -> CustomerRecord {
    CustomerRecord {
        id: id.to_string(),
        name: Some(format!("Customer {id}")),
        email: None,
        currency: "USD".to_string(),
        time_zone: "UTC".to_string(),
        metadata: json!({}),
        admin_bypass: false,
        created_at: ts("2026-01-01T00:00:00Z"),
        updated_at: ts("2026-01-01T00:00:00Z"),
        deleted_at: None,
    }
}

async fn customers(store: &Arc<dyn Store>, ids: &[&str]) {
    for id in ids {
        store.insert_customer(&customer(id)).await.unwrap();
    }
}

/// A draft of 100.00 + 20.00 tax = 120.00 USD.
fn draft(id: &str, customer: &str, start: Timestamp, end: Timestamp) -> Invoice {
    let line = InvoiceLine {
        kind: InvoiceLineKind::Base,
        description: "Pro (monthly)".into(),
        charge: None,
        feature: None,
        dimensions: BTreeMap::new(),
        plan_key: Some("pro".into()),
        plan_version: Some(1),
        period_start: start,
        period_end: end,
        quantity: Decimal::ONE,
        included: Decimal::ZERO,
        billable_quantity: Decimal::ONE,
        unit_amount: Some(dec!(100)),
        tiers: vec![],
        unrounded: dec!(100),
        amount: dec!(100.00),
        tax_amount: dec!(20.00),
        source: None,
        discount_id: None,
    };
    Invoice {
        id: id.to_string(),
        number: None,
        customer_id: customer.to_string(),
        currency: Currency::from_code("USD").unwrap(),
        status: InvoiceStatus::Draft,
        period_start: start,
        period_end: end,
        lines: vec![line],
        tax: TaxRule {
            rate: dec!(0.2),
            mode: TaxMode::PerLine,
            label: "VAT 20 %".into(),
        },
        totals: InvoiceTotals {
            subtotal: dec!(100.00),
            discount: Decimal::ZERO,
            tax: dec!(20.00),
            total: dec!(120.00),
            amount_paid: Decimal::ZERO,
            amount_credited: Decimal::ZERO,
            amount_due: dec!(120.00),
        },
        issuer: Party {
            name: "Tollgate".into(),
            ..Party::default()
        },
        bill_to: Party {
            name: customer.to_string(),
            ..Party::default()
        },
        memo: None,
        created_at: end,
        issued_at: None,
        due_at: None,
        paid_at: None,
        voided_at: None,
    }
}

fn cycle(inv: Invoice) -> NewInvoice {
    NewInvoice {
        invoice: inv,
        kind: InvoiceKind::Cycle,
        pending_items: vec![],
    }
}

async fn issued(store: &Arc<dyn Store>, id: &str, customer: &str) -> Invoice {
    let (s, e) = nov();
    store
        .billing()
        .insert_invoice(&cycle(draft(id, customer, s, e)))
        .await
        .unwrap();
    store
        .billing()
        .issue_invoice(id, "INV", e, Some(ts("2026-12-31T00:00:00Z")))
        .await
        .unwrap()
}

fn payment(id: &str, invoice: &str, reference: &str, amount: Decimal) -> PaymentRecord {
    PaymentRecord {
        id: id.to_string(),
        invoice_id: invoice.to_string(),
        provider: "manual".into(),
        reference: reference.to_string(),
        amount,
        currency: "USD".into(),
        received_at: ts("2026-12-05T00:00:00Z"),
        metadata: json!({"note": "wire"}),
    }
}

fn pending_item(id: &str, customer: &str) -> PendingItemRecord {
    PendingItemRecord {
        id: id.to_string(),
        customer_id: customer.to_string(),
        line: json!({"kind": "proration", "description": "Remaining time on Pro", "amount": "7.00"}),
        amount: dec!(7.00),
        currency: "USD".to_string(),
        created_at: ts("2026-11-10T00:00:00Z"),
        invoice_id: None,
    }
}

fn note(id: &str, invoice: &Invoice, total: Decimal) -> CreditNote {
    CreditNote {
        id: id.to_string(),
        number: None,
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        currency: invoice.currency,
        reason: "goodwill".into(),
        lines: vec![CreditNoteLine {
            description: "credit".into(),
            invoice_line: Some(0),
            amount: total,
            tax_amount: Decimal::ZERO,
            basis: CreditBasis::Share,
        }],
        total,
        created_at: ts("2026-12-10T00:00:00Z"),
    }
}

// ---- scenarios -------------------------------------------------------------------------

async fn a_cycle_invoice_is_written_once_per_customer_and_period(store: Arc<dyn Store>) {
    customers(&store, &["acme"]).await;
    let b = store.billing();
    let (s, e) = nov();
    store
        .changes()
        .insert_pending_item(&pending_item("pii_1", "acme"))
        .await
        .unwrap();
    let mut first = cycle(draft("inv_1", "acme", s, e));
    first.pending_items = vec!["pii_1".into()];
    let stored = b.insert_invoice(&first).await.unwrap();
    assert!(stored.created);
    // The item is on the invoice from the invoice's own transaction.
    assert!(
        store
            .changes()
            .pending_items("acme")
            .await
            .unwrap()
            .is_empty()
    );

    // A rerun (another id, as after a crash) finds the first one.
    let again = b
        .insert_invoice(&cycle(draft("inv_2", "acme", s, e)))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.invoice.id, "inv_1");
    assert_eq!(again.pending_items, vec!["pii_1".to_string()]);
    assert!(b.get_invoice("inv_2").await.unwrap().is_none());

    // An invoice naming an item already on another invoice, or an unknown
    // one, is refused and writes nothing.
    for (id, item, conflict) in [("inv_8", "pii_1", true), ("inv_9", "pii_none", false)] {
        let mut off = cycle(draft(id, "acme", s, e));
        off.kind = InvoiceKind::OffCycle;
        off.pending_items = vec![item.into()];
        let err = b.insert_invoice(&off).await.unwrap_err();
        match conflict {
            true => assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}"),
            false => assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}"),
        }
        assert!(b.get_invoice(id).await.unwrap().is_none(), "{id}");
    }

    // Off-cycle invoices for the same period are not limited.
    for id in ["inv_3", "inv_4"] {
        let mut off = cycle(draft(id, "acme", s, e));
        off.kind = InvoiceKind::OffCycle;
        assert!(b.insert_invoice(&off).await.unwrap().created);
    }
    // The next period is another cycle invoice.
    let dec_end = ts("2027-01-01T00:00:00Z");
    assert!(
        b.insert_invoice(&cycle(draft("inv_5", "acme", e, dec_end)))
            .await
            .unwrap()
            .created
    );
    // A duplicate id is a conflict; an unknown customer is not found; an issued
    // invoice cannot be inserted.
    let err = b
        .insert_invoice(&cycle(draft("inv_5", "acme", dec_end, dec_end)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = b
        .insert_invoice(&cycle(draft("inv_6", "nobody", s, e)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let mut open = draft("inv_7", "acme", s, e);
    open.status = InvoiceStatus::Open;
    let err = b.insert_invoice(&cycle(open)).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");

    let keys = b.invoice_keys(s, dec_end).await.unwrap();
    let ids: Vec<_> = keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["inv_1", "inv_5"]);
    assert_eq!(keys[0].period_start, s);
    assert_eq!(keys[0].status, InvoiceStatus::Draft);
}

async fn only_drafts_change(store: Arc<dyn Store>) {
    customers(&store, &["acme"]).await;
    let b = store.billing();
    let (s, e) = nov();
    let mut inv = draft("inv_1", "acme", s, e);
    b.insert_invoice(&cycle(inv.clone())).await.unwrap();

    // Add a line to the draft.
    let mut extra = inv.lines[0].clone();
    extra.kind = InvoiceLineKind::Adjustment;
    extra.amount = dec!(5.00);
    inv.add_line(extra);
    assert_eq!(inv.totals.total, dec!(126.00));
    b.update_draft(&inv, Some(&["pii_9".to_string()]))
        .await
        .unwrap();
    let got = b.get_invoice("inv_1").await.unwrap().unwrap();
    assert_eq!(got.invoice, inv);
    assert_eq!(got.pending_items, vec!["pii_9".to_string()]);
    assert_eq!(got.kind, InvoiceKind::Cycle);

    let open = b.issue_invoice("inv_1", "INV", e, None).await.unwrap();
    assert_eq!(open.totals.amount_due, dec!(126.00));
    let err = b.update_draft(&inv, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = b
        .update_draft(&draft("inv_x", "acme", s, e), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    // Nothing changed.
    assert_eq!(b.get_invoice("inv_1").await.unwrap().unwrap().invoice, open);
}

async fn issuing_numbers_gapless_per_prefix_and_never_reuses(store: Arc<dyn Store>) {
    customers(&store, &["a", "b", "c", "d"]).await;
    let b = store.billing();
    let i1 = issued(&store, "inv_1", "a").await;
    assert_eq!(i1.number.as_deref(), Some("INV-000001"));
    assert_eq!(i1.status, InvoiceStatus::Open);
    assert_eq!(i1.issued_at, Some(nov().1));
    assert_eq!(i1.due_at, Some(ts("2026-12-31T00:00:00Z")));
    // Issuing again changes nothing and takes no number.
    let again = b
        .issue_invoice("inv_1", "INV", ts("2027-01-01T00:00:00Z"), None)
        .await
        .unwrap();
    assert_eq!(again, i1);
    // Voiding keeps the number; the next invoice takes the next one.
    let void = b
        .set_invoice_status("inv_1", InvoiceStatus::Void, ts("2026-12-02T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(void.number.as_deref(), Some("INV-000001"));
    assert_eq!(void.voided_at, Some(ts("2026-12-02T00:00:00Z")));
    let i2 = issued(&store, "inv_2", "b").await;
    assert_eq!(i2.number.as_deref(), Some("INV-000002"));
    // Another prefix has its own sequence.
    let (s, e) = nov();
    b.insert_invoice(&cycle(draft("inv_3", "c", s, e)))
        .await
        .unwrap();
    let i3 = b.issue_invoice("inv_3", "EU", e, None).await.unwrap();
    assert_eq!(i3.number.as_deref(), Some("EU-000001"));
    // A voided draft never gets a number.
    let mut d = cycle(draft("inv_4", "c", e, ts("2027-01-01T00:00:00Z")));
    d.kind = InvoiceKind::OffCycle;
    b.insert_invoice(&d).await.unwrap();
    b.set_invoice_status("inv_4", InvoiceStatus::Void, e)
        .await
        .unwrap();
    let err = b.issue_invoice("inv_4", "INV", e, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = b.issue_invoice("inv_x", "INV", e, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let i5 = issued(&store, "inv_5", "d").await;
    assert_eq!(i5.number.as_deref(), Some("INV-000003"));
}

async fn concurrent_issues_get_distinct_consecutive_numbers(store: Arc<dyn Store>) {
    let ids: Vec<String> = (0..24).map(|i| format!("c{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    customers(&store, &refs).await;
    let (s, e) = nov();
    for c in &ids {
        store
            .billing()
            .insert_invoice(&cycle(draft(&format!("inv_{c}"), c, s, e)))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for c in ids.clone() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Each invoice issued twice concurrently: still one number.
            let id = format!("inv_{c}");
            let a = store.billing().issue_invoice(&id, "INV", e, None);
            let b = store.billing().issue_invoice(&id, "INV", e, None);
            let (a, b) = tokio::join!(a, b);
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.number, b.number);
            a.number.unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=24).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected);
}

async fn invoices_written_issued_take_numbers_only_when_new(store: Arc<dyn Store>) {
    customers(&store, &["a", "b", "c"]).await;
    let b = store.billing();
    let (s, e) = nov();
    let due = ts("2026-12-31T00:00:00Z");
    let chunk = vec![
        cycle(draft("inv_a", "a", s, e)),
        cycle(draft("inv_b", "b", s, e)),
    ];
    let first = b
        .insert_issued_invoices(&chunk, "INV", e, Some(due))
        .await
        .unwrap();
    let numbers: Vec<_> = first.iter().map(|i| i.invoice.number.clone()).collect();
    assert_eq!(
        numbers,
        [
            Some("INV-000001".to_string()),
            Some("INV-000002".to_string())
        ]
    );
    assert!(
        first
            .iter()
            .all(|i| i.created && i.invoice.status == InvoiceStatus::Open)
    );
    assert_eq!(first[0].invoice.due_at, Some(due));
    // A rerun (new ids) finds them and takes no number; c is new.
    let rerun = vec![
        cycle(draft("inv_a2", "a", s, e)),
        cycle(draft("inv_c", "c", s, e)),
    ];
    let second = b
        .insert_issued_invoices(&rerun, "INV", e, Some(due))
        .await
        .unwrap();
    assert!(!second[0].created);
    assert_eq!(second[0].invoice.id, "inv_a");
    assert_eq!(second[1].invoice.number.as_deref(), Some("INV-000003"));
    assert_eq!(
        b.list_invoices(&InvoiceFilter::default())
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn status_changes_follow_the_lifecycle(store: Arc<dyn Store>) {
    customers(&store, &["a"]).await;
    let b = store.billing();
    let at = ts("2026-12-20T00:00:00Z");
    issued(&store, "inv_1", "a").await;
    let u = b
        .set_invoice_status("inv_1", InvoiceStatus::Uncollectible, at)
        .await
        .unwrap();
    assert_eq!(u.status, InvoiceStatus::Uncollectible);
    let p = b
        .set_invoice_status("inv_1", InvoiceStatus::Paid, at)
        .await
        .unwrap();
    assert_eq!((p.status, p.paid_at), (InvoiceStatus::Paid, Some(at)));
    // Same status: no-op; paid cannot be voided or go back.
    assert_eq!(
        b.set_invoice_status("inv_1", InvoiceStatus::Paid, ts("2027-01-01T00:00:00Z"))
            .await
            .unwrap(),
        p
    );
    for s in [
        InvoiceStatus::Void,
        InvoiceStatus::Open,
        InvoiceStatus::Draft,
        InvoiceStatus::Uncollectible,
    ] {
        let err = b.set_invoice_status("inv_1", s, at).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{s:?}: {err:?}");
    }
    let err = b
        .set_invoice_status("nope", InvoiceStatus::Void, at)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

async fn payments_add_up_and_repeat_idempotently(store: Arc<dyn Store>) {
    customers(&store, &["a"]).await;
    let b = store.billing();
    // A draft takes no payment.
    let (s, e) = nov();
    b.insert_invoice(&cycle(draft("inv_1", "a", s, e)))
        .await
        .unwrap();
    let err = b
        .record_payment(&payment("pay_0", "inv_1", "chq-0", dec!(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    b.issue_invoice("inv_1", "INV", e, None).await.unwrap();

    // 120.00 due: 50.00, then 70.00.
    let first = b
        .record_payment(&payment("pay_1", "inv_1", "chq-1", dec!(50.00)))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.invoice.status, InvoiceStatus::Open);
    assert_eq!(first.invoice.totals.amount_paid, dec!(50.00));
    assert_eq!(first.invoice.totals.amount_due, dec!(70.00));
    // The same reference again (a retried request): nothing more is paid.
    let repeat = b
        .record_payment(&payment("pay_1b", "inv_1", "chq-1", dec!(50.00)))
        .await
        .unwrap();
    assert!(!repeat.created);
    assert_eq!(repeat.payment.id, "pay_1");
    assert_eq!(repeat.invoice.totals.amount_paid, dec!(50.00));
    // Same reference, another amount: conflict.
    let err = b
        .record_payment(&payment("pay_1c", "inv_1", "chq-1", dec!(60.00)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    // More than is due: refused; another currency: refused.
    let err = b
        .record_payment(&payment("pay_2", "inv_1", "chq-2", dec!(70.01)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    let mut eur = payment("pay_2", "inv_1", "chq-2", dec!(70.00));
    eur.currency = "EUR".into();
    assert!(matches!(
        b.record_payment(&eur).await.unwrap_err(),
        StoreError::Refused(_)
    ));
    let last = b
        .record_payment(&payment("pay_2", "inv_1", "chq-2", dec!(70.00)))
        .await
        .unwrap();
    assert_eq!(last.invoice.status, InvoiceStatus::Paid);
    assert_eq!(last.invoice.totals.amount_due, Decimal::ZERO);
    assert_eq!(last.invoice.paid_at, Some(ts("2026-12-05T00:00:00Z")));

    let listed = b.payments("inv_1").await.unwrap();
    assert_eq!(
        listed,
        vec![
            payment("pay_1", "inv_1", "chq-1", dec!(50.00)),
            payment("pay_2", "inv_1", "chq-2", dec!(70.00))
        ]
    );
    let err = b
        .record_payment(&payment("pay_3", "nope", "chq-3", dec!(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    // Issuing and the payment that made it paid each wrote their event with
    // the change; the refused, repeated and partial payments wrote none.
    let mut events = store.notify().customer_events("a", 100).await.unwrap();
    events.sort_by_key(|e| e.seq);
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.object_key.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("invoice.issued", "invoice:inv_1"),
            ("invoice.paid", "invoice:inv_1")
        ]
    );
    assert_eq!(events[1].dedup_key.as_deref(), Some("invoice.paid|inv_1"));
    assert_eq!(events[1].payload["number"], json!("INV-000001"));
    assert_eq!(events[1].payload["amount_due"], json!("0"));
    assert_eq!(events[1].payload["total"], json!("120"));
    assert_eq!(events[1].payload["customer"], json!("a"));
    assert_eq!(events[1].created_at, ts("2026-12-05T00:00:00Z"));
}

async fn credit_notes_are_numbered_and_never_exceed_the_total(store: Arc<dyn Store>) {
    customers(&store, &["a"]).await;
    let b = store.billing();
    let inv = issued(&store, "inv_1", "a").await;
    let (n1, after1) = b
        .insert_credit_note(&note("cn_1", &inv, dec!(20.00)), "CN")
        .await
        .unwrap();
    assert_eq!(n1.number.as_deref(), Some("CN-000001"));
    assert_eq!(after1.totals.amount_credited, dec!(20.00));
    assert_eq!(after1.totals.amount_due, dec!(100.00));
    assert_eq!(after1.status, InvoiceStatus::Open);
    // 100.01 more would credit 120.01 of 120.00: refused, nothing numbered.
    let err = b
        .insert_credit_note(&note("cn_2", &inv, dec!(100.01)), "CN")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    // The rest: the invoice is fully credited, nothing is due, it is settled.
    let (n2, after2) = b
        .insert_credit_note(&note("cn_2", &inv, dec!(100.00)), "CN")
        .await
        .unwrap();
    assert_eq!(n2.number.as_deref(), Some("CN-000002"));
    assert_eq!(after2.totals.amount_credited, dec!(120.00));
    assert_eq!(after2.totals.amount_due, Decimal::ZERO);
    assert_eq!(after2.status, InvoiceStatus::Paid);
    let err = b
        .insert_credit_note(&note("cn_3", &inv, dec!(0.01)), "CN")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    let err = b
        .insert_credit_note(&note("cn_2", &inv, dec!(0.01)), "CN")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Refused(_) | StoreError::Conflict { .. }),
        "{err:?}"
    );
    assert_eq!(b.credit_notes("inv_1").await.unwrap(), vec![n1.clone(), n2]);
    assert_eq!(b.get_credit_note("cn_1").await.unwrap(), Some(n1));
    assert_eq!(b.get_credit_note("cn_9").await.unwrap(), None);
    assert_eq!(
        b.get_invoice("inv_1").await.unwrap().unwrap().invoice,
        after2
    );
    // A draft takes no credit note.
    let (s, e) = nov();
    let mut d = cycle(draft("inv_2", "a", s, e));
    d.kind = InvoiceKind::OffCycle;
    b.insert_invoice(&d).await.unwrap();
    let err = b
        .insert_credit_note(&note("cn_4", &d.invoice, dec!(1)), "CN")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    // The next note still takes the next number: no gap from refusals.
    customers(&store, &["b"]).await;
    let inv3 = issued(&store, "inv_3", "b").await;
    let (n3, _) = b
        .insert_credit_note(&note("cn_5", &inv3, dec!(1)), "CN")
        .await
        .unwrap();
    assert_eq!(n3.number.as_deref(), Some("CN-000003"));
}

async fn lists_filter_and_page(store: Arc<dyn Store>) {
    customers(&store, &["a", "b"]).await;
    let b = store.billing();
    let (s, e) = nov();
    let dec_end = ts("2027-01-01T00:00:00Z");
    b.insert_invoice(&cycle(draft("inv_1", "a", s, e)))
        .await
        .unwrap();
    b.insert_invoice(&cycle(draft("inv_2", "b", s, e)))
        .await
        .unwrap();
    b.insert_invoice(&cycle(draft("inv_3", "a", e, dec_end)))
        .await
        .unwrap();
    b.issue_invoice("inv_2", "INV", e, None).await.unwrap();
    let ids = |v: Vec<Invoice>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let all = b.list_invoices(&InvoiceFilter::default()).await.unwrap();
    assert_eq!(ids(all), ["inv_1", "inv_2", "inv_3"]);
    let f = InvoiceFilter {
        customer_id: Some("a".into()),
        ..InvoiceFilter::default()
    };
    assert_eq!(ids(b.list_invoices(&f).await.unwrap()), ["inv_1", "inv_3"]);
    let f = InvoiceFilter {
        status: Some(InvoiceStatus::Open),
        ..InvoiceFilter::default()
    };
    assert_eq!(ids(b.list_invoices(&f).await.unwrap()), ["inv_2"]);
    let f = InvoiceFilter {
        period_from: Some(s),
        period_to: Some(e),
        ..InvoiceFilter::default()
    };
    assert_eq!(ids(b.list_invoices(&f).await.unwrap()), ["inv_1", "inv_2"]);
    let f = InvoiceFilter {
        starting_after: Some("inv_1".into()),
        limit: 1,
        ..InvoiceFilter::default()
    };
    assert_eq!(ids(b.list_invoices(&f).await.unwrap()), ["inv_2"]);
    let f = InvoiceFilter {
        kind: Some(InvoiceKind::OffCycle),
        ..InvoiceFilter::default()
    };
    assert!(b.list_invoices(&f).await.unwrap().is_empty());
}

async fn provider_events_are_remembered_once(store: Arc<dyn Store>) {
    let b = store.billing();
    let at = ts("2026-12-01T00:00:00Z");
    assert!(
        b.remember_provider_event("stripe", "evt_1", at)
            .await
            .unwrap()
    );
    assert!(
        !b.remember_provider_event("stripe", "evt_1", at)
            .await
            .unwrap()
    );
    assert!(
        b.remember_provider_event("manual", "evt_1", at)
            .await
            .unwrap()
    );
    assert!(
        b.remember_provider_event("stripe", "evt_2", at)
            .await
            .unwrap()
    );
}

fn usage(
    customer: &str,
    feature: &str,
    at: Timestamp,
    allocation: &[(&str, Decimal)],
    props: serde_json::Value,
    billable: bool,
) -> WriteOp {
    let properties = match props {
        serde_json::Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    WriteOp::AppendUsage(NewUsageRecord {
        customer_id: customer.into(),
        feature: feature.into(),
        quantity: allocation.iter().map(|(_, q)| *q).sum(),
        timestamp: at,
        recorded_at: at,
        source: UsageSource::Consume,
        properties,
        billable,
        idempotency_key: None,
        allocation: allocation
            .iter()
            .map(|(b, q)| (b.to_string(), *q))
            .collect(),
        answer: json!({}),
    })
}

async fn usage_totals_sum_each_window_in_one_pass(store: Arc<dyn Store>) {
    let (s, e) = nov();
    let mid = ts("2026-11-10T00:00:00Z");
    let ops = vec![
        // before the period: not counted
        usage(
            "a",
            "minutes",
            ts("2026-10-31T23:59:59Z"),
            &[("plan", dec!(7))],
            json!({}),
            true,
        ),
        usage("a", "minutes", s, &[("plan", dec!(10))], json!({}), true),
        usage(
            "a",
            "minutes",
            ts("2026-11-05T00:00:00Z"),
            &[("plan", dec!(2.5))],
            json!({}),
            true,
        ),
        // free retry: not billed
        usage(
            "a",
            "minutes",
            ts("2026-11-05T00:00:00Z"),
            &[("plan", dec!(100))],
            json!({}),
            false,
        ),
        // after the plan change at `mid`: the second segment
        usage(
            "a",
            "minutes",
            mid,
            &[("plan", dec!(1)), ("overage", dec!(4))],
            json!({}),
            true,
        ),
        usage(
            "a",
            "tokens",
            ts("2026-11-20T00:00:00Z"),
            &[("plan", dec!(500))],
            json!({"model": "gpt-4o", "direction": "input", "user": "u1"}),
            true,
        ),
        usage(
            "a",
            "tokens",
            ts("2026-11-21T00:00:00Z"),
            &[("plan", dec!(300))],
            json!({"model": "gpt-4o", "direction": "input", "user": "u2"}),
            true,
        ),
        usage(
            "a",
            "tokens",
            ts("2026-11-22T00:00:00Z"),
            &[("grt_1", dec!(50))],
            json!({"model": "claude"}),
            true,
        ),
        // b's anniversary period starts on the 15th
        usage(
            "b",
            "minutes",
            ts("2026-11-14T00:00:00Z"),
            &[("plan", dec!(3))],
            json!({}),
            true,
        ),
        usage(
            "b",
            "minutes",
            ts("2026-11-15T00:00:00Z"),
            &[("emergency", dec!(8))],
            json!({}),
            true,
        ),
        // the period end is not in the period
        usage("a", "minutes", e, &[("plan", dec!(9))], json!({}), true),
        // a customer without a window
        usage("z", "minutes", mid, &[("plan", dec!(1))], json!({}), true),
    ];
    store.append_batch(&ops).await.unwrap();
    let no_dims = Arc::new(HashMap::new());
    let dims: Arc<HashMap<String, Vec<String>>> = Arc::new(HashMap::from([(
        "tokens".to_string(),
        vec!["model".to_string(), "direction".to_string()],
    )]));
    let windows = vec![
        UsageWindow {
            customer_id: "a".into(),
            from: s,
            to: mid,
            group_by: no_dims.clone(),
        },
        UsageWindow {
            customer_id: "a".into(),
            from: mid,
            to: e,
            group_by: dims,
        },
        UsageWindow {
            customer_id: "b".into(),
            from: ts("2026-11-15T00:00:00Z"),
            to: ts("2026-12-15T00:00:00Z"),
            group_by: no_dims,
        },
    ];
    let totals = store.billing().usage_totals(&windows).await.unwrap();
    assert_eq!(totals.len(), 3);
    let show = |w: &Vec<tollgate_core::billing::compute::UsageTotal>| {
        w.iter()
            .map(|t| {
                (
                    t.feature.clone(),
                    t.dimensions.clone().into_iter().collect::<Vec<_>>(),
                    t.buckets.clone().into_iter().collect::<Vec<_>>(),
                    t.records,
                )
            })
            .collect::<Vec<_>>()
    };
    let s = |x: &str| x.to_string();
    assert_eq!(
        show(&totals[0]),
        vec![(s("minutes"), vec![], vec![(s("plan"), dec!(12.5))], 2)]
    );
    assert_eq!(
        show(&totals[1]),
        vec![
            (
                s("minutes"),
                vec![],
                vec![(s("overage"), dec!(4)), (s("plan"), dec!(1))],
                1
            ),
            (
                s("tokens"),
                vec![(s("direction"), s("input")), (s("model"), s("gpt-4o"))],
                vec![(s("plan"), dec!(800))],
                2
            ),
            (
                s("tokens"),
                vec![(s("model"), s("claude"))],
                vec![(s("grt_1"), dec!(50))],
                1
            ),
        ]
    );
    assert_eq!(
        show(&totals[2]),
        vec![(s("minutes"), vec![], vec![(s("emergency"), dec!(8))], 1)]
    );
    assert!(store.billing().usage_totals(&[]).await.unwrap().is_empty());
}

async fn discounts_are_stored_listed_and_removed_per_customer(store: Arc<dyn Store>) {
    use tollgate_core::billing::discount::{CustomerDiscount, DiscountDuration, DiscountValue};

    customers(&store, &["a", "b"]).await;
    let b = store.billing();
    let discount = |id: &str, customer: &str, at: &str, value: DiscountValue| CustomerDiscount {
        id: id.into(),
        customer_id: customer.into(),
        description: CustomerDiscount::default_description(&value),
        value,
        duration: DiscountDuration::Repeating { periods: 3 },
        ends_at: Some(ts("2027-01-01T00:00:00Z")),
        created_at: ts(at),
    };
    let ten = discount(
        "dsc_2",
        "a",
        "2026-11-01T00:00:00Z",
        DiscountValue::Percent { percent: dec!(10) },
    );
    let five = discount(
        "dsc_1",
        "a",
        "2026-11-02T00:00:00Z",
        DiscountValue::Amount {
            amount: dec!(5.00),
            currency: Currency::USD,
        },
    );
    let other = discount("dsc_3", "b", "2026-10-01T00:00:00Z", ten.value.clone());
    for d in [&five, &ten, &other] {
        b.insert_discount(d).await.unwrap();
    }
    // Oldest first, every field back as written.
    assert_eq!(b.discounts("a").await.unwrap(), [ten.clone(), five.clone()]);
    assert_eq!(b.all_discounts().await.unwrap().len(), 3);
    // A duplicate id, an unknown customer.
    assert!(matches!(
        b.insert_discount(&ten).await,
        Err(StoreError::Conflict { .. })
    ));
    let ghost = discount("dsc_9", "ghost", "2026-11-01T00:00:00Z", ten.value.clone());
    assert!(matches!(
        b.insert_discount(&ghost).await,
        Err(StoreError::NotFound { .. })
    ));
    // Removed only for its own customer.
    assert!(!b.delete_discount("b", "dsc_2").await.unwrap());
    assert!(b.delete_discount("a", "dsc_2").await.unwrap());
    assert!(!b.delete_discount("a", "dsc_2").await.unwrap());
    assert_eq!(b.discounts("a").await.unwrap(), [five]);
    assert_eq!(b.discounts("b").await.unwrap(), [other]);
}

async fn idempotent_responses_are_kept_once_per_scope_and_key(store: Arc<dyn Store>) {
    let b = store.billing();
    let at = ts("2026-11-10T00:00:00Z");
    let scope = "subscription_change:acme";
    assert_eq!(b.idempotent_response(scope, "k1").await.unwrap(), None);
    let (req, first) = (json!({"plan": "pro"}), json!({"state": "applied", "n": 1}));
    assert!(
        b.save_idempotent_response(scope, "k1", &req, &first, at)
            .await
            .unwrap()
    );
    // The first answer stays.
    assert!(
        !b.save_idempotent_response(scope, "k1", &req, &json!({"n": 2}), at)
            .await
            .unwrap()
    );
    assert_eq!(
        b.idempotent_response(scope, "k1").await.unwrap(),
        Some((req.clone(), first))
    );
    // Keys are per scope.
    assert_eq!(
        b.idempotent_response("subscription_change:other", "k1")
            .await
            .unwrap(),
        None
    );
}

fn refund(
    id: &str,
    payment: &PaymentRecord,
    amount: Decimal,
    key: &str,
    note: &str,
) -> RefundRecord {
    RefundRecord {
        id: id.to_string(),
        invoice_id: payment.invoice_id.clone(),
        payment_id: payment.id.clone(),
        payment_reference: payment.reference.clone(),
        provider: payment.provider.clone(),
        reference: format!("re_{id}"),
        amount,
        currency: "USD".into(),
        idempotency_key: key.to_string(),
        credit_note_id: Some(note.to_string()),
        reason: None,
        created_at: ts("2026-12-10T00:00:00Z"),
    }
}

/// What `POST /v1/invoices/{id}/refund` writes, for one refund: the credit
/// note crediting it, then the refund (`false`: the key had already
/// refunded, and the first refund stands).
async fn refund_with_note(
    store: &Arc<dyn Store>,
    inv: &Invoice,
    r: &RefundRecord,
) -> Result<bool, StoreError> {
    let b = store.billing();
    let note_id = r.credit_note_id.clone().unwrap();
    b.insert_credit_note(&note(&note_id, inv, r.amount), "CN")
        .await?;
    b.insert_refund(r).await
}

async fn refunds_never_exceed_what_was_paid_and_a_key_refunds_once(store: Arc<dyn Store>) {
    customers(&store, &["a", "b"]).await;
    let b = store.billing();
    // 120.00 paid in two payments: 50.00 (chq-1) and 70.00 (chq-2).
    let inv = issued(&store, "inv_1", "a").await;
    let p1 = payment("pay_1", "inv_1", "chq-1", dec!(50.00));
    let p2 = payment("pay_2", "inv_1", "chq-2", dec!(70.00));
    b.record_payment(&p1).await.unwrap();
    let paid = b.record_payment(&p2).await.unwrap().invoice;
    assert_eq!(paid.status, InvoiceStatus::Paid);

    // 30.00 of chq-1 refunded with key k-1, credited by CN-000001.
    let first = refund("ref_1", &p1, dec!(30.00), "k-1", "cn_1");
    assert!(refund_with_note(&store, &inv, &first).await.unwrap());
    // The same key again (a retried request, with fresh ids): nothing is
    // written, and the invoice's one refund is the first, with its note.
    let replay = refund("ref_1b", &p1, dec!(30.00), "k-1", "cn_1b");
    assert!(!b.insert_refund(&replay).await.unwrap());
    let replay_other_amount = refund("ref_1c", &p1, dec!(5.00), "k-1", "cn_1c");
    assert!(!b.insert_refund(&replay_other_amount).await.unwrap());
    let listed = b.refunds("inv_1").await.unwrap();
    assert_eq!(listed, vec![first.clone()]);
    assert_eq!(listed[0].credit_note_id.as_deref(), Some("cn_1"));
    let notes = b.credit_notes("inv_1").await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].number.as_deref(), Some("CN-000001"));

    // chq-1 has 20.00 left to refund: 20.01 is refused, nothing written.
    let over = refund("ref_2", &p1, dec!(20.01), "k-2", "cn_x");
    let err = b.insert_refund(&over).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    assert_eq!(b.refunds("inv_1").await.unwrap().len(), 1);
    // Nor a refund of nothing, of a payment of another invoice, or of an
    // invoice that does not exist.
    let zero = refund("ref_0", &p1, dec!(0.00), "k-0", "cn_x");
    assert!(matches!(
        b.insert_refund(&zero).await.unwrap_err(),
        StoreError::Refused(_)
    ));
    let mut stranger = refund("ref_s", &p1, dec!(1.00), "k-s", "cn_x");
    stranger.payment_id = "pay_9".into();
    assert!(matches!(
        b.insert_refund(&stranger).await.unwrap_err(),
        StoreError::Refused(_)
    ));
    let mut nowhere = refund("ref_n", &p1, dec!(1.00), "k-n", "cn_x");
    nowhere.invoice_id = "nope".into();
    assert!(matches!(
        b.insert_refund(&nowhere).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));

    // The rest of chq-1 (20.00) and all of chq-2 (70.00): everything paid is
    // refunded and credited, 120.00; not a cent more, by refund or by note.
    let rest = refund("ref_2", &p1, dec!(20.00), "k-2", "cn_2");
    assert!(refund_with_note(&store, &inv, &rest).await.unwrap());
    let all_of_p2 = refund("ref_3", &p2, dec!(70.00), "k-3", "cn_3");
    assert!(refund_with_note(&store, &inv, &all_of_p2).await.unwrap());
    let more = refund("ref_4", &p2, dec!(0.01), "k-4", "cn_4");
    assert!(matches!(
        b.insert_refund(&more).await.unwrap_err(),
        StoreError::Refused(_)
    ));
    let err = b
        .insert_credit_note(&note("cn_4", &inv, dec!(0.01)), "CN")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    let refunds = b.refunds("inv_1").await.unwrap();
    let ids: Vec<&str> = refunds.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["ref_1", "ref_2", "ref_3"]);
    let refunded: Decimal = refunds.iter().map(|r| r.amount).sum();
    assert_eq!(refunded, dec!(120.00));
    let after = b.get_invoice("inv_1").await.unwrap().unwrap().invoice;
    assert_eq!(after.totals.amount_credited, dec!(120.00));
    assert_eq!(after.totals.amount_paid, dec!(120.00));

    // Keys are per invoice: k-1 refunds on another invoice.
    let inv2 = issued(&store, "inv_2", "b").await;
    let q = payment("pay_5", "inv_2", "chq-5", dec!(120.00));
    b.record_payment(&q).await.unwrap();
    let other = refund("ref_5", &q, dec!(10.00), "k-1", "cn_5");
    assert!(refund_with_note(&store, &inv2, &other).await.unwrap());
    assert_eq!(b.refunds("inv_2").await.unwrap(), vec![other]);
}
