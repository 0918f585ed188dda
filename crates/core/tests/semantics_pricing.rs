//! Billing semantics of price models and quotes, with worked numbers.
//! Each `semantics_*` test is referenced from `docs/billing-semantics.md`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::money::{Currency, Money};
use tollgate_core::pricing::{
    BaseFee, Charge, ChargePrice, DimensionPrice, Dimensional, LineKind, PriceModel, PricingError,
    Quote, QuoteError, Tier, UsageQuantity, quote,
};

// ---------- helpers ----------

fn tier(up_to: Option<Decimal>, unit_price: Decimal, flat_fee: Decimal) -> Tier {
    Tier {
        up_to,
        unit_price,
        flat_fee,
    }
}

/// 0–1,000 free, 1,001–10,000 at 0.002, above 10,000 at 0.001.
fn example_tiers() -> Vec<Tier> {
    vec![
        tier(Some(dec!(1000)), dec!(0), dec!(0)),
        tier(Some(dec!(10000)), dec!(0.002), dec!(0)),
        tier(None, dec!(0.001), dec!(0)),
    ]
}

fn per_unit(unit_price: Decimal) -> PriceModel {
    PriceModel::PerUnit { unit_price }
}

fn charge(key: &str, price: PriceModel) -> Charge {
    Charge {
        key: key.into(),
        metric: key.into(),
        display_name: key.replace('_', " "),
        included: Decimal::ZERO,
        price: ChargePrice::Single(price),
        minimum: None,
    }
}

fn usage(metric: &str, quantity: Decimal) -> UsageQuantity {
    UsageQuantity {
        metric: metric.into(),
        dimensions: BTreeMap::new(),
        quantity,
    }
}

fn usage_in(metric: &str, dims: &[(&str, &str)], quantity: Decimal) -> UsageQuantity {
    UsageQuantity {
        metric: metric.into(),
        dimensions: dims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        quantity,
    }
}

fn amount(model: &PriceModel, quantity: Decimal) -> Decimal {
    model.amount_for(quantity).unwrap().amount
}

fn amounts(q: &Quote) -> Vec<String> {
    q.lines
        .iter()
        .map(|l| l.amount.amount.to_string())
        .collect()
}

fn when(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// LLM tokens priced per model and direction (USD per token).
fn llm_tokens_charge() -> Charge {
    let price = |model: &str, direction: &str, per_million: Decimal| DimensionPrice {
        when: when(&[("model", model), ("direction", direction)]),
        model: per_unit(per_million / dec!(1000000)),
    };
    Charge {
        key: "llm_tokens".into(),
        metric: "tokens".into(),
        display_name: "LLM tokens".into(),
        included: Decimal::ZERO,
        price: ChargePrice::Dimensional(Dimensional {
            group_by: vec!["model".into(), "direction".into()],
            prices: vec![
                price("gpt-4o", "input", dec!(2.50)),
                price("gpt-4o", "output", dec!(10)),
                price("claude-sonnet", "input", dec!(3)),
                price("claude-sonnet", "output", dec!(15)),
            ],
            default: None,
        }),
        minimum: None,
    }
}

// ---------- one example per model ----------

#[test]
fn semantics_per_unit_prices_every_unit() {
    let model = per_unit(dec!(0.004));
    assert_eq!(amount(&model, dec!(50000)), dec!(200));
    // Fractional quantities are priced exactly: 12.5 minutes × 0.004 = 0.05.
    assert_eq!(amount(&model, dec!(12.5)), dec!(0.05));
}

#[test]
fn semantics_package_counts_started_packages() {
    let model = PriceModel::Package {
        package_size: dec!(1000),
        package_price: dec!(0.50),
    };
    let priced = model.amount_for(dec!(2001)).unwrap();
    assert_eq!(priced.tiers[0].packages, Some(dec!(3)));
    assert_eq!(priced.amount, dec!(1.50));
    assert_eq!(amount(&model, dec!(2000)), dec!(1.00)); // exactly 2 packages
    assert_eq!(amount(&model, dec!(0.1)), dec!(0.50)); // a started package is a package
    let zero = model.amount_for(dec!(0)).unwrap();
    assert_eq!(
        (zero.amount, zero.tiers[0].packages),
        (dec!(0), Some(dec!(0)))
    );
}

#[test]
fn semantics_graduated_prices_the_units_in_each_tier() {
    let model = PriceModel::Graduated {
        tiers: example_tiers(),
    };
    let priced = model.amount_for(dec!(12500)).unwrap();
    // 1,000 × 0 + 9,000 × 0.002 + 2,500 × 0.001 = 0 + 18 + 2.50
    let rows: Vec<_> = priced
        .tiers
        .iter()
        .map(|t| (t.tier_index, t.from, t.to, t.units, t.amount))
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, dec!(0), Some(dec!(1000)), dec!(1000), dec!(0)),
            (1, dec!(1000), Some(dec!(10000)), dec!(9000), dec!(18)),
            (2, dec!(10000), None, dec!(2500), dec!(2.5)),
        ]
    );
    assert_eq!(priced.amount, dec!(20.50));
}

