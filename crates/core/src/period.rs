//! Billing periods and usage windows.

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
