//! Billing periods and usage windows.
//!
//! - [`Period`]: a half-open `[start, end)` span of instants.
//! - [`BillingCycle`]: a subscription's periods (anniversary or calendar
//!   anchoring, monthly or yearly) on the customer's wall clock.
//! - [`usage_window`]: the window a metered feature's usage accumulates in, for
//!   each [`ResetPeriod`].
//!
//! Everything is a pure function of its arguments: the customer's time zone is a
//! `jiff::tz::TimeZone` value resolved by the caller (core reads no time zone
//! database), and time is always passed in. See `docs/billing-semantics.md`.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// How often a plan's base price is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
}

/// How often a metered feature's usage resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetPeriod {
    /// With the customer's billing period (anniversary or calendar, per subscription).
    BillingPeriod,
    /// On the first of each calendar month, in the customer's time zone.
    CalendarMonth,
    /// At midnight in the customer's time zone.
    Day,
    /// At the top of each hour.
    Hour,
}

/// Where billing periods start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchoring {
    /// Periods start on the 1st of the month (or Jan 1st for yearly plans).
    Calendar,
    /// Periods start on the subscription's anchor day (the day it started).
    Anniversary,
}

// ---------------------------------------------------------------------------
// Periods
// ---------------------------------------------------------------------------

/// Errors about periods, billing cycles and usage windows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// A period must end strictly after it starts.
    #[error("a period must end after it starts (start {start}, end {end})")]
    Empty { start: Timestamp, end: Timestamp },
    /// The billing cycle does not exist before its anchor (the subscription start).
    #[error("{at} is before the billing cycle's anchor {anchor}")]
    BeforeAnchor { at: Timestamp, anchor: Timestamp },
    /// The computation left the calendar range jiff supports (years −9999..=9999).
    #[error("date out of the supported range (years -9999..=9999)")]
    OutOfRange,
}

/// A half-open span of time `[start, end)`: it contains `start` and not `end`,
/// so consecutive periods share a boundary without overlapping.
///
/// Serialized as `{"start": "2026-04-01T00:00:00Z", "end": "2026-05-01T00:00:00Z"}`
/// (RFC 3339, UTC). Deserializing checks `start < end`. The fields are public for
/// convenience; [`Period::new`] is the checked constructor, and every function in
/// this crate that receives a period handles an empty or reversed one without
/// panicking (proration reports it as an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawPeriod")]
pub struct Period {
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Deserialize)]
struct RawPeriod {
    start: Timestamp,
    end: Timestamp,
}

impl TryFrom<RawPeriod> for Period {
    type Error = PeriodError;
    fn try_from(raw: RawPeriod) -> Result<Self, Self::Error> {
        Period::new(raw.start, raw.end)
    }
}

impl Period {
    /// `[start, end)`; an error unless `start < end`.
    pub fn new(start: Timestamp, end: Timestamp) -> Result<Period, PeriodError> {
        if start < end {
            Ok(Period { start, end })
        } else {
            Err(PeriodError::Empty { start, end })
        }
    }

    /// Whether `at` is in `[start, end)`.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }

    /// `end − start` as an exact duration (a month in a DST zone may be 743 or
    /// 745 hours: periods are wall-clock aligned, lengths are real time).
    pub fn length(&self) -> SignedDuration {
        self.end.duration_since(self.start)
    }
}

// ---------------------------------------------------------------------------
// Boundaries: civil (wall-clock) datetimes turned into instants
// ---------------------------------------------------------------------------

/// The first instant at which the wall clock of `tz` reads `dt` or later.
///
/// This is the one rule that turns a wall-clock boundary ("the 1st at 00:00",
/// "the 31st at 09:15") into an instant:
/// - normally the wall clock shows `dt` exactly once: that instant;
/// - in a backward (autumn) transition `dt` is shown twice: the earlier instant;
/// - in a forward (spring) transition `dt` is skipped: the transition instant
///   itself (e.g. 02:30 on 2026-03-08 in New York → 03:00 EDT, 07:00Z).
///
/// The rule is monotone (a later wall-clock time never maps to an earlier
/// instant), which is what makes periods and windows tile time.
fn wall_instant(tz: &TimeZone, dt: DateTime) -> Result<Timestamp, PeriodError> {
    let ts = match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt),
        AmbiguousOffset::Gap { after, .. } => {
            // `dt` read with the later offset lands just before the transition.
            let inside = after
                .to_timestamp(dt)
                .map_err(|_| PeriodError::OutOfRange)?;
            return tz
                .following(inside)
                .next()
                .map(|t| t.timestamp())
                .ok_or(PeriodError::OutOfRange);
        }
    };
    ts.map_err(|_| PeriodError::OutOfRange)
}