#[test]
fn semantics_volume_prices_all_units_at_the_tier_reached() {
    let model = PriceModel::Volume {
        tiers: example_tiers(),
    };
    let priced = model.amount_for(dec!(12500)).unwrap();
    // 12,500 is in the third tier: all 12,500 units × 0.001.
    assert_eq!(priced.tiers.len(), 1);
    assert_eq!(priced.tiers[0].tier_index, 2);
    assert_eq!(priced.tiers[0].units, dec!(12500));
    assert_eq!(priced.amount, dec!(12.50));
}

// ---------- tier edges ----------

#[test]
fn semantics_graduated_tier_edges_are_inclusive() {
    let model = PriceModel::Graduated {
        tiers: example_tiers(),
    };
    let tiers_entered = |q| model.amount_for(q).unwrap().tiers.len();
    // 1,000 units: all in the free tier; unit 1,001 is the first paid one.
    assert_eq!(
        (amount(&model, dec!(1000)), tiers_entered(dec!(1000))),
        (dec!(0), 1)
    );
    assert_eq!(
        (amount(&model, dec!(1001)), tiers_entered(dec!(1001))),
        (dec!(0.002), 2)
    );
    // 10,000 units: 9,000 × 0.002 = 18; unit 10,001 is priced at 0.001.
    assert_eq!(
        (amount(&model, dec!(10000)), tiers_entered(dec!(10000))),
        (dec!(18), 2)
    );
    assert_eq!(
        (amount(&model, dec!(10001)), tiers_entered(dec!(10001))),
        (dec!(18.001), 3)
    );
}

#[test]
fn semantics_volume_tier_edges_are_inclusive() {
    let model = PriceModel::Volume {
        tiers: example_tiers(),
    };
    let tier_of = |q| model.amount_for(q).unwrap().tiers[0].tier_index;
    assert_eq!(
        (amount(&model, dec!(1000)), tier_of(dec!(1000))),
        (dec!(0), 0)
    );
    assert_eq!(
        (amount(&model, dec!(1001)), tier_of(dec!(1001))),
        (dec!(2.002), 1)
    );
    assert_eq!(
        (amount(&model, dec!(10000)), tier_of(dec!(10000))),
        (dec!(20), 1)
    );
    assert_eq!(
        (amount(&model, dec!(10001)), tier_of(dec!(10001))),
        (dec!(10.001), 2)
    );
}

#[test]
fn semantics_volume_can_drop_at_a_tier_edge() {
    // Real-world volume pricing: crossing into a cheaper tier reprices every unit,
    // so 10,001 units cost less than 10,000.
    let c = charge(
        "api_calls",
        PriceModel::Volume {
            tiers: example_tiers(),
        },
    );
    let at = |q| {
        quote(
            Currency::USD,
            None,
            std::slice::from_ref(&c),
            &[usage("api_calls", q)],
        )
    };
    assert_eq!(at(dec!(10000)).unwrap().total.amount.to_string(), "20.00");
    assert_eq!(at(dec!(10001)).unwrap().total.amount.to_string(), "10.00");
}

