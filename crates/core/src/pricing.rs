//! Price models for usage charges, and the quote: a line-by-line breakdown of
//! what a given usage costs on a plan.
//!
//! Each price model is a small pure function from a quantity to an amount plus a
//! breakdown that explains it ([`PriceModel::amount_for`]). Amounts keep full
//! precision here; each quote line is rounded once with
//! [`crate::money::round_line`], and a quote's total is the sum of its rounded
//! lines ([`quote`]).
//!
//! # Tier edges
//!
//! A tier's `up_to` is **inclusive**: with tiers `up_to = 1000`, `up_to = 10000`,
//! unbounded, the tiers cover `(0, 1000]`, `(1000, 10000]` and `(10000, ∞)`. The
//! same edge rule holds for graduated and volume pricing, so 1,000 units are
//! entirely in the first tier under both models and unit 1,001 is the first one
//! of the second tier.
//!
//! # Quantity zero
//!
//! A quantity of 0 costs 0 under every model: no package is started and no tier
//! is entered, so no tier flat fee is charged either.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money, round_line};

/// One tier of a graduated or volume price. Tiers are ordered; `up_to` is the
/// inclusive upper bound of the tier in units (`None` = no upper bound, only
/// allowed on the last tier). A tier covers `(previous.up_to, up_to]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub up_to: Option<Decimal>,
    pub unit_price: Decimal,
    /// A flat amount added when the tier is entered (graduated: every tier
    /// reached; volume: only the tier the whole quantity falls in). A tier is
    /// entered when some quantity above its lower bound falls in it, so a
    /// quantity of 0 enters no tier.
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

/// The price of the dimension groups matching `when`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimensionPrice {
    /// Property values this price applies to, e.g. `{model = "gpt-4o", direction = "input"}`.
    /// A group matches when it has every listed property with the listed value;
    /// keys must be among the charge's `group_by`.
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

/// Why a quantity could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("quantity {0} is negative; usage quantities are never below 0")]
    NegativeQuantity(Decimal),
    #[error("invalid price model: {field}: {message}")]
    InvalidModel { field: String, message: String },
    #[error("amount overflows the decimal range")]
    Overflow,
}

/// One step of a price calculation: the units priced in one tier.
///
/// Graduated pricing reports every tier entered, volume pricing the one tier the
/// whole quantity falls in (none for quantity 0). Per-unit and package pricing
/// report a single unbounded row (also for quantity 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierBreakdown {
    /// Index of the tier in the model's `tiers` (0 for per-unit and package).
    pub tier_index: usize,
    /// Exclusive lower bound of the tier: the previous tier's `up_to`, or 0.
    pub from: Decimal,
    /// Inclusive upper bound of the tier (`None` = unbounded).
    pub to: Option<Decimal>,
    /// Units priced in this row.
    pub units: Decimal,
    /// Price of one unit; for the package model, the price of one package.
    pub unit_price: Decimal,
    pub flat_fee: Decimal,
    /// Packages started (package model only): `ceil(units / package_size)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Decimal>,
    /// This row's amount at full precision.
    pub amount: Decimal,
}

/// A priced quantity: the full-precision amount and the rows that explain it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedQuantity {
    /// Full-precision amount (the sum of the rows' amounts), not yet rounded.
    pub amount: Decimal,
    pub tiers: Vec<TierBreakdown>,
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    a.checked_mul(b).ok_or(PricingError::Overflow)
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    a.checked_add(b).ok_or(PricingError::Overflow)
}

/// Exact `ceil(quantity / size)` for `quantity >= 0`, `size > 0`. The decimal
/// division may round in its last digit, so the result is corrected until
/// `(n - 1) × size < quantity <= n × size` holds exactly.
fn packages_needed(quantity: Decimal, size: Decimal) -> Result<Decimal, PricingError> {
    let mut n = quantity
        .checked_div(size)
        .ok_or(PricingError::Overflow)?
        .trunc();
    while mul(n, size)? < quantity {
        n += Decimal::ONE;
    }
    while n > Decimal::ZERO && mul(n - Decimal::ONE, size)? >= quantity {
        n -= Decimal::ONE;
    }
    Ok(n)
}

