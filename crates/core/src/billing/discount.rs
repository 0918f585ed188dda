//! Discounts attached to a customer: what they take off (a percent of the
//! subtotal or a fixed amount in the customer's currency), for how long
//! (once, N periods, forever, optionally until an end instant), and which
//! period closes they apply to. Pure: the service stores them and the period
//! close ([`super::compute::compute_invoice`]) applies them as
//! [`Discount`]s. Rules with worked numbers: `docs/billing-semantics.md`,
//! "Customer discounts".

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Currency;
use crate::period::{BillingCycle, Period};

use super::compute::Discount;
use super::invoice::{Invoice, InvoiceLineKind};

/// What a discount takes off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscountValue {
    /// `percent` of the subtotal (10 = 10 %), 0–100.
    Percent {
        #[serde(with = "rust_decimal::serde::str")]
        percent: Decimal,
    },
    /// A fixed amount (not negative) in `currency`, capped at what is left of
    /// the subtotal.
    Amount {
        #[serde(with = "rust_decimal::serde::str")]
        amount: Decimal,
        currency: Currency,
    },
}

/// For how many billing periods a discount applies, counted from the period
/// it was attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscountDuration {
    /// The close of the period it was attached in only.
    Once,
    /// That period and the `periods − 1` after it.
    Repeating {
        periods: u32,
    },
    Forever,
}

/// A discount attached to a customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerDiscount {
    pub id: String,
    pub customer_id: String,
    pub value: DiscountValue,
    pub duration: DiscountDuration,
    /// Periods starting at or after this instant are not discounted.
    pub ends_at: Option<Timestamp>,
    /// Printed on the discount line.
    pub description: String,
    pub created_at: Timestamp,
}

impl CustomerDiscount {
    /// `(field, message)` for each invalid part, against the customer's
    /// currency: a percent outside 0–100, a negative amount or one with more
    /// decimals than the currency has, an amount in another currency, a
    /// repeating duration of 0 periods, an end not after `created_at`.
    pub fn validate(&self, currency: Currency) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        match &self.value {
            DiscountValue::Percent { percent } => {
                if *percent < Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                    errors.push(("percent", format!("{percent} is not between 0 and 100")));
                }
            }
            DiscountValue::Amount {
                amount,
                currency: c,
            } => {
                if *amount < Decimal::ZERO {
                    errors.push(("amount", format!("{amount} is negative")));
                } else if amount.normalize().scale() > c.minor_units() {
                    errors.push((
                        "amount",
                        format!("{amount} has more decimals than {} allows", c.code()),
                    ));
                }
                if *c != currency {
                    errors.push((
                        "currency",
                        format!(
                            "the discount is in {}, the customer is billed in {}",
                            c.code(),
                            currency.code()
                        ),
                    ));
                }
            }
        }
        if self.duration == (DiscountDuration::Repeating { periods: 0 }) {
            errors.push(("periods", "must be at least 1".to_string()));
        }
        if self.ends_at.is_some_and(|e| e <= self.created_at) {
            errors.push(("ends_at", "must be after now".to_string()));
        }
        errors
    }

    /// Whether the close of period `index` of `cycle` (`period`: the
    /// period, or its part up to a cancellation) takes this discount. The
    /// count starts at the period containing `created_at` (period 0 when it
    /// was attached before the subscription's anchor); earlier periods never
    /// take it, even when closed late.
    pub fn applies_to(&self, cycle: &BillingCycle, index: u32, period: &Period) -> bool {
        let first = cycle.index_containing(self.created_at).unwrap_or(0);
        if index < first || self.ends_at.is_some_and(|e| period.start >= e) {
            return false;
        }
        match self.duration {
            DiscountDuration::Once => index == first,
            DiscountDuration::Repeating { periods } => index - first < periods,
            DiscountDuration::Forever => true,
        }
    }

    /// The discount as the period close applies it.
    pub fn discount(&self) -> Discount {
        let description = self.description.clone();
        let id = Some(self.id.clone());
        match &self.value {
            DiscountValue::Percent { percent } => Discount::Percent {
                percent: *percent,
                description,
                id,
            },
            DiscountValue::Amount { amount, .. } => Discount::Amount {
                amount: *amount,
                description,
                id,
            },
        }
    }

    /// The discount as the close of a *later part* of a period billed in
    /// parts applies it, after `earlier`: the invoices of the same period
    /// already written (a cancellation's final invoice, the cancellation
    /// since undone). A fixed amount comes off at most once per period in
    /// total: what its lines on `earlier` took off (lines naming this
    /// discount, on invoices neither void nor fully credited:
    /// [`Invoice::counts_as_billed`]) is taken from the amount, and nothing
    /// is applied once it is used up (`None`). A percent applies to each
    /// part's subtotal as it is (10 % of each part is 10 % of the period).
    /// The "N periods" count is by period, not by part
    /// ([`CustomerDiscount::applies_to`]). `docs/billing-semantics.md`,
    /// "Customer discounts".
    pub fn discount_after(&self, earlier: &[Invoice]) -> Option<Discount> {
        let discount = self.discount();
        let Discount::Amount {
            amount,
            description,
            id,
        } = discount
        else {
            return Some(discount);
        };
        let used: Decimal = earlier
            .iter()
            .filter(|i| i.counts_as_billed())
            .flat_map(|i| &i.lines)
            .filter(|l| {
                l.kind == InvoiceLineKind::Discount && l.discount_id.as_deref() == Some(&self.id)
            })
            .map(|l| -l.amount)
            .sum();
        let left = amount - used;
        (left > Decimal::ZERO).then_some(Discount::Amount {
            amount: left,
            description,
            id,
        })
    }

    /// "10 % off" / "5.00 USD off", the description when none is given.
    pub fn default_description(value: &DiscountValue) -> String {
        match value {
            DiscountValue::Percent { percent } => format!("{} % off", percent.normalize()),
            DiscountValue::Amount { amount, currency } => {
                format!("{amount} {} off", currency.code())
            }
        }
    }
}