#[test]
fn semantics_tier_flat_fees() {
    // Graduated: first 10 seats for a flat 100, then 8 per seat.
    let seats = PriceModel::Graduated {
        tiers: vec![
            tier(Some(dec!(10)), dec!(0), dec!(100)),
            tier(None, dec!(8), dec!(0)),
        ],
    };
    assert_eq!(amount(&seats, dec!(0)), dec!(0)); // no tier entered, no flat fee
    assert_eq!(amount(&seats, dec!(1)), dec!(100));
    assert_eq!(amount(&seats, dec!(10)), dec!(100));
    assert_eq!(amount(&seats, dec!(11)), dec!(108));
    // Volume: only the flat fee of the tier the quantity falls in.
    let volume = PriceModel::Volume {
        tiers: vec![
            tier(Some(dec!(10)), dec!(5), dec!(0)),
            tier(None, dec!(4), dec!(20)),
        ],
    };
    assert_eq!(amount(&volume, dec!(10)), dec!(50)); // 10 × 5
    assert_eq!(amount(&volume, dec!(11)), dec!(64)); // 11 × 4 + 20
}

#[test]
fn semantics_quantity_zero_costs_nothing() {
    let with_fees = vec![
        tier(Some(dec!(10)), dec!(1), dec!(5)),
        tier(None, dec!(1), dec!(7)),
    ];
    for model in [
        per_unit(dec!(3)),
        PriceModel::Package {
            package_size: dec!(100),
            package_price: dec!(9),
        },
        PriceModel::Graduated {
            tiers: with_fees.clone(),
        },
        PriceModel::Volume { tiers: with_fees },
    ] {
        assert_eq!(amount(&model, dec!(0)), dec!(0), "{model:?}");
    }
}

#[test]
fn semantics_negative_quantity_is_an_error() {
    assert_eq!(
        per_unit(dec!(1)).amount_for(dec!(-1)),
        Err(PricingError::NegativeQuantity(dec!(-1)))
    );
    // In a quote: corrections may be negative, but a priced total may not.
    let c = charge("calls", per_unit(dec!(1)));
    let q = quote(
        Currency::USD,
        None,
        std::slice::from_ref(&c),
        &[usage("calls", dec!(5)), usage("calls", dec!(-2))],
    )
    .unwrap();
    assert_eq!(q.total.amount, dec!(3));
    let err = quote(Currency::USD, None, &[c], &[usage("calls", dec!(-2))]).unwrap_err();
    assert!(matches!(
        err,
        QuoteError::Pricing {
            source: PricingError::NegativeQuantity(_),
            ..
        }
    ));
}

// ---------- included units, minimums ----------

#[test]
fn semantics_included_units_are_free() {
    let mut minutes = charge("minutes", per_unit(dec!(0.004)));
    minutes.included = dec!(1000);
    let q = quote(
        Currency::USD,
        None,
        std::slice::from_ref(&minutes),
        &[usage("minutes", dec!(50000))],
    )
    .unwrap();
    let line = &q.lines[0];
    assert_eq!(
        (line.quantity, line.included, line.billable_quantity),
        (dec!(50000), dec!(1000), dec!(49000))
    );
    assert_eq!(line.amount.amount.to_string(), "196.00"); // 49,000 × 0.004
    // Below the allowance: all included, nothing billed.
    let q = quote(
        Currency::USD,
        None,
        &[minutes],
        &[usage("minutes", dec!(600))],
    )
    .unwrap();
    assert_eq!(
        (q.lines[0].included, q.lines[0].billable_quantity),
        (dec!(600), dec!(0))
    );
    assert_eq!(q.total.amount.to_string(), "0.00");
    // With tiers, included units come off before the tiers count:
    // 12,500 − 500 = 12,000 → 1,000 × 0 + 9,000 × 0.002 + 2,000 × 0.001 = 20.00.
    let mut tiered = charge(
        "calls",
        PriceModel::Graduated {
            tiers: example_tiers(),
        },
    );
    tiered.included = dec!(500);
    let q = quote(
        Currency::USD,
        None,
        &[tiered],
        &[usage("calls", dec!(12500))],
    )
    .unwrap();
    assert_eq!(q.total.amount.to_string(), "20.00");
}