impl PriceModel {
    /// Prices `quantity` units (fractional quantities allowed: minutes, GB).
    ///
    /// The amount is exact (not rounded to a currency); the quote rounds it once
    /// per line. Errors on a negative quantity, an invalid model (see
    /// [`PriceModel::validate`]) or decimal overflow; never panics.
    pub fn amount_for(&self, quantity: Decimal) -> Result<PricedQuantity, PricingError> {
        if quantity < Decimal::ZERO {
            return Err(PricingError::NegativeQuantity(quantity));
        }
        if let Some((field, message)) = self.validate().into_iter().next() {
            return Err(PricingError::InvalidModel { field, message });
        }
        let single_row = |unit_price, packages, amount| PricedQuantity {
            amount,
            tiers: vec![TierBreakdown {
                tier_index: 0,
                from: Decimal::ZERO,
                to: None,
                units: quantity,
                unit_price,
                flat_fee: Decimal::ZERO,
                packages,
                amount,
            }],
        };
        match self {
            PriceModel::PerUnit { unit_price } => {
                Ok(single_row(*unit_price, None, mul(quantity, *unit_price)?))
            }
            PriceModel::Package {
                package_size,
                package_price,
            } => {
                let packages = packages_needed(quantity, *package_size)?;
                let amount = mul(packages, *package_price)?;
                Ok(single_row(*package_price, Some(packages), amount))
            }
            PriceModel::Graduated { tiers } => graduated(tiers, quantity),
            PriceModel::Volume { tiers } => volume(tiers, quantity),
        }
    }

    /// Problems with this model, as `(field path relative to the model, message)`,
    /// e.g. `("tiers[1].up_to", "must be greater than tiers[0].up_to (1000)")`.
    /// Empty when the model is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut non_negative = |field: String, value: Decimal| {
            if value < Decimal::ZERO {
                problems.push((field, format!("must not be negative (got {value})")));
            }
        };
        match self {
            PriceModel::PerUnit { unit_price } => non_negative("unit_price".into(), *unit_price),
            PriceModel::Package {
                package_size,
                package_price,
            } => {
                non_negative("package_price".into(), *package_price);
                if *package_size <= Decimal::ZERO {
                    problems.push((
                        "package_size".into(),
                        format!("must be greater than 0 (got {package_size})"),
                    ));
                }
            }
            PriceModel::Graduated { tiers } | PriceModel::Volume { tiers } => {
                validate_tiers(tiers, &mut problems);
            }
        }
        problems
    }
}

fn validate_tiers(tiers: &[Tier], problems: &mut Vec<(String, String)>) {
    if tiers.is_empty() {
        problems.push(("tiers".into(), "must list at least one tier".into()));
        return;
    }
    let last = tiers.len() - 1;
    let mut previous: Option<(usize, Decimal)> = None; // last bounded tier
    for (i, tier) in tiers.iter().enumerate() {
        for (name, value) in [("unit_price", tier.unit_price), ("flat_fee", tier.flat_fee)] {
            if value < Decimal::ZERO {
                problems.push((
                    format!("tiers[{i}].{name}"),
                    format!("must not be negative (got {value})"),
                ));
            }
        }
        let field = format!("tiers[{i}].up_to");
        match (tier.up_to, i == last) {
            (None, true) => {}
            (None, false) => problems.push((
                field,
                "only the last tier may be unbounded; set up_to".into(),
            )),
            (Some(up_to), true) => problems.push((
                field,
                format!(
                    "the last tier must be unbounded (remove up_to = {up_to}) so every quantity has a price"
                ),
            )),
            (Some(up_to), false) => {
                match previous {
                    None if up_to <= Decimal::ZERO => problems.push((
                        field,
                        format!("must be greater than 0 (got {up_to})"),
                    )),
                    Some((j, prev)) if up_to <= prev => problems.push((
                        field,
                        format!(
                            "must be greater than tiers[{j}].up_to ({prev}); tiers are in increasing order"
                        ),
                    )),
                    _ => {}
                }
                previous = Some((i, up_to));
            }
        }
    }
}

