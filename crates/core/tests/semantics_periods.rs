//! Billing periods, anchoring, time zones and usage windows, with real dates.
#![allow(clippy::unwrap_used)]

use jiff::civil::date;
use jiff::tz::{self, TimeZone};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use tollgate_core::period::{
    Anchoring, BillingCycle, Interval, Period, PeriodError, ResetPeriod, usage_window,
};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn period(start: &str, end: &str) -> Period {
    Period::new(ts(start), ts(end)).unwrap()
}

fn new_york() -> TimeZone {
    TimeZone::get("America/New_York").unwrap()
}

fn monthly(anchoring: Anchoring, anchor: &str, tz: TimeZone) -> BillingCycle {
    BillingCycle::new(Interval::Month, anchoring, ts(anchor), tz)
}

fn starts(cycle: &BillingCycle, count: u32) -> Vec<String> {
    (0..count)
        .map(|n| cycle.period_index(n).unwrap().start.to_string())
        .collect()
}

#[test]
fn semantics_period_is_half_open() {
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    assert!(april.contains(ts("2026-04-01T00:00:00Z")));
    assert!(april.contains(ts("2026-04-30T23:59:59.999Z")));
    assert!(!april.contains(ts("2026-05-01T00:00:00Z")));
    assert!(!april.contains(ts("2026-03-31T23:59:59Z")));
    assert_eq!(april.length(), SignedDuration::from_hours(30 * 24));
    assert_eq!(april.length().as_secs(), 2_592_000);

    let t = ts("2026-04-01T00:00:00Z");
    assert!(matches!(Period::new(t, t), Err(PeriodError::Empty { .. })));
}

#[test]
fn semantics_period_serializes_as_rfc3339_utc() {
    let april = period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let json = serde_json::to_string(&april).unwrap();
    assert_eq!(
        json,
        r#"{"start":"2026-04-01T00:00:00Z","end":"2026-05-01T00:00:00Z"}"#
    );
    assert_eq!(serde_json::from_str::<Period>(&json).unwrap(), april);
    let reversed = r#"{"start":"2026-05-01T00:00:00Z","end":"2026-04-01T00:00:00Z"}"#;
    assert!(serde_json::from_str::<Period>(reversed).is_err());
}

#[test]
fn semantics_anniversary_jan31_common_year() {
    let cycle = monthly(
        Anchoring::Anniversary,
        "2026-01-31T09:15:00Z",
        TimeZone::UTC,
    );
    assert_eq!(
        starts(&cycle, 7),
        [
            "2026-01-31T09:15:00Z",
            "2026-02-28T09:15:00Z",
            "2026-03-31T09:15:00Z",
            "2026-04-30T09:15:00Z",
            "2026-05-31T09:15:00Z",
            "2026-06-30T09:15:00Z",
            "2026-07-31T09:15:00Z",
        ]
    );
    // February's period is 31 days long: Feb 28 → Mar 31.
    let feb = cycle.period_index(1).unwrap();
    assert_eq!(feb.end, ts("2026-03-31T09:15:00Z"));
    assert_eq!(feb.length(), SignedDuration::from_hours(31 * 24));
}

#[test]
fn semantics_anniversary_jan31_leap_year() {
    let cycle = monthly(
        Anchoring::Anniversary,
        "2028-01-31T00:00:00Z",
        TimeZone::UTC,
    );
    assert_eq!(
        starts(&cycle, 5),
        [
            "2028-01-31T00:00:00Z",
            "2028-02-29T00:00:00Z",
            "2028-03-31T00:00:00Z",
            "2028-04-30T00:00:00Z",
            "2028-05-31T00:00:00Z",
        ]
    );
    // Periods 13 and 14 (in 2029): computed from the anchor, not chained.
    assert_eq!(
        cycle.period_index(13).unwrap().start,
        ts("2029-02-28T00:00:00Z")
    );
    assert_eq!(
        cycle.period_index(14).unwrap().start,
        ts("2029-03-31T00:00:00Z")
    );
}