/// How the k-th civil boundary of a grid is derived from its base.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `base + k × months` months, with the base's day of month clamped to the
    /// target month's length (31 → 30, 29 → 28, …) and the base's time of day.
    /// Always computed from the base, never chained.
    Months(i64),
    /// `base + k × duration` in civil time (a civil day is always 24 civil hours).
    Civil(SignedDuration),
}

/// An infinite, monotone sequence of boundaries `B(k)`, `k ∈ ℤ`, in a time zone.
#[derive(Debug)]
struct Grid<'a> {
    tz: &'a TimeZone,
    base: DateTime,
    step: Step,
}

/// Adjusting an estimate never needs more than a couple of steps; this only
/// bounds the loop.
const MAX_LOCATE_STEPS: u32 = 64;

impl Grid<'_> {
    fn civil(&self, k: i64) -> Result<DateTime, PeriodError> {
        match self.step {
            Step::Months(months) => {
                let b = self.base;
                let total = i64::from(b.year())
                    .checked_mul(12)
                    .and_then(|m| m.checked_add(i64::from(b.month()) - 1))
                    .and_then(|m| k.checked_mul(months).and_then(|d| m.checked_add(d)))
                    .ok_or(PeriodError::OutOfRange)?;
                let year =
                    i16::try_from(total.div_euclid(12)).map_err(|_| PeriodError::OutOfRange)?;
                let month =
                    i8::try_from(total.rem_euclid(12) + 1).map_err(|_| PeriodError::OutOfRange)?;
                let first = Date::new(year, month, 1).map_err(|_| PeriodError::OutOfRange)?;
                let day = b.day().min(first.days_in_month());
                let date = Date::new(year, month, day).map_err(|_| PeriodError::OutOfRange)?;
                Ok(DateTime::from_parts(date, b.time()))
            }
            Step::Civil(step) => {
                let secs = step
                    .as_secs()
                    .checked_mul(k)
                    .ok_or(PeriodError::OutOfRange)?;
                self.base
                    .checked_add(SignedDuration::from_secs(secs))
                    .map_err(|_| PeriodError::OutOfRange)
            }
        }
    }

    fn boundary(&self, k: i64) -> Result<Timestamp, PeriodError> {
        wall_instant(self.tz, self.civil(k)?)
    }

    /// The `k` with `B(k) <= at < B(k + 1)`, starting from an estimate.
    fn locate(&self, at: Timestamp, estimate: i64) -> Result<i64, PeriodError> {
        let mut k = estimate;
        for _ in 0..MAX_LOCATE_STEPS {
            if self.boundary(k)? > at {
                k = k.checked_sub(1).ok_or(PeriodError::OutOfRange)?;
            } else {
                let next = k.checked_add(1).ok_or(PeriodError::OutOfRange)?;
                if self.boundary(next)? <= at {
                    k = next;
                } else {
                    return Ok(k);
                }
            }
        }
        Err(PeriodError::OutOfRange)
    }

    /// `[B(k), B(k + 1))` for the `k` whose window contains `at`.
    fn window_containing(&self, at: Timestamp) -> Result<Period, PeriodError> {
        let k = self.locate(at, 0)?;
        let next = k.checked_add(1).ok_or(PeriodError::OutOfRange)?;
        Period::new(self.boundary(k)?, self.boundary(next)?)
    }
}

/// Whole months from `base`'s month to `dt`'s month (days ignored).
fn months_between(base: DateTime, dt: DateTime) -> i64 {
    (i64::from(dt.year()) - i64::from(base.year())) * 12 + i64::from(dt.month())
        - i64::from(base.month())
}