/// Graduated: each tier entered prices the units in `(from, to]` plus its flat fee.
fn graduated(tiers: &[Tier], quantity: Decimal) -> Result<PricedQuantity, PricingError> {
    let mut rows = Vec::new();
    let mut total = Decimal::ZERO;
    let mut from = Decimal::ZERO;
    for (tier_index, tier) in tiers.iter().enumerate() {
        if quantity <= from {
            break; // no unit reaches this tier: not entered, no flat fee
        }
        let top = match tier.up_to {
            Some(up_to) if up_to < quantity => up_to,
            _ => quantity,
        };
        let units = top - from;
        let amount = add(mul(units, tier.unit_price)?, tier.flat_fee)?;
        total = add(total, amount)?;
        rows.push(TierBreakdown {
            tier_index,
            from,
            to: tier.up_to,
            units,
            unit_price: tier.unit_price,
            flat_fee: tier.flat_fee,
            packages: None,
            amount,
        });
        match tier.up_to {
            Some(up_to) => from = up_to,
            None => break,
        }
    }
    Ok(PricedQuantity {
        amount: total,
        tiers: rows,
    })
}

/// Volume: every unit at the price of the tier the whole quantity falls in
/// (`from < quantity <= to`), plus that tier's flat fee.
fn volume(tiers: &[Tier], quantity: Decimal) -> Result<PricedQuantity, PricingError> {
    if quantity.is_zero() {
        return Ok(PricedQuantity {
            amount: Decimal::ZERO,
            tiers: Vec::new(),
        });
    }
    let mut from = Decimal::ZERO;
    for (tier_index, tier) in tiers.iter().enumerate() {
        if tier.up_to.is_none_or(|up_to| quantity <= up_to) {
            let amount = add(mul(quantity, tier.unit_price)?, tier.flat_fee)?;
            return Ok(PricedQuantity {
                amount,
                tiers: vec![TierBreakdown {
                    tier_index,
                    from,
                    to: tier.up_to,
                    units: quantity,
                    unit_price: tier.unit_price,
                    flat_fee: tier.flat_fee,
                    packages: None,
                    amount,
                }],
            });
        }
        from = tier.up_to.unwrap_or(from);
    }
    // Unreachable for a validated model (its last tier is unbounded).
    Err(PricingError::InvalidModel {
        field: "tiers".into(),
        message: format!("quantity {quantity} is above the last tier"),
    })
}

fn prefixed(
    prefix: &str,
    problems: Vec<(String, String)>,
) -> impl Iterator<Item = (String, String)> {
    problems
        .into_iter()
        .map(move |(field, message)| (format!("{prefix}.{field}"), message))
}

impl Charge {
    /// Problems with this charge, as `(field path relative to the charge,
    /// message)`; model fields are under `price.` (e.g. `price.tiers[1].up_to`,
    /// `price.prices[0].when.region`, `price.default.unit_price`). Empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.included < Decimal::ZERO {
            problems.push((
                "included".into(),
                format!("must not be negative (got {})", self.included),
            ));
        }
        if let Some(minimum) = self.minimum
            && minimum < Decimal::ZERO
        {
            problems.push((
                "minimum".into(),
                format!("must not be negative (got {minimum})"),
            ));
        }
        match &self.price {
            ChargePrice::Single(model) => problems.extend(prefixed("price", model.validate())),
            ChargePrice::Dimensional(dimensional) => {
                if !self.included.is_zero() {
                    problems.push((
                        "included".into(),
                        "included units are not supported with a dimensional price (which group would they apply to?); use a free tier in the group's price instead".into(),
                    ));
                }
                validate_dimensional(dimensional, &mut problems);
            }
        }
        problems
    }
}

