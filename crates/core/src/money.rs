//! Money: exact decimals with ISO-4217 currencies and their minor units.
//!
//! # The one rounding rule
//!
//! Amounts keep full precision through every calculation (tier math, proration,
//! per-dimension sums). They are rounded **once, per invoice line**, to the
//! currency's minor unit, with [`LINE_ROUNDING`] (half away from zero, the
//! "commercial" rounding used on invoices: 0.125 USD → 0.13, −0.125 → −0.13).
//! Totals are the sum of already-rounded lines, so an invoice always adds up to
//! the cent and no drift can appear between lines and total.
//!
//! [`round_line`] is the only function that rounds money; every caller that
//! needs a rounded amount goes through it (see `docs/billing-semantics.md`).

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// The rounding strategy applied at the one rounding point (an invoice line).
pub const LINE_ROUNDING: RoundingStrategy = RoundingStrategy::MidpointAwayFromZero;

/// Errors about currencies and amounts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?} (expected an ISO-4217 code such as \"USD\")")]
    UnknownCurrency(String),
    #[error("currency mismatch: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount {amount} has more decimals than {currency} allows ({minor_units})")]
    TooPrecise {
        amount: Decimal,
        currency: Currency,
        minor_units: u32,
    },
    #[error("amount {0} does not fit in 64-bit minor units")]
    Overflow(Decimal),
    #[error("invalid amount {0:?}: expected a decimal number such as \"12.50\"")]
    InvalidAmount(String),
}

/// An ISO-4217 currency: its code and the number of digits of its minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

/// ISO-4217 codes Tollgate accepts, with their minor units. Every zero- and
/// three-decimal currency is listed; two-decimal currencies cover the ones a
/// SaaS bills in. Adding one is adding a row.
const CURRENCIES: &[(&str, u32)] = &[
    // zero decimals
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("ISK", 0),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("PYG", 0),
    ("RWF", 0),
    ("UGX", 0),
    ("UYI", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    // three decimals
    ("BHD", 3),
    ("IQD", 3),
    ("JOD", 3),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("TND", 3),
    // four decimals
    ("CLF", 4),
    ("UYW", 4),
    // two decimals
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("RON", 2),
    ("RUB", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("ZAR", 2),
];

impl Currency {
    pub const USD: Currency = Currency {
        code: "USD",
        minor_units: 2,
    };
    pub const EUR: Currency = Currency {
        code: "EUR",
        minor_units: 2,
    };
    pub const JPY: Currency = Currency {
        code: "JPY",
        minor_units: 0,
    };
    pub const KWD: Currency = Currency {
        code: "KWD",
        minor_units: 3,
    };

    /// Looks a code up (case-insensitive: "usd" is USD).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(code))
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point of the currency's minor unit (USD 2, JPY 0, KWD 3).
    pub fn minor_units(self) -> u32 {
        self.minor_units
    }

    /// The smallest amount the currency can express (0.01 USD, 1 JPY, 0.001 KWD).
    pub fn minor_unit(self) -> Decimal {
        Decimal::new(1, self.minor_units)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::from_code(&s).map_err(serde::de::Error::custom)
    }
}

/// Rounds an amount to the currency's minor unit with [`LINE_ROUNDING`].
///
/// This is the single rounding point for money in Tollgate: it is applied to each
/// invoice (or quote) line, never to intermediate values.
pub fn round_line(amount: Decimal, currency: Currency) -> Decimal {
    let mut r = amount.round_dp_with_strategy(currency.minor_units, LINE_ROUNDING);
    // Show the currency's precision: 339.5 USD reads "339.50", 100 JPY reads "100".
    r.rescale(currency.minor_units);
    r
}

/// An exact amount of money in one currency. Serialized in the API as
/// `{"amount": "339.50", "currency": "USD"}` (the amount is a decimal string in
/// major units, never a JSON float).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money::new(Decimal::ZERO, currency)
    }

    /// Parses a decimal string in major units ("12.50").
    pub fn parse(amount: &str, currency: Currency) -> Result<Money, MoneyError> {
        let amount = Decimal::from_str_exact(amount.trim())
            .map_err(|_| MoneyError::InvalidAmount(amount.to_string()))?;
        Ok(Money::new(amount, currency))
    }

    /// This amount rounded at the invoice-line rounding point.
    pub fn round_line(self) -> Money {
        Money::new(round_line(self.amount, self.currency), self.currency)
    }

    /// Whether the amount is already expressible in the currency's minor unit.
    pub fn is_minor_exact(self) -> bool {
        self.amount.normalize().scale() <= self.currency.minor_units
    }

    /// Integer minor units (cents for USD, yen for JPY). The amount must already be
    /// exact in minor units (round it first with [`Money::round_line`]).
    pub fn to_minor_units(self) -> Result<i64, MoneyError> {
        if !self.is_minor_exact() {
            return Err(MoneyError::TooPrecise {
                amount: self.amount,
                currency: self.currency,
                minor_units: self.currency.minor_units,
            });
        }
        let scaled = self.amount * Decimal::from(10_i64.pow(self.currency.minor_units));
        i64::try_from(scaled.normalize()).map_err(|_| MoneyError::Overflow(self.amount))
    }

    pub fn from_minor_units(units: i64, currency: Currency) -> Money {
        Money::new(Decimal::new(units, currency.minor_units), currency)
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        self.amount
            .checked_add(other.amount)
            .map(|a| Money::new(a, self.currency))
            .ok_or(MoneyError::Overflow(self.amount))
    }

    pub fn is_zero(self) -> bool {
        self.amount.is_zero()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn semantics_minor_units_of_usd_jpy_kwd() {
        assert_eq!(Currency::from_code("usd").unwrap().minor_units(), 2);
        assert_eq!(Currency::from_code("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::from_code("KWD").unwrap().minor_units(), 3);
        assert!(matches!(
            Currency::from_code("XXX"),
            Err(MoneyError::UnknownCurrency(_))
        ));
    }

    #[test]
    fn semantics_rounding_is_half_away_from_zero_at_the_minor_unit() {
        assert_eq!(round_line(dec!(0.125), Currency::USD), dec!(0.13));
        assert_eq!(round_line(dec!(-0.125), Currency::USD), dec!(-0.13));
        assert_eq!(round_line(dec!(0.124999), Currency::USD), dec!(0.12));
        assert_eq!(round_line(dec!(99.5), Currency::JPY), dec!(100));
        assert_eq!(round_line(dec!(1.0005), Currency::KWD), dec!(1.001));
        assert_eq!(round_line(dec!(339.5), Currency::USD).to_string(), "339.50");
    }

    #[test]
    fn semantics_minor_unit_round_trip() {
        let m = Money::parse("339.50", Currency::USD).unwrap();
        assert_eq!(m.to_minor_units().unwrap(), 33950);
        assert_eq!(Money::from_minor_units(33950, Currency::USD), m);
        assert_eq!(
            Money::new(dec!(1500), Currency::JPY)
                .to_minor_units()
                .unwrap(),
            1500
        );
        assert!(
            Money::new(dec!(0.001), Currency::USD)
                .to_minor_units()
                .is_err()
        );
    }

    #[test]
    fn semantics_money_serializes_as_decimal_string() {
        let m = Money::parse("339.50", Currency::USD).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"339.50","currency":"USD"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn semantics_adding_different_currencies_is_an_error() {
        let a = Money::zero(Currency::USD);
        let b = Money::zero(Currency::EUR);
        assert!(matches!(
            a.checked_add(b),
            Err(MoneyError::CurrencyMismatch(..))
        ));
    }
}