// ---------------------------------------------------------------------------
// Billing cycles
// ---------------------------------------------------------------------------

/// A subscription's sequence of billing periods.
///
/// Periods are numbered from 0, the period containing the anchor (the instant the
/// subscription started). All calendar arithmetic happens on the customer's wall
/// clock in `time_zone`, so periods keep their local start time across DST
/// changes and may be an hour shorter or longer than the same month in UTC.
///
/// **Anniversary** anchoring: period `n` starts at `anchor + n × interval`,
/// computed from the anchor every time (never from the previous period), with the
/// anchor's day of month clamped to short months. A Jan 31 anchor gives
/// Jan 31 → Feb 28 (Feb 29 in a leap year) → Mar 31 → Apr 30 → May 31; a yearly
/// Feb 29 anchor gives Feb 28 in common years and Feb 29 again in leap years.
///
/// **Calendar** anchoring: boundaries are the 1st of each month (yearly: Jan 1)
/// at 00:00 local. Period 0 runs from the anchor to the next boundary, so it is
/// *partial* unless the anchor falls exactly on a boundary: an anchor of
/// 2026-04-10T00:00Z gives period 0 = `[2026-04-10, 2026-05-01)` (21 days) inside
/// the nominal period `[2026-04-01, 2026-05-01)` (30 days). Proration of that
/// first period divides by the nominal length ([`BillingCycle::nominal_period`]),
/// never by the shortened one.
///
/// The time zone is a value, not a name: core does no I/O, so the caller
/// resolves the customer's IANA name (e.g. with `jiff::tz::TimeZone::get`, which
/// reads the system time zone database) or builds a fixed offset
/// (`TimeZone::fixed`), and passes it in. Wall-clock boundaries that a DST change
/// skips or repeats resolve to the first instant at which the local clock reads
/// that time or later (a skipped 02:30 → the 03:00 transition; a repeated 01:30
/// → its first occurrence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingCycle {
    pub interval: Interval,
    pub anchoring: Anchoring,
    /// The subscription start. Instants before it belong to no period.
    pub anchor: Timestamp,
    /// The customer's time zone, resolved by the caller.
    pub time_zone: TimeZone,
}

impl BillingCycle {
    pub fn new(
        interval: Interval,
        anchoring: Anchoring,
        anchor: Timestamp,
        time_zone: TimeZone,
    ) -> BillingCycle {
        BillingCycle {
            interval,
            anchoring,
            anchor,
            time_zone,
        }
    }

    fn months_per_period(&self) -> i64 {
        match self.interval {
            Interval::Month => 1,
            Interval::Year => 12,
        }
    }

    /// The grid of nominal boundaries, and the grid index of period 0.
    fn grid(&self) -> Result<(Grid<'_>, i64), PeriodError> {
        let local = self.time_zone.to_datetime(self.anchor);
        let step = Step::Months(self.months_per_period());
        match self.anchoring {
            Anchoring::Anniversary => Ok((
                Grid {
                    tz: &self.time_zone,
                    base: local,
                    step,
                },
                0,
            )),
            Anchoring::Calendar => {
                let month = match self.interval {
                    Interval::Month => local.month(),
                    Interval::Year => 1,
                };
                let first =
                    Date::new(local.year(), month, 1).map_err(|_| PeriodError::OutOfRange)?;
                let grid = Grid {
                    tz: &self.time_zone,
                    base: DateTime::from_parts(first, Time::midnight()),
                    step,
                };
                let k0 = grid.locate(self.anchor, 0)?;
                Ok((grid, k0))
            }
        }
    }

    /// Period `n` (0 is the period containing the anchor). Period 0 starts at the
    /// anchor itself; in a calendar cycle it may be partial (see
    /// [`BillingCycle::nominal_period`]).
    pub fn period_index(&self, n: u32) -> Result<Period, PeriodError> {
        let (grid, k0) = self.grid()?;
        let k = k0 + i64::from(n);
        let start = if n == 0 {
            self.anchor
        } else {
            grid.boundary(k)?
        };
        Period::new(start, grid.boundary(k + 1)?)
    }