fn validate_dimensional(d: &Dimensional, problems: &mut Vec<(String, String)>) {
    if d.group_by.is_empty() {
        problems.push((
            "price.group_by".into(),
            "must name at least one event property".into(),
        ));
    }
    for (i, key) in d.group_by.iter().enumerate() {
        if key.trim().is_empty() {
            problems.push((format!("price.group_by[{i}]"), "must not be empty".into()));
        } else if d.group_by[..i].contains(key) {
            problems.push((
                format!("price.group_by[{i}]"),
                format!("{key:?} is listed twice"),
            ));
        }
    }
    for (i, price) in d.prices.iter().enumerate() {
        let at = format!("price.prices[{i}]");
        if price.when.is_empty() {
            problems.push((
                format!("{at}.when"),
                "must name at least one property value (an empty `when` matches everything; use `default` for that)".into(),
            ));
        }
        for key in price.when.keys() {
            if !d.group_by.contains(key) {
                problems.push((
                    format!("{at}.when.{key}"),
                    format!("{key:?} is not one of group_by {:?}", d.group_by),
                ));
            }
        }
        if let Some(j) = d.prices[..i].iter().position(|p| p.when == price.when) {
            problems.push((
                format!("{at}.when"),
                format!("same as price.prices[{j}].when, so this price would never apply"),
            ));
        }
        problems.extend(prefixed(&format!("{at}.model"), price.model.validate()));
    }
    if let Some(default) = &d.default {
        problems.extend(prefixed("price.default", default.validate()));
    }
}

/// Usage of one metric to be priced; several entries for the same metric (and
/// the same dimension values) add up. Entries may be negative (corrections) as
/// long as each priced total is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageQuantity {
    pub metric: String,
    /// Event property values, used by dimensional charges (`group_by`).
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    pub quantity: Decimal,
}

/// A plan's fixed fee for the period (already prorated if needed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFee {
    pub description: String,
    pub amount: Money,
}

/// What a quote line is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The plan's base fee.
    Base,
    /// Usage priced by a charge (one line per charge, or per dimension group).
    Usage,
    /// Tops a charge up to its minimum.
    Minimum,
}

/// One line of a quote. `amount` is `unrounded` rounded once with
/// [`round_line`]; the quote's total is the sum of these amounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLine {
    pub kind: LineKind,
    /// The charge's key (`None` for the base fee).
    pub charge: Option<String>,
    pub description: String,
    /// The dimension group of a dimensional charge's line (properties the usage
    /// did not carry are absent); empty otherwise.
    pub dimensions: BTreeMap<String, String>,
    /// Usage quantity (1 for base and minimum lines).
    pub quantity: Decimal,
    /// Free units applied (at most `quantity`).
    pub included: Decimal,
    /// `quantity - included`: what the price model priced.
    pub billable_quantity: Decimal,
    /// How the price model arrived at `unrounded`.
    pub tiers: Vec<TierBreakdown>,
    /// Full-precision amount.
    pub unrounded: Decimal,
    /// The line's amount, rounded to the currency's minor unit.
    pub amount: Money,
}

/// A priced breakdown of a usage on a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub currency: Currency,
    pub lines: Vec<QuoteLine>,
    /// Sum of the lines' rounded amounts.
    pub total: Money,
    /// Metrics that had usage but no charge prices them (not billable), sorted.
    pub unpriced_metrics: Vec<String>,
}

/// Why a quote could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("the base fee is in {found} but the quote is in {expected}")]
    CurrencyMismatch { expected: Currency, found: Currency },
    #[error("charge {charge:?} is invalid: {field}: {message}")]
    InvalidCharge {
        charge: String,
        field: String,
        message: String,
    },
    #[error("charge {charge:?}: no price for dimension group {dimensions:?} and no default price")]
    NoPriceForGroup {
        charge: String,
        dimensions: BTreeMap<String, String>,
    },
    #[error("the quote's total overflows the decimal range")]
    Overflow,
    #[error("charge {charge:?}: {source}")]
    Pricing {
        charge: String,
        source: PricingError,
    },
}

