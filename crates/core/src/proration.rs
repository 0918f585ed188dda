//! Proration of a base price across a mid-period change.
//!
//! # By second, against the whole nominal period
//!
//! A fraction of a period is `seconds / period seconds`, with both instants taken
//! to the whole second (sub-second parts are dropped, so an API call's
//! milliseconds never move an amount). The denominator is always the length of
//! the whole nominal period being prorated (a full month or year), never a
//! shortened one: a first partial calendar period or a trial ending mid-period is
//! prorated with [`prorate`] over a sub-range of its nominal period.
//!
//! Why seconds rather than days: the result depends only on instants, so it is
//! exact and needs no rounding of the change instant to a day, and it is the
//! same whatever time zone the change is looked at from (the period itself is
//! wall-clock aligned in the customer's zone, see [`crate::period`]). Counting
//! days would require picking which day an instant falls in, and so the answer
//! would depend on the customer's time zone and on how the instant is rounded.
//! It is also what Stripe does.
//!
//! Worked example: an upgrade from $10/month to $30/month at the very start of
//! day 10 of a 30-day month (`2026-04-10T00:00Z` in `[2026-04-01, 2026-05-01)`;
//! day 10 starts at `period.start + 9 days`) leaves days 10..=30, 21 days,
//! `1 814 400 s / 2 592 000 s = 21/30`: credit −10 × 21/30 = −7.00, charge
//! 30 × 21/30 = 21.00.
//!
//! Amounts are computed at full precision (`amount × seconds / period seconds`,
//! multiplying first) and each resulting invoice line is rounded once with
//! [`round_line`].

use jiff::Timestamp;
use rust_decimal::Decimal;

use crate::money::{Currency, Money, round_line};
use crate::period::Period;

/// Errors from proration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProrationError {
    #[error("currency mismatch: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    /// Proration divides by the period's length, so it must be at least a second.
    #[error("cannot prorate over an empty period ({start} to {end})")]
    EmptyPeriod { start: Timestamp, end: Timestamp },
    #[error("{at} is outside the period {start} to {end}")]
    OutsidePeriod {
        at: Timestamp,
        start: Timestamp,
        end: Timestamp,
    },
    #[error("range {from} to {to} ends before it starts")]
    ReversedRange { from: Timestamp, to: Timestamp },
    #[error("amount {0} is too large to prorate")]
    Overflow(Decimal),
}

/// The two invoice lines of a mid-period price change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proration {
    /// Credit for the unused part of the old price (zero or negative), rounded.
    pub credit: Money,
    /// Charge for the remaining part of the new price, rounded.
    pub charge: Money,
    /// The part of the period remaining at the change, in `[0, 1]` (unrounded).
    pub fraction_remaining: Decimal,
}

/// Whole seconds since the Unix epoch, rounded toward the past.
fn whole_seconds(ts: Timestamp) -> i64 {
    let s = ts.as_second();
    if ts.subsec_nanosecond() < 0 { s - 1 } else { s }
}

/// The period's length in whole seconds, which must be positive.
fn period_seconds(period: &Period) -> Result<i64, ProrationError> {
    let len = whole_seconds(period.end) - whole_seconds(period.start);
    if len > 0 {
        Ok(len)
    } else {
        Err(ProrationError::EmptyPeriod {
            start: period.start,
            end: period.end,
        })
    }
}

fn check_within(period: &Period, at: Timestamp) -> Result<(), ProrationError> {
    if at < period.start || at > period.end {
        return Err(ProrationError::OutsidePeriod {
            at,
            start: period.start,
            end: period.end,
        });
    }
    Ok(())
}

/// `amount × seconds / period_seconds` at full precision, then rounded as an
/// invoice line.
fn prorated_line(
    amount: Decimal,
    currency: Currency,
    seconds: i64,
    period_seconds: i64,
) -> Result<Money, ProrationError> {
    let exact = amount
        .checked_mul(Decimal::from(seconds))
        .and_then(|x| x.checked_div(Decimal::from(period_seconds)))
        .ok_or(ProrationError::Overflow(amount))?;
    let mut line = round_line(exact, currency);
    if line.is_zero() {
        // No "-0.00" lines.
        line.set_sign_positive(true);
    }
    Ok(Money::new(line, currency))
}

/// The part of `period` remaining at `at`, by second: 1 at the start, 0 at the
/// end, clamped to `[0, 1]` outside the period. An empty or reversed period has
/// nothing remaining (0).
pub fn fraction_remaining(period: &Period, at: Timestamp) -> Decimal {
    let Ok(len) = period_seconds(period) else {
        return Decimal::ZERO;
    };
    let remaining = (whole_seconds(period.end) - whole_seconds(at)).clamp(0, len);
    Decimal::from(remaining)
        .checked_div(Decimal::from(len))
        .unwrap_or(Decimal::ZERO)
}

/// The part of `period` elapsed at `at`: exactly `1 − fraction_remaining`.
pub fn fraction_elapsed(period: &Period, at: Timestamp) -> Decimal {
    Decimal::ONE - fraction_remaining(period, at)
}

/// A change from price `old` to price `new` (both per whole `period`) at `at`:
/// a credit for the unused part of `old` and a charge for the remaining part of
/// `new`, each computed at full precision and rounded as its own invoice line.
///
/// `at` must lie in `[period.start, period.end]`; the two prices must share a
/// currency. A downgrade gives a credit larger than the charge.
pub fn prorate_change(
    old: Money,
    new: Money,
    period: &Period,
    at: Timestamp,
) -> Result<Proration, ProrationError> {
    if old.currency != new.currency {
        return Err(ProrationError::CurrencyMismatch(old.currency, new.currency));
    }
    let len = period_seconds(period)?;
    check_within(period, at)?;
    let remaining = whole_seconds(period.end) - whole_seconds(at);
    let credit = prorated_line(-old.amount, old.currency, remaining, len)?;
    let charge = prorated_line(new.amount, new.currency, remaining, len)?;
    Ok(Proration {
        credit,
        charge,
        fraction_remaining: fraction_remaining(period, at),
    })
}

/// The part of `amount` (a price for the whole `period`) covering
/// `[from, to)`, by second, rounded as an invoice line.
///
/// Used for a first partial calendar period (`period` is the nominal month,
/// `from` the subscription start, `to` the period end) or a trial ending
/// mid-period (`from` the trial end). `from <= to`, both within the period.
pub fn prorate(
    amount: Money,
    period: &Period,
    from: Timestamp,
    to: Timestamp,
) -> Result<Money, ProrationError> {
    let len = period_seconds(period)?;
    check_within(period, from)?;
    check_within(period, to)?;
    if to < from {
        return Err(ProrationError::ReversedRange { from, to });
    }
    let seconds = whole_seconds(to) - whole_seconds(from);
    prorated_line(amount.amount, amount.currency, seconds, len)
}
