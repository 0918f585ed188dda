//! Proration by second against the whole nominal period, with real numbers.
#![allow(clippy::unwrap_used)]

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::money::{Currency, Money, round_line};
use tollgate_core::period::{Anchoring, BillingCycle, Interval, Period};
use tollgate_core::proration::{
    ProrationError, fraction_elapsed, fraction_remaining, prorate, prorate_change,
};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn period(start: &str, end: &str) -> Period {
    Period::new(ts(start), ts(end)).unwrap()
}

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

#[test]
fn semantics_proration_day10_of_a_30_day_month() {
    // April 2026 has 30 days. Day 10 starts 9 days after the period start, so
    // days 10..=30 (21 days) remain: 1 814 400 s of 2 592 000 s = 21/30.
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let at = ts("2026-04-10T00:00:00Z");
    assert_eq!(
        april
            .start
            .checked_add(SignedDuration::from_hours(9 * 24))
            .unwrap(),
        at
    );
    assert_eq!(fraction_remaining(&april, at), dec!(0.7));
    assert_eq!(fraction_elapsed(&april, at), dec!(0.3));

    let p = prorate_change(usd(dec!(10)), usd(dec!(30)), &april, at).unwrap();
    assert_eq!(p.credit.amount.to_string(), "-7.00");
    assert_eq!(p.charge.amount.to_string(), "21.00");
    assert_eq!(p.fraction_remaining, dec!(0.7));
}