/// Prices `usage` on a plan's base fee and charges, in `currency`.
///
/// * The base fee (if any) is the first line.
/// * A single-model charge gets one line: the metric's usage summed, minus up to
///   `included` free units, priced by the model.
/// * A dimensional charge gets one line per distinct combination of its
///   `group_by` property values (in sorted order of those values); a property
///   missing from the usage is a group of its own (shown as `(none)` in the
///   description, absent from `dimensions`), priced by `default` unless a
///   `when` matches it. A group no price matches is an error.
/// * Every charge gets at least one line, even with no usage (amount 0).
/// * If a charge's rounded lines add up to less than its `minimum`, a
///   [`LineKind::Minimum`] line adds the difference.
/// * Each line is rounded once ([`round_line`]); the total is the sum of the
///   rounded lines. Usage of metrics no charge prices is listed in
///   [`Quote::unpriced_metrics`].
pub fn quote(
    currency: Currency,
    base: Option<BaseFee>,
    charges: &[Charge],
    usage: &[UsageQuantity],
) -> Result<Quote, QuoteError> {
    let mut lines = Vec::new();
    if let Some(base) = base {
        if base.amount.currency != currency {
            return Err(QuoteError::CurrencyMismatch {
                expected: currency,
                found: base.amount.currency,
            });
        }
        lines.push(fee_line(
            LineKind::Base,
            None,
            base.description,
            base.amount.amount,
            currency,
        ));
    }
    for charge in charges {
        if let Some((field, message)) = charge.validate().into_iter().next() {
            return Err(QuoteError::InvalidCharge {
                charge: charge.key.clone(),
                field,
                message,
            });
        }
        let first = lines.len();
        let pricing_error = |source| QuoteError::Pricing {
            charge: charge.key.clone(),
            source,
        };
        match &charge.price {
            ChargePrice::Single(model) => {
                let quantity = sum(usage
                    .iter()
                    .filter(|u| u.metric == charge.metric)
                    .map(|u| u.quantity))
                .map_err(pricing_error)?;
                let included = charge.included.min(quantity).max(Decimal::ZERO);
                let line = usage_line(
                    charge,
                    charge.display_name.clone(),
                    BTreeMap::new(),
                    quantity,
                    included,
                    model,
                    currency,
                )
                .map_err(pricing_error)?;
                lines.push(line);
            }
            ChargePrice::Dimensional(dimensional) => {
                lines.extend(dimensional_lines(charge, dimensional, usage, currency)?);
            }
        }
        if let Some(minimum) = charge.minimum {
            let charged =
                sum(lines[first..].iter().map(|l| l.amount.amount)).map_err(pricing_error)?;
            if charged < minimum {
                let description = format!(
                    "{}: minimum {minimum} {currency} (usage came to {charged})",
                    charge.display_name
                );
                lines.push(fee_line(
                    LineKind::Minimum,
                    Some(charge.key.clone()),
                    description,
                    minimum - charged,
                    currency,
                ));
            }
        }
    }
    let total = lines
        .iter()
        .try_fold(Decimal::new(0, currency.minor_units()), |acc, line| {
            acc.checked_add(line.amount.amount)
        })
        .ok_or(QuoteError::Overflow)?;
    let priced: BTreeSet<&str> = charges.iter().map(|c| c.metric.as_str()).collect();
    let unpriced_metrics = usage
        .iter()
        .map(|u| u.metric.as_str())
        .filter(|m| !priced.contains(m))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(String::from)
        .collect();
    Ok(Quote {
        currency,
        lines,
        total: Money::new(total, currency),
        unpriced_metrics,
    })
}

fn sum(mut values: impl Iterator<Item = Decimal>) -> Result<Decimal, PricingError> {
    values.try_fold(Decimal::ZERO, add)
}

