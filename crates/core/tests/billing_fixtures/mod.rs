//! Shared fixtures of the billing semantics tests: a small catalog with a
//! Basic and a Pro plan whose prices, billing and charges each test chooses.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tollgate_core::billing::compute::{InvoiceInput, Segment, UsageTotal};
use tollgate_core::billing::{Party, TaxRule};
use tollgate_core::catalog::{Catalog, Plan, load_catalog};
use tollgate_core::money::Currency;
use tollgate_core::period::Period;

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn period(start: &str, end: &str) -> Period {
    Period::new(ts(start), ts(end)).unwrap()
}

/// April 2026, 30 days.
pub fn april() -> Period {
    period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z")
}

/// March 2026, 31 days.
pub fn march() -> Period {
    period("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
}

/// How the test catalog is built.
pub struct Spec<'s> {
    pub currency: &'s str,
    pub billing: &'s str,
    pub interval: &'s str,
    pub basic_price: &'s str,
    pub pro_price: &'s str,
    /// The body of each plan's `api_calls` charge (TOML lines after `metric`).
    pub basic_charge: &'s str,
    pub pro_charge: &'s str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            currency: "USD",
            billing: "in_advance",
            interval: "month",
            basic_price: "10.00",
            pro_price: "30.00",
            basic_charge: r#"included = 1000
price = { model = "per_unit", unit_price = "0.002" }"#,
            pro_charge: r#"included = 5000
price = { model = "per_unit", unit_price = "0.001" }"#,
        }
    }
}

/// Basic (tier 1): 1 location, no SSO, 2,000 hard queries with a 200-unit
/// emergency pool at 0.05, 10,000 soft api calls. Pro (tier 2): 10 locations,
/// SSO, 20,000 hard queries, 100,000 soft api calls.
pub fn catalog(spec: &Spec<'_>) -> Catalog {
    let Spec {
        currency,
        billing,
        interval,
        basic_price,
        pro_price,
        basic_charge,
        pro_charge,
    } = spec;
    let text = format!(
        r#"
[catalog]
name = "Test"
currency = "{currency}"

[features.api_calls]
kind = "metered"
unit = "call"
reset = "billing_period"

[features.queries]
kind = "metered"
unit = "query"
reset = "billing_period"

[features.locations]
kind = "gauge"
unit = "location"

[features.sso]
kind = "flag"

[plans.basic]
name = "Basic"
tier = 1
base_price = "{basic_price}"
interval = "{interval}"
billing = "{billing}"

[plans.basic.entitlements]
api_calls = {{ limit = 10000, enforcement = "soft" }}
queries = {{ limit = 2000, enforcement = "hard", emergency_allowance = 200, emergency_unit_price = "0.05" }}
locations = 1
sso = false

[[plans.basic.charges]]
metric = "api_calls"
{basic_charge}

[plans.pro]
name = "Pro"
tier = 2
base_price = "{pro_price}"
interval = "{interval}"
billing = "{billing}"

[plans.pro.entitlements]
api_calls = {{ limit = 100000, enforcement = "soft" }}
queries = {{ limit = 20000, enforcement = "hard" }}
locations = 10
sso = true

[[plans.pro.charges]]
metric = "api_calls"
{pro_charge}
"#
    );
    match load_catalog("test.toml", &text) {
        Ok(c) => c,
        Err(e) => panic!("test catalog does not load:\n{e}"),
    }
}

pub fn plan<'c>(catalog: &'c Catalog, key: &str) -> &'c Plan {
    catalog.plan(key).unwrap()
}

/// Ledger totals of one feature: `(bucket, quantity)` pairs.
pub fn usage(feature: &str, buckets: &[(&str, Decimal)]) -> UsageTotal {
    UsageTotal {
        feature: feature.to_string(),
        dimensions: BTreeMap::new(),
        buckets: buckets.iter().map(|(b, q)| (b.to_string(), *q)).collect(),
        records: buckets.len() as u64,
    }
}

pub fn segment<'a>(
    plan: &'a Plan,
    from: Timestamp,
    to: Timestamp,
    usage: Vec<UsageTotal>,
) -> Segment<'a> {
    Segment {
        plan,
        from,
        to,
        usage,
        canceled: false,
    }
}

/// A period close with no tax, discount or pending line.
pub fn input<'a>(
    currency: Currency,
    period: Period,
    segments: Vec<Segment<'a>>,
) -> InvoiceInput<'a> {
    InvoiceInput {
        invoice_id: "inv_test".to_string(),
        customer_id: "acme".to_string(),
        currency,
        period,
        nominal_period: None,
        segments,
        advance: None,
        pending: Vec::new(),
        discounts: Vec::new(),
        settled_until: None,
        earlier_usage: Vec::new(),
        earlier_parts: Vec::new(),
        earlier_minimum_credited: Default::default(),
        tax: TaxRule::none(),
        issuer: Party::default(),
        bill_to: Party::default(),
        created_at: period.end,
    }
}

/// `period` split at `at`: `first` api calls (plan bucket) on `before`, then
/// `second` on `after`.
pub fn changed_at<'a>(
    currency: Currency,
    period: Period,
    at: Timestamp,
    (before, first): (&'a Plan, Decimal),
    (after, second): (&'a Plan, Decimal),
) -> InvoiceInput<'a> {
    let calls = |q: Decimal| vec![usage("api_calls", &[("plan", q)])];
    input(
        currency,
        period,
        vec![
            segment(before, period.start, at, calls(first)),
            segment(after, at, period.end, calls(second)),
        ],
    )
}

/// One plan for the whole of `period`.
pub fn whole<'a>(
    currency: Currency,
    period: Period,
    plan: &'a Plan,
    usage: Vec<UsageTotal>,
) -> InvoiceInput<'a> {
    input(
        currency,
        period,
        vec![segment(plan, period.start, period.end, usage)],
    )
}