#[test]
fn semantics_anniversary_yearly_feb29() {
    let cycle = BillingCycle::new(
        Interval::Year,
        Anchoring::Anniversary,
        ts("2024-02-29T12:00:00Z"),
        TimeZone::UTC,
    );
    assert_eq!(
        starts(&cycle, 6),
        [
            "2024-02-29T12:00:00Z",
            "2025-02-28T12:00:00Z",
            "2026-02-28T12:00:00Z",
            "2027-02-28T12:00:00Z",
            "2028-02-29T12:00:00Z",
            "2029-02-28T12:00:00Z",
        ]
    );
}

#[test]
fn semantics_period_containing_an_instant() {
    let cycle = monthly(
        Anchoring::Anniversary,
        "2026-01-31T09:15:00Z",
        TimeZone::UTC,
    );
    let p = cycle.period_containing(ts("2026-03-15T00:00:00Z")).unwrap();
    assert_eq!(p, period("2026-02-28T09:15:00Z", "2026-03-31T09:15:00Z"));
    assert_eq!(
        cycle.index_containing(ts("2026-03-15T00:00:00Z")).unwrap(),
        1
    );
    // A boundary instant belongs to the period it starts.
    let p = cycle.period_containing(ts("2026-03-31T09:15:00Z")).unwrap();
    assert_eq!(p.start, ts("2026-03-31T09:15:00Z"));
    // One nanosecond earlier is still February's period.
    let p = cycle
        .period_containing(ts("2026-03-31T09:14:59.999999999Z"))
        .unwrap();
    assert_eq!(p.start, ts("2026-02-28T09:15:00Z"));
    // Ten years on.
    let p = cycle.period_containing(ts("2036-02-29T10:00:00Z")).unwrap();
    assert_eq!(p, period("2036-02-29T09:15:00Z", "2036-03-31T09:15:00Z"));
}

#[test]
fn semantics_period_before_anchor_is_an_error() {
    let cycle = monthly(
        Anchoring::Anniversary,
        "2026-01-31T09:15:00Z",
        TimeZone::UTC,
    );
    assert_eq!(
        cycle.period_containing(ts("2026-01-31T09:14:59Z")),
        Err(PeriodError::BeforeAnchor {
            at: ts("2026-01-31T09:14:59Z"),
            anchor: ts("2026-01-31T09:15:00Z"),
        })
    );
    assert!(matches!(
        usage_window(ResetPeriod::Day, &cycle, ts("2025-12-31T00:00:00Z")),
        Err(PeriodError::BeforeAnchor { .. })
    ));
}