/// A fixed-amount line (base fee, minimum top-up): quantity 1, no breakdown.
fn fee_line(
    kind: LineKind,
    charge: Option<String>,
    description: String,
    unrounded: Decimal,
    currency: Currency,
) -> QuoteLine {
    QuoteLine {
        kind,
        charge,
        description,
        dimensions: BTreeMap::new(),
        quantity: Decimal::ONE,
        included: Decimal::ZERO,
        billable_quantity: Decimal::ONE,
        tiers: Vec::new(),
        unrounded,
        amount: Money::new(round_line(unrounded, currency), currency),
    }
}

fn usage_line(
    charge: &Charge,
    description: String,
    dimensions: BTreeMap<String, String>,
    quantity: Decimal,
    included: Decimal,
    model: &PriceModel,
    currency: Currency,
) -> Result<QuoteLine, PricingError> {
    let billable_quantity = quantity - included;
    let priced = model.amount_for(billable_quantity)?;
    Ok(QuoteLine {
        kind: LineKind::Usage,
        charge: Some(charge.key.clone()),
        description,
        dimensions,
        quantity,
        included,
        billable_quantity,
        tiers: priced.tiers,
        unrounded: priced.amount,
        amount: Money::new(round_line(priced.amount, currency), currency),
    })
}

fn dimensional_lines(
    charge: &Charge,
    d: &Dimensional,
    usage: &[UsageQuantity],
    currency: Currency,
) -> Result<Vec<QuoteLine>, QuoteError> {
    let pricing_error = |source| QuoteError::Pricing {
        charge: charge.key.clone(),
        source,
    };
    // Group key: the usage's values of the group_by properties, in group_by order.
    let mut groups: BTreeMap<Vec<Option<&str>>, Decimal> = BTreeMap::new();
    for u in usage.iter().filter(|u| u.metric == charge.metric) {
        let key = d
            .group_by
            .iter()
            .map(|k| u.dimensions.get(k).map(String::as_str))
            .collect();
        let quantity = groups.entry(key).or_insert(Decimal::ZERO);
        *quantity = add(*quantity, u.quantity).map_err(pricing_error)?;
    }
    if groups.is_empty() {
        let line = QuoteLine {
            kind: LineKind::Usage,
            charge: Some(charge.key.clone()),
            description: charge.display_name.clone(),
            dimensions: BTreeMap::new(),
            quantity: Decimal::ZERO,
            included: Decimal::ZERO,
            billable_quantity: Decimal::ZERO,
            tiers: Vec::new(),
            unrounded: Decimal::ZERO,
            amount: Money::new(round_line(Decimal::ZERO, currency), currency),
        };
        return Ok(vec![line]);
    }
    let mut lines = Vec::with_capacity(groups.len());
    for (values, quantity) in groups {
        let dimensions: BTreeMap<String, String> = d
            .group_by
            .iter()
            .zip(&values)
            .filter_map(|(k, v)| v.map(|v| (k.clone(), v.to_string())))
            .collect();
        let model = d
            .prices
            .iter()
            .find(|p| p.when.iter().all(|(k, v)| dimensions.get(k) == Some(v)))
            .map(|p| &p.model)
            .or(d.default.as_ref())
            .ok_or_else(|| QuoteError::NoPriceForGroup {
                charge: charge.key.clone(),
                dimensions: dimensions.clone(),
            })?;
        let shown: Vec<String> = d
            .group_by
            .iter()
            .zip(&values)
            .map(|(k, v)| format!("{k}={}", v.unwrap_or("(none)")))
            .collect();
        let description = format!("{} ({})", charge.display_name, shown.join(", "));
        let line = usage_line(
            charge,
            description,
            dimensions,
            quantity,
            Decimal::ZERO,
            model,
            currency,
        )
        .map_err(pricing_error)?;
        lines.push(line);
    }
    Ok(lines)
}
