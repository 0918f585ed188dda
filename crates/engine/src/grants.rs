//! Grants: extra units on top of a plan's allowance (emergency pools, top-ups,
//! promotional credits).
//!
//! Burn order (documented rule): a metered consume draws first from the plan's
//! own allowance for the window, then from the customer's active grants for
//! that feature in this order:
//! 1. `priority` ascending (lower numbers burn first);
//! 2. then the soonest `expires_at` first (grants without expiry last);
//! 3. then the oldest `effective_at`;
//! 4. then the grant id (lexicographic), so the order is total.
//!
//! A grant is active at `now` when `effective_at <= now < expires_at` and it is
//! not voided. What a grant has given is counted over its whole life, not per
//! usage window.

use std::cmp::Ordering;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tollgate_store::GrantRecord;

#[derive(Clone, Debug)]
pub(crate) struct GrantState {
    pub record: GrantRecord,
    /// Index of the grant's feature in the catalog.
    pub feature: usize,
    /// Quantity drawn so far (committed or in flight).
    pub drawn: Decimal,
}

impl GrantState {
    pub(crate) fn is_active(&self, now: Timestamp) -> bool {
        let r = &self.record;
        r.voided_at.is_none() && r.effective_at <= now && r.expires_at.is_none_or(|e| now < e)
    }

    pub(crate) fn remaining(&self) -> Decimal {
        (self.record.quantity - self.drawn).max(Decimal::ZERO)
    }
}

/// The burn order of two grants (see the module docs).
pub(crate) fn burn_order(a: &GrantRecord, b: &GrantRecord) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then_with(|| match (a.expires_at, b.expires_at) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.effective_at.cmp(&b.effective_at))
        .then_with(|| a.id.cmp(&b.id))
}

/// Inserts a grant keeping the list in burn order.
pub(crate) fn insert_sorted(list: &mut Vec<GrantState>, g: GrantState) {
    let pos = list
        .iter()
        .position(|x| burn_order(&g.record, &x.record) == Ordering::Less)
        .unwrap_or(list.len());
    list.insert(pos, g);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn g(id: &str, priority: i32, eff: &str, exp: Option<&str>) -> GrantState {
        GrantState {
            record: GrantRecord {
                id: id.into(),
                customer_id: "c".into(),
                feature: "f".into(),
                kind: "top_up".into(),
                quantity: dec!(10),
                priority,
                effective_at: eff.parse().unwrap(),
                expires_at: exp.map(|e| e.parse().unwrap()),
                voided_at: None,
                metadata: serde_json::Value::Null,
                created_at: eff.parse().unwrap(),
            },
            feature: 0,
            drawn: dec!(0),
        }
    }

    #[test]
    fn burn_order_is_priority_then_expiry_then_age_then_id() {
        let mut list = Vec::new();
        insert_sorted(&mut list, g("grt_e", 1, "2025-01-01T00:00:00Z", None));
        insert_sorted(
            &mut list,
            g(
                "grt_d",
                1,
                "2025-01-02T00:00:00Z",
                Some("2025-03-01T00:00:00Z"),
            ),
        );
        insert_sorted(
            &mut list,
            g(
                "grt_c",
                1,
                "2025-01-01T00:00:00Z",
                Some("2025-03-01T00:00:00Z"),
            ),
        );
        insert_sorted(
            &mut list,
            g(
                "grt_b",
                1,
                "2025-01-01T00:00:00Z",
                Some("2025-02-01T00:00:00Z"),
            ),
        );
        insert_sorted(&mut list, g("grt_a", 0, "2025-01-05T00:00:00Z", None));
        insert_sorted(
            &mut list,
            g(
                "grt_c2",
                1,
                "2025-01-01T00:00:00Z",
                Some("2025-03-01T00:00:00Z"),
            ),
        );
        let ids: Vec<_> = list.iter().map(|x| x.record.id.as_str()).collect();
        assert_eq!(ids, ["grt_a", "grt_b", "grt_c", "grt_c2", "grt_d", "grt_e"]);
    }
}
