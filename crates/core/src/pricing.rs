//! Price models for usage charges, and the quote: a line-by-line breakdown of
//! what a given usage costs on a plan.
//!
//! Each price model is a small pure function from a quantity to an amount plus a
//! breakdown that explains it. Amounts keep full precision here; each quote line
//! is rounded once with [`crate::money::round_line`].

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One tier of a graduated or volume price. Tiers are ordered; `up_to` is the
/// inclusive upper bound of the tier in units (`None` = no upper bound, only
/// allowed on the last tier). A tier covers `(previous.up_to, up_to]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub up_to: Option<Decimal>,
    pub unit_price: Decimal,
    /// A flat amount added when the tier is entered (graduated: every tier
    /// reached; volume: only the tier the whole quantity falls in).
    #[serde(default)]
    pub flat_fee: Decimal,
}

/// How a quantity becomes an amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum PriceModel {
    /// `quantity × unit_price`.
    PerUnit { unit_price: Decimal },
    /// `ceil(quantity / package_size) × package_price` (a started block is a whole block).
    Package {
        package_size: Decimal,
        package_price: Decimal,
    },
    /// Each tier prices the units that fall in it; amounts add up.
    Graduated { tiers: Vec<Tier> },
    /// All units are priced at the tier the total quantity reaches.
    Volume { tiers: Vec<Tier> },
}

/// A price chosen by the values of event properties (e.g. a per-token price per
/// LLM `model` and `direction`). Each distinct combination of the `group_by`
/// property values is priced on its own, by the first entry of `prices` whose
/// `when` matches, else by `default`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimensional {
    pub group_by: Vec<String>,
    pub prices: Vec<DimensionPrice>,
    #[serde(default)]
    pub default: Option<PriceModel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimensionPrice {
    /// Property values this price applies to, e.g. `{model = "gpt-4o", direction = "input"}`.
    pub when: BTreeMap<String, String>,
    pub model: PriceModel,
}

/// How a charge is priced: one model for all usage, or per dimension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChargePrice {
    Dimensional(Dimensional),
    Single(PriceModel),
}

/// A usage charge of a plan: prices the usage of one metric (a feature key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The charge's key, unique within its plan.
    pub key: String,
    /// The metric (feature key) whose usage this charge prices.
    pub metric: String,
    pub display_name: String,
    /// Free units deducted from the quantity before the price model applies
    /// (single-model charges only).
    #[serde(default)]
    pub included: Decimal,
    pub price: ChargePrice,
    /// A minimum amount for this charge per billing period: if the priced usage
    /// comes to less, a "minimum commitment" line makes up the difference.
    #[serde(default)]
    pub minimum: Option<Decimal>,
}