    /// The whole, interval-long period that period `n` is part of: the same as
    /// [`BillingCycle::period_index`] except for a partial first period of a
    /// calendar cycle, where it is the whole calendar month (or year) containing
    /// the anchor. This is the denominator of proration.
    pub fn nominal_period(&self, n: u32) -> Result<Period, PeriodError> {
        match self.anchoring {
            Anchoring::Anniversary => self.period_index(n),
            Anchoring::Calendar => {
                let (grid, k0) = self.grid()?;
                let k = k0 + i64::from(n);
                Period::new(grid.boundary(k)?, grid.boundary(k + 1)?)
            }
        }
    }

    /// Whether period `n` is shorter than its nominal period (only period 0 of a
    /// calendar cycle whose anchor is not on a calendar boundary).
    pub fn is_partial(&self, n: u32) -> Result<bool, PeriodError> {
        Ok(self.period_index(n)? != self.nominal_period(n)?)
    }

    /// The number of the period containing `at`. Instants before the anchor are
    /// an error.
    pub fn index_containing(&self, at: Timestamp) -> Result<u32, PeriodError> {
        if at < self.anchor {
            return Err(PeriodError::BeforeAnchor {
                at,
                anchor: self.anchor,
            });
        }
        let (grid, k0) = self.grid()?;
        let local = self.time_zone.to_datetime(at);
        let estimate = months_between(grid.base, local).div_euclid(self.months_per_period());
        let k = grid.locate(at, estimate.max(k0))?;
        // B(k0) <= anchor <= at, so k >= k0.
        u32::try_from(k - k0).map_err(|_| PeriodError::OutOfRange)
    }

    /// The period containing `at`. Instants before the anchor are an error.
    pub fn period_containing(&self, at: Timestamp) -> Result<Period, PeriodError> {
        self.period_index(self.index_containing(at)?)
    }
}

// ---------------------------------------------------------------------------
// Usage windows
// ---------------------------------------------------------------------------

/// The window in which a metered feature's usage accumulates at `at`, for a
/// feature that resets every `reset`. Windows are half-open and tile time.
///
/// - `BillingPeriod`: the cycle's period containing `at` (a calendar cycle's
///   partial first period included).
/// - `CalendarMonth`: `[1st 00:00, next 1st 00:00)` on the customer's wall clock,
///   whatever the billing anchor. The window containing the subscription start
///   begins before it (windows are aligned to the calendar, not clipped).
/// - `Day`: `[00:00, next 00:00)` local: 23 or 25 hours on DST change days.
/// - `Hour`: `[hh:00, hh+1:00)` local. For whole-hour offsets this is the UTC
///   hour; in +05:30 or +05:45 zones the window runs 10:00–11:00 local
///   (04:30–05:30Z, 04:15–05:15Z). In a repeated autumn hour the window lasts
///   two real hours; a skipped spring hour has no window.
///
/// Instants before the cycle's anchor are an error for every reset period.
pub fn usage_window(
    reset: ResetPeriod,
    cycle: &BillingCycle,
    at: Timestamp,
) -> Result<Period, PeriodError> {
    if at < cycle.anchor {
        return Err(PeriodError::BeforeAnchor {
            at,
            anchor: cycle.anchor,
        });
    }
    let tz = &cycle.time_zone;
    let local = tz.to_datetime(at);
    let grid = match reset {
        ResetPeriod::BillingPeriod => return cycle.period_containing(at),
        ResetPeriod::CalendarMonth => Grid {
            tz,
            base: DateTime::from_parts(local.date().first_of_month(), Time::midnight()),
            step: Step::Months(1),
        },
        ResetPeriod::Day => Grid {
            tz,
            base: DateTime::from_parts(local.date(), Time::midnight()),
            step: Step::Civil(SignedDuration::from_secs(24 * 3600)),
        },
        ResetPeriod::Hour => {
            let hour = Time::new(local.hour(), 0, 0, 0).map_err(|_| PeriodError::OutOfRange)?;
            Grid {
                tz,
                base: DateTime::from_parts(local.date(), hour),
                step: Step::Civil(SignedDuration::from_secs(3600)),
            }
        }
    };
    grid.window_containing(at)
}