#[test]
fn semantics_minimum_tops_up_a_charge() {
    let mut calls = charge("api_calls", per_unit(dec!(0.01)));
    calls.minimum = Some(dec!(5.00));
    let run = |q| {
        quote(
            Currency::USD,
            None,
            std::slice::from_ref(&calls),
            &[usage("api_calls", q)],
        )
        .unwrap()
    };

    // 120 calls = 1.20, topped up by 3.80 to the 5.00 minimum.
    let q = run(dec!(120));
    assert_eq!(amounts(&q), ["1.20", "3.80"]);
    assert_eq!(q.lines[1].kind, LineKind::Minimum);
    assert_eq!(q.lines[1].charge.as_deref(), Some("api_calls"));
    assert_eq!(q.total.amount.to_string(), "5.00");
    // 800 calls = 8.00: above the minimum, no minimum line.
    let q = run(dec!(800));
    assert_eq!(amounts(&q), ["8.00"]);
    // No usage at all: a 0.00 line and the full minimum.
    let q = run(dec!(0));
    assert_eq!(amounts(&q), ["0.00", "5.00"]);
}

// ---------- dimensional pricing ----------

#[test]
fn semantics_dimensional_llm_tokens() {
    let usage = [
        usage_in(
            "tokens",
            &[("model", "gpt-4o"), ("direction", "input")],
            dec!(1000000),
        ),
        // Entries of the same group add up; properties not in group_by are ignored.
        usage_in(
            "tokens",
            &[
                ("model", "gpt-4o"),
                ("direction", "input"),
                ("user", "u_42"),
            ],
            dec!(200000),
        ),
        usage_in(
            "tokens",
            &[("model", "gpt-4o"), ("direction", "output")],
            dec!(300000),
        ),
        usage_in(
            "tokens",
            &[("model", "claude-sonnet"), ("direction", "input")],
            dec!(500000),
        ),
        usage_in(
            "tokens",
            &[("model", "claude-sonnet"), ("direction", "output")],
            dec!(100000),
        ),
    ];
    let q = quote(Currency::USD, None, &[llm_tokens_charge()], &usage).unwrap();
    let lines: Vec<_> = q
        .lines
        .iter()
        .map(|l| {
            (
                l.description.as_str(),
                l.quantity,
                l.amount.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (
                "LLM tokens (model=claude-sonnet, direction=input)",
                dec!(500000),
                "1.50".to_string()
            ),
            (
                "LLM tokens (model=claude-sonnet, direction=output)",
                dec!(100000),
                "1.50".to_string()
            ),
            (
                "LLM tokens (model=gpt-4o, direction=input)",
                dec!(1200000),
                "3.00".to_string()
            ),
            (
                "LLM tokens (model=gpt-4o, direction=output)",
                dec!(300000),
                "3.00".to_string()
            ),
        ]
    );
    assert_eq!(
        q.lines[2].dimensions,
        when(&[("model", "gpt-4o"), ("direction", "input")])
    );
    assert_eq!(q.total.amount.to_string(), "9.00");
}

#[test]
fn semantics_dimensional_unmatched_and_missing_properties() {
    let mut c = llm_tokens_charge();
    let usage = [
        usage_in(
            "tokens",
            &[("model", "llama-3"), ("direction", "input")],
            dec!(1000000),
        ),
        usage_in("tokens", &[("model", "gpt-4o")], dec!(1000000)), // no direction
    ];
    // No price matches llama-3 and there is no default: an error, never a silent 0.
    let err = quote(Currency::USD, None, std::slice::from_ref(&c), &usage).unwrap_err();
    assert!(matches!(err, QuoteError::NoPriceForGroup { .. }), "{err:?}");

    // With a default of $1/1M, both groups are priced by it; the missing
    // property is its own group, shown as (none) and absent from `dimensions`.
    if let ChargePrice::Dimensional(d) = &mut c.price {
        d.default = Some(per_unit(dec!(0.000001)));
    }
    let q = quote(Currency::USD, None, &[c], &usage).unwrap();
    assert_eq!(
        q.lines[0].description,
        "LLM tokens (model=gpt-4o, direction=(none))"
    );
    assert_eq!(q.lines[0].dimensions, when(&[("model", "gpt-4o")]));
    assert_eq!(
        q.lines[1].description,
        "LLM tokens (model=llama-3, direction=input)"
    );
    assert_eq!(amounts(&q), ["1.00", "1.00"]);
}

// ---------- the quote ----------

#[test]
fn semantics_every_charge_gets_a_line_and_unpriced_usage_is_listed() {
    let charges = [
        charge("minutes", per_unit(dec!(0.004))),
        charge("storage_gb", per_unit(dec!(0.10))),
        llm_tokens_charge(),
    ];
    let q = quote(
        Currency::USD,
        None,
        &charges,
        &[usage("minutes", dec!(1000)), usage("snapshots", dec!(12))],
    )
    .unwrap();
    assert_eq!(amounts(&q), ["4.00", "0.00", "0.00"]);
    assert_eq!(q.lines[2].description, "LLM tokens");
    assert_eq!(q.unpriced_metrics, ["snapshots"]);
}

#[test]
fn semantics_jpy_rounds_each_line_to_whole_yen() {
    // 1,001 × 0.5 = 500.5 → 501 and 601 × 0.5 = 300.5 → 301 (half away from
    // zero). The total is the sum of the rounded lines: 802, not round(801.0).
    let charges = [
        charge("calls", per_unit(dec!(0.5))),
        charge("exports", per_unit(dec!(0.5))),
    ];
    let q = quote(
        Currency::JPY,
        None,
        &charges,
        &[usage("calls", dec!(1001)), usage("exports", dec!(601))],
    )
    .unwrap();
    let unrounded: Vec<_> = q.lines.iter().map(|l| l.unrounded).collect();
    assert_eq!(unrounded, [dec!(500.5), dec!(300.5)]);
    assert_eq!(amounts(&q), ["501", "301"]);
    assert_eq!(q.total, Money::new(dec!(802), Currency::JPY));
    assert_eq!(q.total.amount.to_string(), "802");
}

#[test]
fn semantics_kwd_rounds_each_line_to_three_decimals() {
    // 1,001 × 0.0015 = 1.5015 → 1.502; 333 × 0.0025 = 0.8325 → 0.833.
    let charges = [
        charge("calls", per_unit(dec!(0.0015))),
        charge("exports", per_unit(dec!(0.0025))),
    ];
    let q = quote(
        Currency::KWD,
        None,
        &charges,
        &[usage("calls", dec!(1001)), usage("exports", dec!(333))],
    )
    .unwrap();
    assert_eq!(amounts(&q), ["1.502", "0.833"]);
    assert_eq!(q.total.amount.to_string(), "2.335");
}

fn pulse_pro() -> (BaseFee, Vec<Charge>) {
    let base = BaseFee {
        description: "Pulse Pro (monthly)".into(),
        amount: Money::new(dec!(49), Currency::USD),
    };
    let charges = vec![
        charge("participant_minutes", per_unit(dec!(0.004))),
        charge("egress_minutes", per_unit(dec!(0.012))),
        charge("storage_gb", per_unit(dec!(0.10))),
        charge("bandwidth_gb", per_unit(dec!(0.05))),
        // $0.001 per 1,000 requests, prorated per request.
        charge("api_requests", per_unit(dec!(0.000001))),
    ];
    (base, charges)
}

#[test]
fn semantics_pulse_pro_invoice_example() {
    let (base, charges) = pulse_pro();
    let usage = [
        usage("participant_minutes", dec!(50000)),
        usage("egress_minutes", dec!(5000)),
        usage("storage_gb", dec!(50)),
        usage("bandwidth_gb", dec!(500)),
        usage("api_requests", dec!(500000)),
    ];
    let q = quote(Currency::USD, Some(base), &charges, &usage).unwrap();
    assert_eq!(
        amounts(&q),
        ["49.00", "200.00", "60.00", "5.00", "25.00", "0.50"]
    );
    assert_eq!(q.lines[0].kind, LineKind::Base);
    assert_eq!(q.total, Money::new(dec!(339.50), Currency::USD));
    assert_eq!(q.total.amount.to_string(), "339.50");
    assert!(q.unpriced_metrics.is_empty());
}

#[test]
fn semantics_quote_serializes_money_as_decimal_strings() {
    let (base, charges) = pulse_pro();
    let q = quote(
        Currency::USD,
        Some(base),
        &charges,
        &[usage("storage_gb", dec!(50))],
    )
    .unwrap();
    let json = serde_json::to_string(&q).unwrap();
    assert!(
        json.contains(r#""total":{"amount":"54.00","currency":"USD"}"#),
        "{json}"
    );
    assert!(json.contains(r#""kind":"base""#));
    assert!(json.contains(r#""unit_price":"0.10""#));
    let back: Quote = serde_json::from_str(&json).unwrap();
    assert_eq!(back, q);
    // Charges round-trip too, single-model and dimensional alike.
    for c in [charges[0].clone(), llm_tokens_charge()] {
        let back: Charge = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}

#[test]
fn semantics_quote_rejects_a_base_fee_in_another_currency() {
    let base = BaseFee {
        description: "Pro".into(),
        amount: Money::new(dec!(49), Currency::EUR),
    };
    assert_eq!(
        quote(Currency::USD, Some(base), &[], &[]),
        Err(QuoteError::CurrencyMismatch {
            expected: Currency::USD,
            found: Currency::EUR
        })
    );
}

// ---------- validation ----------

#[test]
fn semantics_price_model_validation() {
    let fields =
        |m: PriceModel| -> Vec<String> { m.validate().into_iter().map(|(f, _)| f).collect() };
    assert!(
        fields(PriceModel::Graduated {
            tiers: example_tiers()
        })
        .is_empty()
    );
    assert_eq!(fields(PriceModel::Graduated { tiers: vec![] }), ["tiers"]);
    assert_eq!(
        fields(PriceModel::Volume {
            tiers: vec![
                tier(Some(dec!(1000)), dec!(1), dec!(0)),
                tier(Some(dec!(1000)), dec!(1), dec!(0)), // not increasing
                tier(None, dec!(-1), dec!(-2)),           // negative prices
            ],
        }),
        ["tiers[1].up_to", "tiers[2].unit_price", "tiers[2].flat_fee"]
    );
    assert_eq!(
        fields(PriceModel::Graduated {
            tiers: vec![
                tier(None, dec!(1), dec!(0)),
                tier(Some(dec!(5)), dec!(1), dec!(0))
            ],
        }),
        ["tiers[0].up_to", "tiers[1].up_to"] // only the last may be, and must be, unbounded
    );
    assert_eq!(
        fields(PriceModel::Graduated {
            tiers: vec![
                tier(Some(dec!(0)), dec!(1), dec!(0)),
                tier(None, dec!(1), dec!(0))
            ],
        }),
        ["tiers[0].up_to"]
    );
    assert_eq!(
        fields(PriceModel::Package {
            package_size: dec!(0),
            package_price: dec!(-1)
        }),
        ["package_price", "package_size"]
    );
    assert_eq!(fields(per_unit(dec!(-0.01))), ["unit_price"]);
    // amount_for refuses an invalid model instead of dividing by zero.
    assert!(matches!(
        PriceModel::Package {
            package_size: dec!(0),
            package_price: dec!(1)
        }
        .amount_for(dec!(5)),
        Err(PricingError::InvalidModel { .. })
    ));
}

#[test]
fn semantics_charge_validation() {
    let fields = |c: &Charge| -> Vec<String> { c.validate().into_iter().map(|(f, _)| f).collect() };
    let mut c = charge("calls", PriceModel::Graduated { tiers: vec![] });
    c.included = dec!(-1);
    c.minimum = Some(dec!(-5));
    assert_eq!(fields(&c), ["included", "minimum", "price.tiers"]);

    let mut llm = llm_tokens_charge();
    assert!(fields(&llm).is_empty());
    llm.included = dec!(1000);
    if let ChargePrice::Dimensional(d) = &mut llm.price {
        d.prices[1].when.insert("region".into(), "eu".into());
        d.prices[2].model = per_unit(dec!(-3));
        d.prices.push(d.prices[0].clone());
        d.default = Some(PriceModel::Volume { tiers: vec![] });
        d.group_by.push("model".into());
    }
    assert_eq!(
        fields(&llm),
        [
            "included",
            "price.group_by[2]",
            "price.prices[1].when.region",
            "price.prices[2].model.unit_price",
            "price.prices[4].when",
            "price.default.tiers",
        ]
    );
    // An invalid charge makes the quote fail with the field named.
    let err = quote(Currency::USD, None, &[c], &[]).unwrap_err();
    assert!(
        matches!(&err, QuoteError::InvalidCharge { charge, field, .. } if charge == "calls" && field == "included"),
        "{err:?}"
    );
}

// ---------- properties ----------

/// A valid tier table: 1–5 tiers of random widths, prices 0–0.9999, fees 0–49.99.
fn tier_table() -> impl Strategy<Value = Vec<Tier>> {
    prop::collection::vec((1i64..5_000, 0i64..10_000, 0i64..5_000), 1..6).prop_map(|rows| {
        let n = rows.len();
        let mut up_to = Decimal::ZERO;
        rows.into_iter()
            .enumerate()
            .map(|(i, (width, price, fee))| {
                up_to += Decimal::from(width);
                tier(
                    (i + 1 < n).then_some(up_to),
                    Decimal::new(price, 4),
                    Decimal::new(fee, 2),
                )
            })
            .collect()
    })
}

fn quantity() -> impl Strategy<Value = Decimal> {
    (0i64..3_000_000, 0u32..3).prop_map(|(m, scale)| Decimal::new(m, scale))
}

proptest! {
    /// Graduated pricing never decreases as quantity grows (any valid tiers), and
    /// its breakdown adds up to the quantity and the amount.
    #[test]
    fn semantics_prop_graduated_is_monotone(tiers in tier_table(), a in quantity(), b in quantity()) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let model = PriceModel::Graduated { tiers };
        let p_lo = model.amount_for(lo).unwrap();
        let p_hi = model.amount_for(hi).unwrap();
        prop_assert!(p_lo.amount <= p_hi.amount, "{} at {lo} > {} at {hi}", p_lo.amount, p_hi.amount);
        prop_assert_eq!(p_hi.tiers.iter().map(|t| t.units).sum::<Decimal>(), hi);
        prop_assert_eq!(p_hi.tiers.iter().map(|t| t.amount).sum::<Decimal>(), p_hi.amount);
    }

    /// Volume pricing never decreases within one tier, and a quantity on a tier's
    /// `up_to` belongs to that tier.
    #[test]
    fn semantics_prop_volume_is_monotone_within_a_tier(
        tiers in tier_table(), pick in 0usize..10, a in 0u32..1000, b in 0u32..1000,
    ) {
        let t = pick % tiers.len();
        let from = if t == 0 { Decimal::ZERO } else { tiers[t - 1].up_to.unwrap() };
        let to = tiers[t].up_to.unwrap_or(from + dec!(10000));
        // Two quantities in (from, to]: from + (to − from) × (k + 1) / 1000.
        let at = |k: u32| from + (to - from) * Decimal::from(k + 1) / dec!(1000);
        let (lo, hi) = (at(a.min(b)), at(a.max(b)));
        let model = PriceModel::Volume { tiers };
        let p_lo = model.amount_for(lo).unwrap();
        let p_hi = model.amount_for(hi).unwrap();
        prop_assert_eq!(p_lo.tiers[0].tier_index, t);
        prop_assert_eq!(p_hi.tiers[0].tier_index, t);
        prop_assert!(p_lo.amount <= p_hi.amount);
        // The tier's own upper edge is in the tier.
        prop_assert_eq!(model.amount_for(to).unwrap().tiers[0].tier_index, t);
    }

    /// Volume pricing never decreases overall when unit prices and flat fees
    /// both never decrease from one tier to the next.
    #[test]
    fn semantics_prop_volume_is_monotone_with_non_decreasing_tiers(
        mut tiers in tier_table(), a in quantity(), b in quantity(),
    ) {
        let mut prices: Vec<_> = tiers.iter().map(|t| t.unit_price).collect();
        let mut fees: Vec<_> = tiers.iter().map(|t| t.flat_fee).collect();
        prices.sort();
        fees.sort();
        for ((t, p), f) in tiers.iter_mut().zip(prices).zip(fees) {
            t.unit_price = p;
            t.flat_fee = f;
        }
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let model = PriceModel::Volume { tiers };
        prop_assert!(amount(&model, lo) <= amount(&model, hi));
    }

    /// Package pricing charges ceil(quantity / size) packages, exactly.
    #[test]
    fn semantics_prop_package_is_ceil(q in 0i64..10_000_000, size in 1i64..50_000, price in 0i64..10_000) {
        // quantity q/100, package size size/10: q/100 ÷ size/10 = q / (10 × size).
        let model = PriceModel::Package {
            package_size: Decimal::new(size, 1),
            package_price: Decimal::new(price, 2),
        };
        let priced = model.amount_for(Decimal::new(q, 2)).unwrap();
        let expected = (q + 10 * size - 1) / (10 * size);
        prop_assert_eq!(priced.tiers[0].packages, Some(Decimal::from(expected)));
        prop_assert_eq!(priced.amount, Decimal::from(expected) * Decimal::new(price, 2));
    }

    /// Dimension groups are priced independently: quoting usage of disjoint
    /// groups together gives exactly the sum of quoting each part, unrounded and
    /// rounded.
    #[test]
    fn semantics_prop_dimensional_disjoint_groups_add_up_exactly(
        entries in prop::collection::vec((0usize..4, 0i64..5_000_000), 0..12),
        in_a in prop::collection::vec(any::<bool>(), 4),
    ) {
        let groups = [("gpt-4o", "input"), ("gpt-4o", "output"), ("claude-sonnet", "input"), ("claude-sonnet", "output")];
        let make = |(g, q): (usize, i64)| {
            usage_in("tokens", &[("model", groups[g].0), ("direction", groups[g].1)], Decimal::from(q))
        };
        let all: Vec<_> = entries.iter().copied().map(make).collect();
        let part_a: Vec<_> = entries.iter().copied().filter(|(g, _)| in_a[*g]).map(make).collect();
        let part_b: Vec<_> = entries.iter().copied().filter(|(g, _)| !in_a[*g]).map(make).collect();
        let charges = [llm_tokens_charge()];
        let [whole, a, b] = [&all, &part_a, &part_b].map(|u| quote(Currency::USD, None, &charges, u).unwrap());
        let unrounded = |q: &Quote| q.lines.iter().map(|l| l.unrounded).sum::<Decimal>();
        prop_assert_eq!(unrounded(&whole), unrounded(&a) + unrounded(&b));
        prop_assert_eq!(whole.total.amount, a.total.amount + b.total.amount);
    }

    /// Splitting one usage into two quotes (same groups, per-unit prices): the
    /// unrounded amounts add up exactly; the rounded totals differ by at most
    /// one minor unit per line, since each side rounds its own lines.
    #[test]
    fn semantics_prop_dimensional_split_usage_within_a_cent_per_line(
        entries in prop::collection::vec((0usize..4, 0i64..5_000_000, any::<bool>()), 0..12),
    ) {
        let groups = [("gpt-4o", "input"), ("gpt-4o", "output"), ("claude-sonnet", "input"), ("claude-sonnet", "output")];
        let make = |g: usize, q: i64| {
            usage_in("tokens", &[("model", groups[g].0), ("direction", groups[g].1)], Decimal::from(q))
        };
        let all: Vec<_> = entries.iter().map(|&(g, q, _)| make(g, q)).collect();
        let part_a: Vec<_> = entries.iter().filter(|e| e.2).map(|&(g, q, _)| make(g, q)).collect();
        let part_b: Vec<_> = entries.iter().filter(|e| !e.2).map(|&(g, q, _)| make(g, q)).collect();
        let charges = [llm_tokens_charge()];
        let [whole, a, b] = [&all, &part_a, &part_b].map(|u| quote(Currency::USD, None, &charges, u).unwrap());
        let unrounded = |q: &Quote| q.lines.iter().map(|l| l.unrounded).sum::<Decimal>();
        prop_assert_eq!(unrounded(&whole), unrounded(&a) + unrounded(&b));
        let drift = (whole.total.amount - a.total.amount - b.total.amount).abs();
        prop_assert!(drift <= Decimal::from(whole.lines.len()) * Currency::USD.minor_unit());
        // And the whole quote itself never drifts: total = sum of its rounded lines.
        prop_assert_eq!(whole.total.amount, whole.lines.iter().map(|l| l.amount.amount).sum::<Decimal>());
    }
}