#[test]
fn semantics_calendar_first_period_is_partial() {
    let cycle = monthly(Anchoring::Calendar, "2026-04-10T00:00:00Z", TimeZone::UTC);
    let first = cycle.period_index(0).unwrap();
    assert_eq!(
        first,
        period("2026-04-10T00:00:00Z", "2026-05-01T00:00:00Z")
    );
    assert_eq!(first.length().as_secs(), 21 * 86_400);
    assert!(cycle.is_partial(0).unwrap());
    let nominal = cycle.nominal_period(0).unwrap();
    assert_eq!(
        nominal,
        period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z")
    );
    assert_eq!(nominal.length().as_secs(), 30 * 86_400);

    assert_eq!(
        cycle.period_index(1).unwrap(),
        period("2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z")
    );
    assert!(!cycle.is_partial(1).unwrap());
    assert_eq!(
        cycle.period_containing(ts("2026-06-15T00:00:00Z")).unwrap(),
        period("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z")
    );

    // An anchor exactly on the 1st at 00:00 gives a full first period.
    let on_boundary = monthly(Anchoring::Calendar, "2026-04-01T00:00:00Z", TimeZone::UTC);
    assert!(!on_boundary.is_partial(0).unwrap());
    assert_eq!(
        on_boundary.period_index(0).unwrap(),
        period("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z")
    );

    // Yearly calendar: Jan 1 boundaries.
    let yearly = BillingCycle::new(
        Interval::Year,
        Anchoring::Calendar,
        ts("2026-07-02T00:00:00Z"),
        TimeZone::UTC,
    );
    assert_eq!(
        yearly.period_index(0).unwrap(),
        period("2026-07-02T00:00:00Z", "2027-01-01T00:00:00Z")
    );
    assert_eq!(
        yearly.nominal_period(0).unwrap(),
        period("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
    );
    assert_eq!(
        yearly.period_index(1).unwrap(),
        period("2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z")
    );
}

#[test]
fn semantics_calendar_boundaries_follow_the_customer_time_zone() {
    // A Tokyo customer (+09:00): the month turns at 00:00 Tokyo = 15:00Z the day before.
    let tokyo = TimeZone::fixed(tz::offset(9));
    let cycle = monthly(Anchoring::Calendar, "2026-04-10T00:00:00Z", tokyo);
    assert_eq!(
        cycle.period_index(0).unwrap(),
        period("2026-04-10T00:00:00Z", "2026-04-30T15:00:00Z")
    );
    assert_eq!(
        cycle.nominal_period(0).unwrap(),
        period("2026-03-31T15:00:00Z", "2026-04-30T15:00:00Z")
    );
    // 2026-04-30T16:00Z is already May 1st in Tokyo.
    assert_eq!(
        cycle.index_containing(ts("2026-04-30T16:00:00Z")).unwrap(),
        1
    );
}

#[test]
fn semantics_dst_periods_keep_local_midnight() {
    // New York, calendar months: each period runs from local midnight to local
    // midnight. March loses an hour (DST starts 2026-03-08), November gains one
    // (DST ends 2026-11-01).
    let cycle = monthly(Anchoring::Calendar, "2026-03-01T05:00:00Z", new_york());
    let march = cycle.period_index(0).unwrap();
    assert_eq!(
        march,
        period("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z")
    );
    assert_eq!(march.length(), SignedDuration::from_hours(31 * 24 - 1)); // 743 h
    let november = cycle.period_containing(ts("2026-11-15T12:00:00Z")).unwrap();
    assert_eq!(
        november,
        period("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
    );
    assert_eq!(november.length(), SignedDuration::from_hours(30 * 24 + 1)); // 721 h

    // Anniversary at 00:00 EST on Feb 15 → Mar 15 00:00 EDT (04:00Z).
    let anniversary = monthly(Anchoring::Anniversary, "2026-02-15T05:00:00Z", new_york());
    let feb = anniversary.period_index(0).unwrap();
    assert_eq!(feb, period("2026-02-15T05:00:00Z", "2026-03-15T04:00:00Z"));
    assert_eq!(feb.length(), SignedDuration::from_hours(28 * 24 - 1));
}

#[test]
fn semantics_dst_skipped_and_repeated_boundaries() {
    // Anchored 02:30 EST on Feb 8: 02:30 does not exist on 2026-03-08 in New York
    // (clocks jump 02:00 → 03:00), so that period starts at the jump, 03:00 EDT
    // (07:00Z); April's is back to 02:30 local (EDT, 06:30Z).
    let cycle = monthly(Anchoring::Anniversary, "2026-02-08T07:30:00Z", new_york());
    assert_eq!(
        starts(&cycle, 3),
        [
            "2026-02-08T07:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-04-08T06:30:00Z",
        ]
    );
    // Anchored 01:30 EDT on Oct 1: 01:30 happens twice on 2026-11-01; the period
    // starts at the first one (01:30 EDT, 05:30Z).
    let cycle = monthly(Anchoring::Anniversary, "2026-10-01T05:30:00Z", new_york());
    assert_eq!(
        cycle.period_index(1).unwrap().start,
        ts("2026-11-01T05:30:00Z")
    );
    assert_eq!(
        cycle.period_index(2).unwrap().start,
        ts("2026-12-01T06:30:00Z")
    );
}

#[test]
fn semantics_usage_window_billing_period() {
    let cycle = monthly(Anchoring::Calendar, "2026-04-10T00:00:00Z", TimeZone::UTC);
    assert_eq!(
        usage_window(
            ResetPeriod::BillingPeriod,
            &cycle,
            ts("2026-04-20T00:00:00Z")
        )
        .unwrap(),
        period("2026-04-10T00:00:00Z", "2026-05-01T00:00:00Z")
    );
}

#[test]
fn semantics_usage_window_calendar_month() {
    // An anniversary subscription (Jan 31) with a quota that resets on the 1st.
    let cycle = monthly(
        Anchoring::Anniversary,
        "2026-01-31T09:15:00Z",
        TimeZone::UTC,
    );
    assert_eq!(
        usage_window(
            ResetPeriod::CalendarMonth,
            &cycle,
            ts("2026-03-15T00:00:00Z")
        )
        .unwrap(),
        period("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    );
    // The window containing the subscription start is the whole month (aligned,
    // not clipped).
    assert_eq!(
        usage_window(
            ResetPeriod::CalendarMonth,
            &cycle,
            ts("2026-01-31T10:00:00Z")
        )
        .unwrap(),
        period("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
    );
    // In New York the month turns at local midnight (EST → 05:00Z).
    let ny = monthly(Anchoring::Anniversary, "2026-01-31T09:15:00Z", new_york());
    assert_eq!(
        usage_window(ResetPeriod::CalendarMonth, &ny, ts("2026-02-01T03:00:00Z")).unwrap(),
        period("2026-01-01T05:00:00Z", "2026-02-01T05:00:00Z")
    );
}

#[test]
fn semantics_usage_window_day_in_dst() {
    let cycle = monthly(Anchoring::Anniversary, "2026-01-01T05:00:00Z", new_york());
    let spring = usage_window(ResetPeriod::Day, &cycle, ts("2026-03-08T12:00:00Z")).unwrap();
    assert_eq!(
        spring,
        period("2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z")
    );
    assert_eq!(spring.length(), SignedDuration::from_hours(23));
    let autumn = usage_window(ResetPeriod::Day, &cycle, ts("2026-11-01T12:00:00Z")).unwrap();
    assert_eq!(
        autumn,
        period("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z")
    );
    assert_eq!(autumn.length(), SignedDuration::from_hours(25));
    // UTC days for a UTC customer.
    let utc = monthly(
        Anchoring::Anniversary,
        "2026-01-01T00:00:00Z",
        TimeZone::UTC,
    );
    assert_eq!(
        usage_window(ResetPeriod::Day, &utc, ts("2026-03-08T23:59:59Z")).unwrap(),
        period("2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z")
    );
}

#[test]
fn semantics_usage_window_hour() {
    let at = ts("2026-04-10T05:00:00Z");
    let utc = monthly(
        Anchoring::Anniversary,
        "2026-01-01T00:00:00Z",
        TimeZone::UTC,
    );
    assert_eq!(
        usage_window(ResetPeriod::Hour, &utc, at).unwrap(),
        period("2026-04-10T05:00:00Z", "2026-04-10T06:00:00Z")
    );
    // India (+05:30): 05:00Z is 10:30 local; the window is 10:00–11:00 local.
    let india = TimeZone::fixed(tz::Offset::from_seconds(5 * 3600 + 1800).unwrap());
    let cycle = monthly(Anchoring::Anniversary, "2026-01-01T00:00:00Z", india);
    assert_eq!(
        usage_window(ResetPeriod::Hour, &cycle, at).unwrap(),
        period("2026-04-10T04:30:00Z", "2026-04-10T05:30:00Z")
    );
    // Nepal (+05:45).
    let nepal = TimeZone::fixed(tz::Offset::from_seconds(5 * 3600 + 2700).unwrap());
    let cycle = monthly(Anchoring::Anniversary, "2026-01-01T00:00:00Z", nepal);
    assert_eq!(
        usage_window(ResetPeriod::Hour, &cycle, at).unwrap(),
        period("2026-04-10T04:15:00Z", "2026-04-10T05:15:00Z")
    );
    // New York, 2026-11-01: the repeated 01:00–02:00 hour is one two-hour window.
    let ny = monthly(Anchoring::Anniversary, "2026-01-01T05:00:00Z", new_york());
    assert_eq!(
        usage_window(ResetPeriod::Hour, &ny, ts("2026-11-01T06:30:00Z")).unwrap(),
        period("2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z")
    );
    // 2026-03-08: 01:00 EST → the jump at 03:00 EDT; 03:00–04:00 EDT follows.
    assert_eq!(
        usage_window(ResetPeriod::Hour, &ny, ts("2026-03-08T06:59:59Z")).unwrap(),
        period("2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z")
    );
    assert_eq!(
        usage_window(ResetPeriod::Hour, &ny, ts("2026-03-08T07:00:00Z")).unwrap(),
        period("2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z")
    );
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn zones() -> Vec<TimeZone> {
    vec![
        TimeZone::UTC,
        TimeZone::fixed(tz::Offset::from_seconds(5 * 3600 + 1800).unwrap()),
        TimeZone::fixed(tz::offset(-8)),
        TimeZone::fixed(tz::Offset::from_seconds(5 * 3600 + 2700).unwrap()),
        new_york(),
        // DST shifts by 30 minutes.
        TimeZone::get("Australia/Lord_Howe").unwrap(),
        // DST shifts by 2 hours (a two-hour repeated span every autumn).
        TimeZone::get("Antarctica/Troll").unwrap(),
    ]
}

fn cycle_strategy() -> impl Strategy<Value = BillingCycle> {
    (
        1971i16..2100,
        1i8..=12,
        1i8..=31,
        0i8..24,
        0i8..60,
        0i8..60,
        0..zones().len(),
        prop_oneof![Just(Interval::Month), Just(Interval::Year)],
        prop_oneof![Just(Anchoring::Anniversary), Just(Anchoring::Calendar)],
    )
        .prop_map(|(y, m, d, h, mi, s, z, interval, anchoring)| {
            let first = date(y, m, 1);
            let day = d.min(first.days_in_month());
            let local = date(y, m, day).at(h, mi, s, 0);
            let tz = zones().swap_remove(z);
            let anchor = tz.to_timestamp(local).unwrap();
            BillingCycle::new(interval, anchoring, anchor, tz)
        })
}

fn reset_strategy() -> impl Strategy<Value = ResetPeriod> {
    prop_oneof![
        Just(ResetPeriod::BillingPeriod),
        Just(ResetPeriod::CalendarMonth),
        Just(ResetPeriod::Day),
        Just(ResetPeriod::Hour),
    ]
}

/// Up to about six years after the anchor, to the nanosecond.
fn later(cycle: &BillingCycle, secs: i64, nanos: i32) -> Timestamp {
    cycle
        .anchor
        .checked_add(SignedDuration::new(secs, nanos))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn consecutive_periods_tile_time(cycle in cycle_strategy()) {
        let count = match cycle.interval {
            Interval::Month => 40,
            Interval::Year => 6,
        };
        let mut previous = cycle.period_index(0).unwrap();
        prop_assert_eq!(previous.start, cycle.anchor);
        for n in 1..count {
            let p = cycle.period_index(n).unwrap();
            prop_assert!(p.start < p.end);
            prop_assert_eq!(previous.end, p.start, "gap or overlap before period {}", n);
            prop_assert!(!cycle.is_partial(n).unwrap());
            previous = p;
        }
    }

    #[test]
    fn period_containing_contains_the_instant(
        cycle in cycle_strategy(),
        secs in 0i64..190_000_000,
        nanos in 0i32..1_000_000_000,
    ) {
        let at = later(&cycle, secs, nanos);
        let n = cycle.index_containing(at).unwrap();
        let p = cycle.period_containing(at).unwrap();
        prop_assert!(p.contains(at), "{:?} does not contain {}", p, at);
        prop_assert_eq!(p, cycle.period_index(n).unwrap());
        let nominal = cycle.nominal_period(n).unwrap();
        prop_assert!(nominal.start <= p.start && nominal.end == p.end);
    }

    #[test]
    fn usage_windows_tile_and_contain_their_instant(
        cycle in cycle_strategy(),
        reset in reset_strategy(),
        secs in 0i64..190_000_000,
        nanos in 0i32..1_000_000_000,
    ) {
        let at = later(&cycle, secs, nanos);
        let w = usage_window(reset, &cycle, at).unwrap();
        prop_assert!(w.contains(at), "{:?} does not contain {}", w, at);
        let next = usage_window(reset, &cycle, w.end).unwrap();
        prop_assert_eq!(next.start, w.end);
        let just_before = w.start.checked_sub(SignedDuration::from_nanos(1)).unwrap();
        if just_before >= cycle.anchor {
            let previous = usage_window(reset, &cycle, just_before).unwrap();
            prop_assert_eq!(previous.end, w.start);
        }
    }
}

/// Walks consecutive windows around every DST/offset transition of zones with
/// unusual rules: 30-minute DST (Lord Howe), 2-hour DST (Troll), a skipped day
/// (Apia, 2011-12-30), DST at midnight (Santiago, Havana, Beirut).
#[test]
fn windows_tile_across_unusual_transitions() {
    let names = [
        "Australia/Lord_Howe",
        "Antarctica/Troll",
        "Pacific/Apia",
        "America/Santiago",
        "America/Havana",
        "Asia/Beirut",
        "America/New_York",
    ];
    for name in names {
        let tz = TimeZone::get(name).unwrap();
        let anchor = ts("2010-06-15T00:00:00Z");
        let cycle = BillingCycle::new(Interval::Month, Anchoring::Calendar, anchor, tz.clone());
        let transitions: Vec<Timestamp> = tz
            .following(anchor)
            .take_while(|t| t.timestamp() < ts("2014-01-01T00:00:00Z"))
            .map(|t| t.timestamp())
            .collect();
        assert!(!transitions.is_empty(), "{name}");
        for reset in [
            ResetPeriod::Hour,
            ResetPeriod::Day,
            ResetPeriod::CalendarMonth,
        ] {
            for &t in &transitions {
                let mut at = t.checked_sub(SignedDuration::from_hours(50)).unwrap();
                let stop = t.checked_add(SignedDuration::from_hours(50)).unwrap();
                let mut previous: Option<Period> = None;
                while at < stop {
                    let w = usage_window(reset, &cycle, at).unwrap();
                    assert!(w.contains(at), "{name} {reset:?} {w:?} {at}");
                    if let Some(p) = previous {
                        assert_eq!(p.end, w.start, "{name} {reset:?}");
                    }
                    // Also probe the middle of the window.
                    let mid = w.start.checked_add(w.length() / 2).unwrap();
                    assert_eq!(usage_window(reset, &cycle, mid).unwrap(), w);
                    previous = Some(w);
                    at = w.end;
                }
            }
        }
        // Billing periods (calendar and anniversary) across the same years.
        for anchoring in [Anchoring::Calendar, Anchoring::Anniversary] {
            let cycle = BillingCycle::new(Interval::Month, anchoring, anchor, tz.clone());
            let mut previous = cycle.period_index(0).unwrap();
            for n in 1..48 {
                let p = cycle.period_index(n).unwrap();
                assert_eq!(previous.end, p.start, "{name} {anchoring:?} {n}");
                assert_eq!(cycle.period_containing(p.start).unwrap(), p);
                previous = p;
            }
        }
    }
}

#[test]
fn extreme_instants_are_errors_not_panics() {
    let cycle = monthly(
        Anchoring::Anniversary,
        "2026-01-31T09:15:00Z",
        TimeZone::UTC,
    );
    assert_eq!(cycle.period_index(u32::MAX), Err(PeriodError::OutOfRange));
    assert_eq!(
        cycle.period_containing(Timestamp::MAX),
        Err(PeriodError::OutOfRange)
    );
    for reset in [
        ResetPeriod::BillingPeriod,
        ResetPeriod::CalendarMonth,
        ResetPeriod::Day,
        ResetPeriod::Hour,
    ] {
        assert_eq!(
            usage_window(reset, &cycle, Timestamp::MAX),
            Err(PeriodError::OutOfRange)
        );
    }
    // The last whole month jiff can represent still works.
    let p = cycle.period_containing(ts("9999-11-15T00:00:00Z")).unwrap();
    assert_eq!(p, period("9999-10-31T09:15:00Z", "9999-11-30T09:15:00Z"));
}