#[test]
fn semantics_proration_day10_of_a_31_day_month() {
    // March 2026 has 31 days; at the start of day 10, days 10..=31 (22 days)
    // remain: 1 900 800 s of 2 678 400 s = 22/31 = 0.7096774…
    let march = period("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let at = ts("2026-03-10T00:00:00Z");
    assert_eq!(fraction_remaining(&march, at), dec!(22) / dec!(31));
    assert_eq!(
        fraction_remaining(&march, at) + fraction_elapsed(&march, at),
        Decimal::ONE
    );

    let p = prorate_change(usd(dec!(10)), usd(dec!(30)), &march, at).unwrap();
    // −10 × 22/31 = −7.0967… and 30 × 22/31 = 21.2903…
    assert_eq!(p.credit.amount.to_string(), "-7.10");
    assert_eq!(p.charge.amount.to_string(), "21.29");
}

#[test]
fn semantics_proration_yearly_plan_changed_mid_year() {
    // 2026 has 365 days = 31 536 000 s. 2026-07-02T00:00Z is the start of day
    // 183; 183 days = 15 811 200 s remain.
    let year = period("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
    let at = ts("2026-07-02T00:00:00Z");
    assert_eq!(year.length().as_secs(), 31_536_000);
    assert_eq!(year.end.duration_since(at).as_secs(), 15_811_200);
    assert_eq!(fraction_remaining(&year, at), dec!(183) / dec!(365));

    let p = prorate_change(usd(dec!(120)), usd(dec!(240)), &year, at).unwrap();
    // −120 × 183/365 = −60.1643… and 240 × 183/365 = 120.3287…
    assert_eq!(p.credit.amount.to_string(), "-60.16");
    assert_eq!(p.charge.amount.to_string(), "120.33");
}

#[test]
fn semantics_proration_counts_seconds_not_days() {
    // Noon on day 10 of April: 20.5 days of 30 remain.
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let p = prorate_change(
        usd(dec!(10)),
        usd(dec!(30)),
        &april,
        ts("2026-04-10T12:00:00Z"),
    )
    .unwrap();
    // −10 × 20.5/30 = −6.8333… and 30 × 20.5/30 = 20.50
    assert_eq!(p.credit.amount.to_string(), "-6.83");
    assert_eq!(p.charge.amount.to_string(), "20.50");
    // Sub-second parts are dropped: 12:00:00.999 prorates like 12:00:00.
    let q = prorate_change(
        usd(dec!(10)),
        usd(dec!(30)),
        &april,
        ts("2026-04-10T12:00:00.999Z"),
    )
    .unwrap();
    assert_eq!(p, q);
}

#[test]
fn semantics_proration_dst_month_counts_real_seconds() {
    // A New York customer's March 2026 runs from local midnight to local midnight:
    // [03-01T05:00Z, 04-01T04:00Z), 743 hours (DST starts on the 8th). At the
    // start of day 10 (00:00 EDT = 04:00Z) 22 × 24 = 528 hours remain: 528/743,
    // not 22/31: the customer really had 215 of the month's 743 hours.
    let cycle = BillingCycle::new(
        Interval::Month,
        Anchoring::Calendar,
        ts("2026-03-01T05:00:00Z"),
        TimeZone::get("America/New_York").unwrap(),
    );
    let march = cycle.period_index(0).unwrap();
    assert_eq!(march.length(), SignedDuration::from_hours(743));
    let at = ts("2026-03-10T04:00:00Z");
    assert_eq!(fraction_remaining(&march, at), dec!(528) / dec!(743));
    let p = prorate_change(usd(dec!(10)), usd(dec!(30)), &march, at).unwrap();
    // −10 × 528/743 = −7.1063… and 30 × 528/743 = 21.3189…
    assert_eq!(p.credit.amount.to_string(), "-7.11");
    assert_eq!(p.charge.amount.to_string(), "21.32");
}

#[test]
fn semantics_proration_at_period_start_and_end() {
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let at_start = prorate_change(usd(dec!(10)), usd(dec!(30)), &april, april.start).unwrap();
    assert_eq!(at_start.fraction_remaining, Decimal::ONE);
    assert_eq!(at_start.credit.amount.to_string(), "-10.00");
    assert_eq!(at_start.charge.amount.to_string(), "30.00");
    let at_end = prorate_change(usd(dec!(10)), usd(dec!(30)), &april, april.end).unwrap();
    assert_eq!(at_end.fraction_remaining, Decimal::ZERO);
    assert_eq!(at_end.credit.amount.to_string(), "0.00");
    assert_eq!(at_end.charge.amount.to_string(), "0.00");
    // Fractions clamp outside the period.
    assert_eq!(
        fraction_remaining(&april, ts("2026-03-01T00:00:00Z")),
        Decimal::ONE
    );
    assert_eq!(
        fraction_remaining(&april, ts("2026-06-01T00:00:00Z")),
        Decimal::ZERO
    );
}

#[test]
fn semantics_proration_downgrade() {
    // $30 → $10 at the start of day 10 of April: credit 21.00, charge 7.00, net −14.00.
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let p = prorate_change(
        usd(dec!(30)),
        usd(dec!(10)),
        &april,
        ts("2026-04-10T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(p.credit.amount.to_string(), "-21.00");
    assert_eq!(p.charge.amount.to_string(), "7.00");
    assert_eq!(p.credit.checked_add(p.charge).unwrap().amount, dec!(-14));
}

#[test]
fn semantics_proration_in_jpy_and_kwd() {
    let march = period("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let at = ts("2026-03-10T00:00:00Z");
    // ¥1,000 → ¥3,000: −709.67… → −710, 2 129.03… → 2 129.
    let jpy = prorate_change(
        Money::new(dec!(1000), Currency::JPY),
        Money::new(dec!(3000), Currency::JPY),
        &march,
        at,
    )
    .unwrap();
    assert_eq!(jpy.credit.amount.to_string(), "-710");
    assert_eq!(jpy.charge.amount.to_string(), "2129");
    // 10.000 → 30.000 KWD: −7.0967… → −7.097, 21.2903… → 21.290.
    let kwd = prorate_change(
        Money::new(dec!(10), Currency::KWD),
        Money::new(dec!(30), Currency::KWD),
        &march,
        at,
    )
    .unwrap();
    assert_eq!(kwd.credit.amount.to_string(), "-7.097");
    assert_eq!(kwd.charge.amount.to_string(), "21.290");
}

#[test]
fn semantics_prorate_first_partial_calendar_period() {
    // Calendar billing, $30/month, subscribed 2026-04-10T00:00Z: the first period
    // [04-10, 05-01) is 21 days, prorated against the whole of April (30 days):
    // 30 × 21/30 = 21.00 (not 30.00 for the shortened period).
    let cycle = BillingCycle::new(
        Interval::Month,
        Anchoring::Calendar,
        ts("2026-04-10T00:00:00Z"),
        TimeZone::UTC,
    );
    let first = cycle.period_index(0).unwrap();
    let nominal = cycle.nominal_period(0).unwrap();
    let line = prorate(usd(dec!(30)), &nominal, first.start, first.end).unwrap();
    assert_eq!(line.amount.to_string(), "21.00");

    // Subscribed at noon on March 10: 21.5 of 31 days, 30 × 21.5/31 = 20.806… → 20.81.
    let cycle = BillingCycle::new(
        Interval::Month,
        Anchoring::Calendar,
        ts("2026-03-10T12:00:00Z"),
        TimeZone::UTC,
    );
    let first = cycle.period_index(0).unwrap();
    let nominal = cycle.nominal_period(0).unwrap();
    assert_eq!(nominal.length().as_secs(), 31 * 86_400);
    let line = prorate(usd(dec!(30)), &nominal, first.start, first.end).unwrap();
    assert_eq!(line.amount.to_string(), "20.81");
}

#[test]
fn semantics_prorate_trial_ending_mid_period() {
    // $49/month, period [04-01, 05-01), trial ends 04-15T00:00Z: 16 of 30 days
    // are billed, 49 × 16/30 = 26.133… → 26.13.
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let line = prorate(usd(dec!(49)), &april, ts("2026-04-15T00:00:00Z"), april.end).unwrap();
    assert_eq!(line.amount.to_string(), "26.13");
}

#[test]
fn semantics_proration_errors() {
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let at = ts("2026-04-10T00:00:00Z");
    assert_eq!(
        prorate_change(
            usd(dec!(10)),
            Money::new(dec!(30), Currency::EUR),
            &april,
            at
        ),
        Err(ProrationError::CurrencyMismatch(
            Currency::USD,
            Currency::EUR
        ))
    );
    assert!(matches!(
        prorate_change(
            usd(dec!(10)),
            usd(dec!(30)),
            &april,
            ts("2026-05-02T00:00:00Z")
        ),
        Err(ProrationError::OutsidePeriod { .. })
    ));
    assert!(matches!(
        prorate(usd(dec!(10)), &april, ts("2026-04-20T00:00:00Z"), at),
        Err(ProrationError::ReversedRange { .. })
    ));
    assert!(matches!(
        prorate(usd(dec!(10)), &april, ts("2026-03-20T00:00:00Z"), at),
        Err(ProrationError::OutsidePeriod { .. })
    ));
    // A period built without the checked constructor, empty: an error, not a panic.
    let empty = Period { start: at, end: at };
    assert!(matches!(
        prorate_change(usd(dec!(10)), usd(dec!(30)), &empty, at),
        Err(ProrationError::EmptyPeriod { .. })
    ));
    assert_eq!(fraction_remaining(&empty, at), Decimal::ZERO);
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn currency_strategy() -> impl Strategy<Value = Currency> {
    prop_oneof![
        Just(Currency::USD),
        Just(Currency::JPY),
        Just(Currency::KWD)
    ]
}

/// 0 to 1,000,000 major units, exact in the currency's minor unit.
fn amount_strategy() -> impl Strategy<Value = Money> {
    currency_strategy().prop_flat_map(|c| {
        let max = 1_000_000i64 * 10i64.pow(c.minor_units());
        (0..=max).prop_map(move |units| Money::from_minor_units(units, c))
    })
}

/// A period of 1 second to about 2 years, starting anywhere in 1971–2100, and
/// an instant inside it (to the nanosecond).
fn period_and_instant() -> impl Strategy<Value = (Period, Timestamp)> {
    (
        31_536_000i64..4_102_444_800,
        prop_oneof![
            Just(28 * 86_400i64),
            Just(30 * 86_400),
            Just(31 * 86_400),
            Just(365 * 86_400),
            Just(366 * 86_400),
            1i64..70_000_000,
        ],
    )
        .prop_flat_map(|(start, len)| (Just(start), Just(len), 0..=len, 0i32..1_000_000_000))
        .prop_map(|(start, len, offset, nanos)| {
            let p = Period::new(
                Timestamp::from_second(start).unwrap(),
                Timestamp::from_second(start + len).unwrap(),
            )
            .unwrap();
            let nanos = if offset == len { 0 } else { nanos };
            let at = Timestamp::new(start + offset, nanos).unwrap();
            (p, at)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn a_split_period_prorates_to_the_whole(
        amount in amount_strategy(),
        (period, at) in period_and_instant(),
    ) {
        let unit = amount.currency.minor_unit();
        let before = prorate(amount, &period, period.start, at).unwrap();
        let after = prorate(amount, &period, at, period.end).unwrap();
        let sum = before.checked_add(after).unwrap();
        prop_assert!((sum.amount - amount.amount).abs() <= unit, "{} + {} vs {}", before, after, amount);

        let c = amount.currency;
        let elapsed = round_line(amount.amount * fraction_elapsed(&period, at), c);
        let remaining = round_line(amount.amount * fraction_remaining(&period, at), c);
        prop_assert!((elapsed + remaining - amount.amount).abs() <= unit);
    }

    #[test]
    fn fractions_are_complementary_and_bounded(
        (period, at) in period_and_instant(),
    ) {
        let r = fraction_remaining(&period, at);
        let e = fraction_elapsed(&period, at);
        prop_assert!(r >= Decimal::ZERO && r <= Decimal::ONE);
        prop_assert_eq!(r + e, Decimal::ONE);
        prop_assert_eq!(fraction_remaining(&period, period.start), Decimal::ONE);
        prop_assert_eq!(fraction_remaining(&period, period.end), Decimal::ZERO);
    }

    #[test]
    fn a_change_credits_and_charges_the_remaining_part(
        old in amount_strategy(),
        new_units in 0i64..=1_000_000_000,
        (period, at) in period_and_instant(),
    ) {
        let new = Money::from_minor_units(new_units, old.currency);
        let p = prorate_change(old, new, &period, at).unwrap();
        prop_assert!(p.credit.amount <= Decimal::ZERO);
        prop_assert!(p.charge.amount >= Decimal::ZERO);
        prop_assert!(-p.credit.amount <= old.amount);
        prop_assert!(p.charge.amount <= new.amount);
        prop_assert!(p.credit.is_minor_exact() && p.charge.is_minor_exact());
        // The same change prorated as a range gives the same charge line.
        prop_assert_eq!(prorate(new, &period, at, period.end).unwrap(), p.charge);
    }
}
