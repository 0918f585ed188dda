//! Loading a catalog from TOML: parse into a TOML tree, then walk it by hand so
//! that every problem of the file is reported at once, each at its path.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use toml::{Table, Value as Toml};

use super::errors::{CatalogError, CatalogErrors};
use super::model::{
    BaseBilling, Catalog, Enforcement, Entitlement, Feature, FeatureKind, GaugeEntitlement, Limit,
    MeteredEntitlement, Plan, RateEntitlement, Threshold, Value, ValueType,
    default_alert_thresholds,
};
use crate::money::{Currency, Money};
use crate::period::{Anchoring, Interval, ResetPeriod};
use crate::pricing::{Charge, ChargePrice, DimensionPrice, Dimensional, PriceModel, Tier};

/// Parses and validates a catalog. `source_name` (usually the file name) only
/// prefixes the error lines; the caller reads the file.
///
/// Returns every problem found (unknown keys, wrong types, negative numbers,
/// unknown features, entitlements that do not fit their feature, invalid price
/// tables, …), each as `path: message`, or the validated [`Catalog`] with its
/// plans sorted by tier. Never panics, whatever the input.
pub fn load_catalog(source_name: &str, text: &str) -> Result<Catalog, CatalogErrors> {
    let fail = |errors| CatalogErrors {
        source_name: source_name.to_string(),
        errors,
    };
    let root = match text.parse::<Table>() {
        Ok(root) => root,
        Err(e) => return Err(fail(vec![syntax_error(text, &e)])),
    };
    let mut loader = Loader::default();
    let catalog = loader.catalog(&root);
    match catalog {
        Some(catalog) if loader.errors.is_empty() => Ok(catalog),
        _ => {
            if loader.errors.is_empty() {
                loader.err("", "the catalog is invalid");
            }
            Err(fail(loader.errors))
        }
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> CatalogError {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let position = e.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" at line {line}, column {column}")
    });
    CatalogError::new(
        "",
        format!(
            "TOML syntax error{}: {message}",
            position.unwrap_or_default()
        ),
    )
}

// ---------------------------------------------------------------------------
// Paths, descriptions, suggestions
// ---------------------------------------------------------------------------

/// `parent.key`, quoting keys that are not bare TOML keys.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A short rendering of a TOML value for "got …" in messages.
fn describe(v: &Toml) -> String {
    match v {
        Toml::String(s) => {
            let short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                format!("{:?}…", short)
            } else {
                format!("{s:?}")
            }
        }
        Toml::Integer(i) => i.to_string(),
        Toml::Float(f) => format!("{f:?}"),
        Toml::Boolean(b) => b.to_string(),
        Toml::Datetime(d) => format!("the date-time {d}"),
        Toml::Array(_) => "an array".into(),
        Toml::Table(_) => "a table".into(),
    }
}

const FLOAT_HINT: &str =
    "TOML floats are inexact and not accepted; write fractional numbers as strings, e.g. \"1.5\"";

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The closest candidate, if it is close enough to be a likely typo.
fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&lower, c), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

/// Sorted entries, so errors come out in the same order whatever map backs `Table`.
fn entries(t: &Table) -> Vec<(&String, &Toml)> {
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// `participant_minutes` → `Participant minutes`.
fn humanize(key: &str) -> String {
    let spaced = key.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

const KEY_RULE: &str =
    "keys are 1 to 64 lowercase letters, digits, \"_\" or \"-\", starting with a letter";

// ---------------------------------------------------------------------------
// Keys of each table
// ---------------------------------------------------------------------------

const ROOT_KEYS: &[&str] = &["catalog", "features", "plans"];
const CATALOG_KEYS: &[&str] = &["name", "description", "currency", "alert_thresholds"];
const FEATURE_COMMON_KEYS: &[&str] = &["kind", "name", "unit", "description"];
const FEATURE_ALL_KEYS: &[&str] = &[
    "kind",
    "name",
    "unit",
    "description",
    "reset",
    "window",
    "lease_ttl",
    "value_type",
    "allowed",
];
const PLAN_KEYS: &[&str] = &[
    "name",
    "description",
    "tier",
    "version",
    "currency",
    "base_price",
    "interval",
    "anchoring",
    "billing",
    "trial_days",
    "public",
    "entitlements",
    "charges",
    "alert_thresholds",
];
const METERED_KEYS: &[&str] = &[
    "limit",
    "enforcement",
    "overage",
    "reset",
    "emergency_allowance",
    "emergency_unit_price",
    "alert_thresholds",
];
const GAUGE_KEYS: &[&str] = &["limit", "enforcement", "alert_thresholds"];
const RATE_KEYS: &[&str] = &["limit", "window"];
const CONCURRENCY_KEYS: &[&str] = &["limit"];
const CAP_KEYS: &[&str] = &["max"];
const FLAG_KEYS: &[&str] = &["enabled"];
const VALUE_KEYS: &[&str] = &["value"];
const CHARGE_KEYS: &[&str] = &[
    "key", "metric", "name", "included", "minimum", "currency", "price",
];
const DIMENSIONAL_KEYS: &[&str] = &["group_by", "prices", "default"];
const TIER_KEYS: &[&str] = &["up_to", "unit_price", "flat_fee"];

const FEATURE_KINDS: &[(&str, Kind)] = &[
    ("metered", Kind::Metered),
    ("gauge", Kind::Gauge),
    ("rate", Kind::Rate),
    ("concurrency", Kind::Concurrency),
    ("cap", Kind::Cap),
    ("flag", Kind::Flag),
    ("value", Kind::Value),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Metered,
    Gauge,
    Rate,
    Concurrency,
    Cap,
    Flag,
    Value,
}

const RESETS: &[(&str, ResetPeriod)] = &[
    ("billing_period", ResetPeriod::BillingPeriod),
    ("calendar_month", ResetPeriod::CalendarMonth),
    ("day", ResetPeriod::Day),
    ("hour", ResetPeriod::Hour),
];
const VALUE_TYPES: &[(&str, ValueType)] = &[
    ("string", ValueType::String),
    ("integer", ValueType::Integer),
    ("decimal", ValueType::Decimal),
    ("boolean", ValueType::Boolean),
    ("string_set", ValueType::StringSet),
];
const ENFORCEMENTS: &[(&str, Enforcement)] =
    &[("hard", Enforcement::Hard), ("soft", Enforcement::Soft)];
const INTERVALS: &[(&str, Interval)] = &[("month", Interval::Month), ("year", Interval::Year)];
const ANCHORINGS: &[(&str, Anchoring)] = &[
    ("anniversary", Anchoring::Anniversary),
    ("calendar", Anchoring::Calendar),
];
const BILLINGS: &[(&str, BaseBilling)] = &[
    ("in_advance", BaseBilling::InAdvance),
    ("in_arrears", BaseBilling::InArrears),
];
const MODELS: &[&str] = &["per_unit", "package", "graduated", "volume"];

const LIMIT_EXPECTED: &str = "expected a non-negative integer or \"unlimited\"";
const QUANTITY_EXPECTED: &str = "expected a non-negative integer or decimal string";
const AMOUNT_EXPECTED: &str =
    "expected an amount such as \"49.00\" (a decimal string or an integer)";

const MAX_THRESHOLD_PERCENT: i64 = 1000;
const MAX_TRIAL_DAYS: i64 = 3650;

// ---------------------------------------------------------------------------
// The walker
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Loader {
    errors: Vec<CatalogError>,
    /// Every plan's tier that parsed, valid plan or not, to check uniqueness.
    tiers: Vec<(String, u32)>,
}

/// What a plan needs to know of the features: `None` for a feature that is
/// declared but invalid (its errors are already reported).
type Features = BTreeMap<String, Option<Feature>>;

impl Loader {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CatalogError::new(path, message));
    }

    fn table<'a>(&mut self, path: &str, v: &'a Toml) -> Option<&'a Table> {
        match v {
            Toml::Table(t) => Some(t),
            other => {
                self.err(path, format!("expected a table, got {}", describe(other)));
                None
            }
        }
    }

    fn array<'a>(&mut self, path: &str, v: &'a Toml) -> Option<&'a [Toml]> {
        match v {
            Toml::Array(a) => Some(a),
            other => {
                self.err(path, format!("expected an array, got {}", describe(other)));
                None
            }
        }
    }

    /// Reports every key of `t` not in `allowed`.
    fn check_keys(&mut self, path: &str, t: &Table, allowed: &[&str], context: &str) {
        for (key, _) in entries(t) {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let hint = match suggest(key, allowed.iter().copied()) {
                Some(s) => format!("did you mean {s:?}?"),
                None => format!("{context} take: {}", allowed.join(", ")),
            };
            self.err(join(path, key), format!("unknown key {key:?}; {hint}"));
        }
    }

    /// A required key: reports it missing with `why`.
    fn required<'a>(&mut self, path: &str, t: &'a Table, key: &str, why: &str) -> Option<&'a Toml> {
        let v = t.get(key);
        if v.is_none() {
            self.err(join(path, key), format!("missing; {why}"));
        }
        v
    }

    fn string(&mut self, path: &str, v: &Toml) -> Option<String> {
        match v {
            Toml::String(s) => Some(s.clone()),
            other => {
                self.err(path, format!("expected a string, got {}", describe(other)));
                None
            }
        }
    }

    fn non_empty_string(&mut self, path: &str, v: &Toml) -> Option<String> {
        let s = self.string(path, v)?;
        if s.trim().is_empty() {
            self.err(path, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// An optional string key: `Some(None)` when absent, `None` when invalid.
    fn opt_string(&mut self, path: &str, t: &Table, key: &str) -> Option<Option<String>> {
        match t.get(key) {
            None => Some(None),
            Some(v) => self.non_empty_string(&join(path, key), v).map(Some),
        }
    }

    fn boolean(&mut self, path: &str, v: &Toml) -> Option<bool> {
        match v {
            Toml::Boolean(b) => Some(*b),
            other => {
                self.err(
                    path,
                    format!("expected true or false, got {}", describe(other)),
                );
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, path: &str, v: &Toml, options: &[(&str, T)]) -> Option<T> {
        let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
        let expected = format!("expected one of {}", names.join(", "));
        match v {
            Toml::String(s) => {
                if let Some((_, t)) = options.iter().find(|(n, _)| n == s) {
                    return Some(*t);
                }
                let hint = did_you_mean(s, options.iter().map(|(n, _)| *n));
                self.err(path, format!("{expected}, got {s:?}{hint}"));
                None
            }
            other => {
                self.err(path, format!("{expected}, got {}", describe(other)));
                None
            }
        }
    }

    /// An optional choice key with a default.
    fn opt_choice<T: Copy>(
        &mut self,
        path: &str,
        t: &Table,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Option<T> {
        match t.get(key) {
            None => Some(default),
            Some(v) => self.choice(&join(path, key), v, options),
        }
    }

    /// Any decimal: an integer or a decimal string (floats rejected).
    fn decimal(&mut self, path: &str, v: &Toml, expected: &str) -> Option<Decimal> {
        let parsed = match v {
            Toml::Integer(i) => Some(Decimal::from(*i)),
            Toml::String(s) => Decimal::from_str_exact(s).ok(),
            Toml::Float(f) => {
                self.err(path, format!("{expected}, got {f:?}: {FLOAT_HINT}"));
                return None;
            }
            _ => None,
        };
        if parsed.is_none() {
            self.err(path, format!("{expected}, got {}", describe(v)));
        }
        parsed
    }

    fn non_negative(&mut self, path: &str, v: &Toml, expected: &str) -> Option<Decimal> {
        let d = self.decimal(path, v, expected)?;
        if d < Decimal::ZERO {
            let hint = if expected == LIMIT_EXPECTED && d == Decimal::NEGATIVE_ONE {
                " (-1 does not mean unlimited here: write \"unlimited\")"
            } else {
                ""
            };
            self.err(path, format!("{expected}, got {}{hint}", describe(v)));
            return None;
        }
        Some(d)
    }

    fn limit(&mut self, path: &str, v: &Toml) -> Option<Limit> {
        match v {
            Toml::String(s) if s == "unlimited" => Some(Limit::Unlimited),
            _ => self
                .non_negative(path, v, LIMIT_EXPECTED)
                .map(Limit::Finite),
        }
    }

    /// An integer in `min..=max`.
    fn integer(&mut self, path: &str, v: &Toml, min: i64, max: i64) -> Option<i64> {
        let expected = match (min, max) {
            (0, m) if m == i64::from(u32::MAX) => "expected a non-negative integer".to_string(),
            (n, m) if m == i64::from(u32::MAX) => format!("expected an integer of at least {n}"),
            (n, m) => format!("expected an integer from {n} to {m}"),
        };
        match v {
            Toml::Integer(i) if (min..=max).contains(i) => Some(*i),
            other => {
                self.err(path, format!("{expected}, got {}", describe(other)));
                None
            }
        }
    }

    fn u32_in(&mut self, path: &str, v: &Toml, min: u32, max: u32) -> Option<u32> {
        self.integer(path, v, i64::from(min), i64::from(max))
            .and_then(|i| u32::try_from(i).ok())
    }

    /// A duration such as `"30s"`, `"1m"`, `"1h30m"`, `"1d"`, in seconds (> 0).
    fn duration(&mut self, path: &str, v: &Toml) -> Option<u64> {
        let parsed = match v {
            Toml::String(s) => parse_duration(s),
            _ => None,
        };
        if parsed.is_none() {
            self.err(
                path,
                format!(
                    "expected a duration such as \"30s\", \"1m\", \"1h\" or \"1d\", got {}",
                    describe(v)
                ),
            );
        }
        parsed
    }

    fn currency(&mut self, path: &str, v: &Toml) -> Option<Currency> {
        let code = self.string(path, v)?;
        match Currency::from_code(&code) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(path, e.to_string());
                None
            }
        }
    }

    /// An array of distinct strings.
    fn string_set(&mut self, path: &str, v: &Toml) -> Option<BTreeSet<String>> {
        let items = match v {
            Toml::Array(a) => a,
            other => {
                self.err(
                    path,
                    format!("expected an array of strings, got {}", describe(other)),
                );
                return None;
            }
        };
        let mut set = BTreeSet::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item {
                Toml::String(s) => {
                    if !set.insert(s.clone()) {
                        self.err(index(path, i), format!("{s:?} is listed twice"));
                        ok = false;
                    }
                }
                other => {
                    self.err(
                        index(path, i),
                        format!("expected a string, got {}", describe(other)),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(set)
    }

    fn thresholds(&mut self, path: &str, v: &Toml) -> Option<Vec<Threshold>> {
        let items = self.array(path, v)?;
        let mut out: Vec<Threshold> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let at = index(path, i);
            match self.threshold(&at, item) {
                Some(t) if out.contains(&t) => {
                    self.err(at, format!("threshold {t} is listed twice"));
                    ok = false;
                }
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn threshold(&mut self, path: &str, v: &Toml) -> Option<Threshold> {
        const EXPECTED: &str =
            "expected a percentage (80 or \"80%\") or an absolute quantity ({ units = 900 })";
        let percent = match v {
            Toml::Integer(i) => Some(Decimal::from(*i)),
            Toml::String(s) => {
                Decimal::from_str_exact(s.strip_suffix('%').unwrap_or(s).trim()).ok()
            }
            Toml::Table(t) => {
                self.check_keys(path, t, &["percent", "units"], "thresholds");
                return match (t.get("percent"), t.get("units")) {
                    (Some(p), None) => {
                        let p = self.decimal(&join(path, "percent"), p, EXPECTED)?;
                        self.percent_in_range(&join(path, "percent"), p)
                    }
                    (None, Some(u)) => {
                        let at = join(path, "units");
                        let u = self.decimal(&at, u, QUANTITY_EXPECTED)?;
                        if u <= Decimal::ZERO {
                            self.err(at, format!("must be greater than 0, got {u}"));
                            return None;
                        }
                        Some(Threshold::Units(u))
                    }
                    _ => {
                        self.err(path, "write either { percent = 80 } or { units = 900 }");
                        None
                    }
                };
            }
            Toml::Float(f) => {
                self.err(path, format!("{EXPECTED}, got {f:?}: {FLOAT_HINT}"));
                return None;
            }
            _ => None,
        };
        match percent {
            Some(p) => self.percent_in_range(path, p),
            None => {
                self.err(path, format!("{EXPECTED}, got {}", describe(v)));
                None
            }
        }
    }

    fn percent_in_range(&mut self, path: &str, p: Decimal) -> Option<Threshold> {
        if p <= Decimal::ZERO || p > Decimal::from(MAX_THRESHOLD_PERCENT) {
            self.err(
                path,
                format!(
                    "a percentage threshold must be above 0% and at most {MAX_THRESHOLD_PERCENT}%, got {}%",
                    p.normalize()
                ),
            );
            return None;
        }
        Some(Threshold::Percent(p))
    }

    // -----------------------------------------------------------------------
    // Catalog
    // -----------------------------------------------------------------------

    fn catalog(&mut self, root: &Table) -> Option<Catalog> {
        self.check_keys("", root, ROOT_KEYS, "a catalog file's top-level tables");

        let mut name = None;
        let mut description = Some(None);
        let mut currency = Some(None);
        let mut thresholds = Some(default_alert_thresholds());
        match root.get("catalog") {
            None => self.err(
                "catalog",
                "missing; start the file with a [catalog] table giving at least its name",
            ),
            Some(v) => {
                if let Some(t) = self.table("catalog", v) {
                    self.check_keys("catalog", t, CATALOG_KEYS, "[catalog] keys");
                    name = self
                        .required(
                            "catalog",
                            t,
                            "name",
                            "the catalog needs a name (the product's)",
                        )
                        .and_then(|v| self.non_empty_string("catalog.name", v));
                    description = self.opt_string("catalog", t, "description");
                    currency = match t.get("currency") {
                        None => Some(None),
                        Some(v) => self.currency("catalog.currency", v).map(Some),
                    };
                    if let Some(v) = t.get("alert_thresholds") {
                        thresholds = self.thresholds("catalog.alert_thresholds", v);
                    }
                }
            }
        }

        let mut features: Features = BTreeMap::new();
        if let Some(v) = root.get("features")
            && let Some(t) = self.table("features", v)
        {
            for (key, v) in entries(t) {
                let feature = self.feature(key, &join("features", key), v);
                features.insert(key.clone(), feature);
            }
        }

        let mut plans = Vec::new();
        let mut plans_ok = true;
        match root.get("plans") {
            None => self.err(
                "plans",
                "missing; a catalog defines at least one plan ([plans.<key>])",
            ),
            Some(v) => {
                if let Some(t) = self.table("plans", v) {
                    if t.is_empty() {
                        self.err(
                            "plans",
                            "a catalog defines at least one plan ([plans.<key>])",
                        );
                    }
                    for (key, v) in entries(t) {
                        let plan = self.plan(
                            key,
                            &join("plans", key),
                            v,
                            &features,
                            currency,
                            thresholds.as_deref(),
                        );
                        match plan {
                            Some(p) => plans.push(p),
                            None => plans_ok = false,
                        }
                    }
                }
            }
        }

        // Tiers rank plans: they must be unique.
        let mut seen: BTreeMap<u32, String> = BTreeMap::new();
        for (key, tier) in std::mem::take(&mut self.tiers) {
            if let Some(other) = seen.get(&tier) {
                self.err(
                    join(&join("plans", &key), "tier"),
                    format!(
                        "tier {tier} is already used by plan {other:?}; tiers rank plans (higher = more capable) and must be unique"
                    ),
                );
                plans_ok = false;
            } else {
                seen.insert(tier, key);
            }
        }

        plans.sort_by_key(|p| p.tier);
        let features = features
            .into_iter()
            .map(|(k, f)| f.map(|f| (k, f)))
            .collect::<Option<BTreeMap<_, _>>>();
        if !plans_ok {
            return None;
        }
        Some(Catalog {
            name: name?,
            description: description?,
            currency: currency?,
            features: features?,
            plans,
        })
    }

    // -----------------------------------------------------------------------
    // Features
    // -----------------------------------------------------------------------

    fn feature(&mut self, key: &str, path: &str, v: &Toml) -> Option<Feature> {
        let t = self.table(path, v)?;
        let key_ok = valid_key(key);
        if !key_ok {
            self.err(path, format!("invalid feature key {key:?}: {KEY_RULE}"));
        }
        let kind = self
            .required(
                path,
                t,
                "kind",
                "one of \"metered\", \"gauge\", \"rate\", \"concurrency\", \"cap\", \"flag\", \"value\"",
            )
            .and_then(|v| self.choice(&join(path, "kind"), v, FEATURE_KINDS));
        let allowed: Vec<&str> = match kind {
            None => FEATURE_ALL_KEYS.to_vec(),
            Some(k) => {
                let extra: &[&str] = match k {
                    Kind::Metered => &["reset"],
                    Kind::Rate => &["window"],
                    Kind::Concurrency => &["lease_ttl"],
                    Kind::Value => &["value_type", "allowed"],
                    Kind::Gauge | Kind::Cap | Kind::Flag => &[],
                };
                FEATURE_COMMON_KEYS.iter().chain(extra).copied().collect()
            }
        };
        let context = match kind.and_then(|k| FEATURE_KINDS.iter().find(|(_, x)| *x == k)) {
            Some((name, _)) => format!("{name} features"),
            None => "features".into(),
        };
        self.check_keys(path, t, &allowed, &context);
        let name = match t.get("name") {
            None => Some(humanize(key)),
            Some(v) => self.non_empty_string(&join(path, "name"), v),
        };
        let unit = self.opt_string(path, t, "unit");
        let description = self.opt_string(path, t, "description");
        let kind = match kind? {
            Kind::Metered => FeatureKind::Metered {
                reset: self.opt_choice(path, t, "reset", RESETS, ResetPeriod::BillingPeriod)?,
            },
            Kind::Gauge => FeatureKind::Gauge,
            Kind::Rate => {
                let window = self
                    .required(
                        path,
                        t,
                        "window",
                        "a rate feature needs its window, e.g. window = \"1m\"",
                    )
                    .and_then(|v| self.duration(&join(path, "window"), v))?;
                FeatureKind::Rate {
                    window_secs: window,
                }
            }
            Kind::Concurrency => {
                let ttl = match t.get("lease_ttl") {
                    None => Some(DEFAULT_LEASE_TTL_SECS),
                    Some(v) => self.duration(&join(path, "lease_ttl"), v),
                }?;
                FeatureKind::Concurrency {
                    lease_ttl_secs: ttl,
                }
            }
            Kind::Cap => FeatureKind::Cap,
            Kind::Flag => FeatureKind::Flag,
            Kind::Value => {
                let value_type = self
                    .required(
                        path,
                        t,
                        "value_type",
                        "one of \"string\", \"integer\", \"decimal\", \"boolean\", \"string_set\"",
                    )
                    .and_then(|v| self.choice(&join(path, "value_type"), v, VALUE_TYPES));
                let allowed = match t.get("allowed") {
                    None => Some(None),
                    Some(v) => {
                        let at = join(path, "allowed");
                        let set = self.string_set(&at, v);
                        if let Some(vt) = value_type
                            && !matches!(vt, ValueType::String | ValueType::StringSet)
                        {
                            self.err(
                                &at,
                                format!(
                                    "allowed lists the permitted values of string and string_set features, not {}",
                                    vt.name()
                                ),
                            );
                            None
                        } else {
                            set.map(Some)
                        }
                    }
                };
                FeatureKind::Value {
                    value_type: value_type?,
                    allowed: allowed?,
                }
            }
        };
        if !key_ok {
            return None;
        }
        Some(Feature {
            key: key.to_string(),
            name: name?,
            unit: unit?,
            description: description?,
            kind,
        })
    }

    // -----------------------------------------------------------------------
    // Plans
    // -----------------------------------------------------------------------

    fn plan(
        &mut self,
        key: &str,
        path: &str,
        v: &Toml,
        features: &Features,
        default_currency: Option<Option<Currency>>,
        default_thresholds: Option<&[Threshold]>,
    ) -> Option<Plan> {
        let t = self.table(path, v)?;
        let key_ok = valid_key(key);
        if !key_ok {
            self.err(path, format!("invalid plan key {key:?}: {KEY_RULE}"));
        }
        self.check_keys(path, t, PLAN_KEYS, "plans");

        let name = match t.get("name") {
            None => Some(humanize(key)),
            Some(v) => self.non_empty_string(&join(path, "name"), v),
        };
        let description = self.opt_string(path, t, "description");
        let tier = self
            .required(
                path,
                t,
                "tier",
                "every plan needs a tier, its rank (0, 1, 2, …; higher = more capable)",
            )
            .and_then(|v| self.u32_in(&join(path, "tier"), v, 0, u32::MAX));
        if let Some(tier) = tier {
            self.tiers.push((key.to_string(), tier));
        }
        let version = match t.get("version") {
            None => Some(1),
            Some(v) => self.u32_in(&join(path, "version"), v, 1, u32::MAX),
        };
        let currency = match t.get("currency") {
            Some(v) => self.currency(&join(path, "currency"), v),
            // An invalid catalog currency is already reported.
            None => match default_currency {
                None => None,
                Some(Some(c)) => Some(c),
                Some(None) => {
                    self.err(
                        join(path, "currency"),
                        "missing; set the plan's currency here, or a default currency in [catalog]",
                    );
                    None
                }
            },
        };
        let base_price = self
            .required(
                path,
                t,
                "base_price",
                "every plan states its base price (write base_price = \"0\" for a free plan)",
            )
            .and_then(|v| self.non_negative(&join(path, "base_price"), v, AMOUNT_EXPECTED));
        let base_price = match (base_price, currency) {
            (Some(amount), Some(currency)) => {
                let money = Money::new(amount, currency);
                if money.is_minor_exact() {
                    Some(money)
                } else {
                    self.err(
                        join(path, "base_price"),
                        format!(
                            "{amount} has more decimals than {currency} allows ({})",
                            currency.minor_units()
                        ),
                    );
                    None
                }
            }
            _ => None,
        };
        let interval = self.opt_choice(path, t, "interval", INTERVALS, Interval::Month);
        let anchoring = self.opt_choice(path, t, "anchoring", ANCHORINGS, Anchoring::Anniversary);
        let billing = self.opt_choice(path, t, "billing", BILLINGS, BaseBilling::InAdvance);
        let trial_days = match t.get("trial_days") {
            None => Some(None),
            Some(v) => self
                .u32_in(&join(path, "trial_days"), v, 1, MAX_TRIAL_DAYS as u32)
                .map(Some),
        };
        let public = match t.get("public") {
            None => Some(true),
            Some(v) => self.boolean(&join(path, "public"), v),
        };
        let alert_thresholds = match t.get("alert_thresholds") {
            None => default_thresholds.map(<[Threshold]>::to_vec),
            Some(v) => self.thresholds(&join(path, "alert_thresholds"), v),
        };

        // Entitlements.
        let ent_path = join(path, "entitlements");
        let mut entitlements = BTreeMap::new();
        let mut entitlements_ok = true;
        let mut explicit_overage = BTreeSet::new();
        if let Some(v) = t.get("entitlements") {
            if let Some(et) = self.table(&ent_path, v) {
                for (fkey, v) in entries(et) {
                    let at = join(&ent_path, fkey);
                    match features.get(fkey.as_str()) {
                        None => {
                            let hint = did_you_mean(fkey, features.keys().map(String::as_str));
                            self.err(&at, format!("unknown feature {fkey:?}{hint}"));
                            entitlements_ok = false;
                        }
                        Some(None) => entitlements_ok = false,
                        Some(Some(feature)) => match self.entitlement(&at, feature, v) {
                            Some((e, explicit)) => {
                                if explicit {
                                    explicit_overage.insert(fkey.clone());
                                }
                                entitlements.insert(fkey.clone(), e);
                            }
                            None => entitlements_ok = false,
                        },
                    }
                }
            } else {
                entitlements_ok = false;
            }
        }

        // Charges.
        let charges_path = join(path, "charges");
        let mut charges: Vec<Charge> = Vec::new();
        let mut charges_ok = true;
        if let Some(v) = t.get("charges") {
            if let Some(items) = self.array(&charges_path, v) {
                for (i, item) in items.iter().enumerate() {
                    let at = index(&charges_path, i);
                    match self.charge(&at, item, features, currency) {
                        Some(charge) => {
                            if let Some(j) = charges.iter().position(|c| c.key == charge.key) {
                                self.err(
                                    join(&at, "key"),
                                    format!(
                                        "charge key {:?} is already used by charges[{j}]; give this charge its own key",
                                        charge.key
                                    ),
                                );
                                charges_ok = false;
                            } else if let Some(j) =
                                charges.iter().position(|c| c.metric == charge.metric)
                            {
                                self.err(
                                    join(&at, "metric"),
                                    format!(
                                        "{:?} is already priced by charges[{j}]; a metric has at most one charge per plan (use a dimensional price to vary it)",
                                        charge.metric
                                    ),
                                );
                                charges_ok = false;
                            } else {
                                charges.push(charge);
                            }
                        }
                        None => charges_ok = false,
                    }
                }
            } else {
                charges_ok = false;
            }
        }

        // Cross-checks between entitlements and charges.
        if entitlements_ok {
            for (i, charge) in charges.iter().enumerate() {
                if !entitlements.contains_key(&charge.metric) {
                    self.err(
                        join(&index(&charges_path, i), "metric"),
                        format!(
                            "{:?} is not in this plan's entitlements, so its usage is denied and the charge could never bill; add it to [{ent_path}]",
                            charge.metric
                        ),
                    );
                    charges_ok = false;
                }
            }
        }
        if charges_ok {
            for (fkey, e) in entitlements.iter_mut() {
                if let Entitlement::Metered(m) = e
                    && m.enforcement == Enforcement::Soft
                {
                    let charged = charges.iter().any(|c| &c.metric == fkey);
                    if !explicit_overage.contains(fkey) {
                        m.overage = charged;
                    } else if m.overage && !charged {
                        self.err(
                            join(&join(&ent_path, fkey), "overage"),
                            format!(
                                "overage = true but no charge of this plan prices {fkey:?}; add a [[{charges_path}]] with metric = {fkey:?}, or set overage = false to allow usage beyond the limit without billing it"
                            ),
                        );
                        entitlements_ok = false;
                    }
                }
            }
        }

        if !(key_ok && entitlements_ok && charges_ok) {
            return None;
        }
        Some(Plan {
            key: key.to_string(),
            name: name?,
            description: description?,
            tier: tier?,
            version: version?,
            currency: currency?,
            base_price: base_price?,
            interval: interval?,
            anchoring: anchoring?,
            billing: billing?,
            trial_days: trial_days?,
            public: public?,
            entitlements,
            charges,
            alert_thresholds: alert_thresholds?,
        })
    }

    // -----------------------------------------------------------------------
    // Entitlements
    // -----------------------------------------------------------------------

    /// The entitlement of `feature` written at `path`, and whether `overage`
    /// was written explicitly.
    fn entitlement(
        &mut self,
        path: &str,
        feature: &Feature,
        v: &Toml,
    ) -> Option<(Entitlement, bool)> {
        let fkey = &feature.key;
        let kind = feature.kind.name();
        match &feature.kind {
            FeatureKind::Flag => {
                let enabled = match v {
                    Toml::Boolean(b) => Some(*b),
                    Toml::Table(t) => {
                        self.check_keys(path, t, FLAG_KEYS, "flag entitlements");
                        self.required(path, t, "enabled", "write { enabled = true } or just true")
                            .and_then(|v| self.boolean(&join(path, "enabled"), v))
                    }
                    other => {
                        self.err(
                            path,
                            format!(
                                "{fkey} is a flag feature: expected true or false, got {}",
                                describe(other)
                            ),
                        );
                        None
                    }
                }?;
                Some((Entitlement::Flag { enabled }, false))
            }
            FeatureKind::Value {
                value_type,
                allowed,
            } => {
                let (at, raw) = match v {
                    Toml::Table(t) => {
                        self.check_keys(path, t, VALUE_KEYS, "value entitlements");
                        let raw = self.required(
                            path,
                            t,
                            "value",
                            "write { value = … } or just the value",
                        )?;
                        (join(path, "value"), raw)
                    }
                    other => (path.to_string(), other),
                };
                let value = self.value(&at, feature, *value_type, allowed.as_ref(), raw)?;
                Some((Entitlement::Value { value }, false))
            }
            FeatureKind::Metered { .. }
            | FeatureKind::Gauge
            | FeatureKind::Rate { .. }
            | FeatureKind::Concurrency { .. }
            | FeatureKind::Cap => {
                let (limit_key, keys): (&str, &[&str]) = match feature.kind {
                    FeatureKind::Metered { .. } => ("limit", METERED_KEYS),
                    FeatureKind::Gauge => ("limit", GAUGE_KEYS),
                    FeatureKind::Rate { .. } => ("limit", RATE_KEYS),
                    FeatureKind::Concurrency { .. } => ("limit", CONCURRENCY_KEYS),
                    _ => ("max", CAP_KEYS),
                };
                let empty = Table::new();
                let (t, limit) = match v {
                    Toml::Table(t) => {
                        self.check_keys(path, t, keys, &format!("{kind} entitlements"));
                        let limit = self
                            .required(
                                path,
                                t,
                                limit_key,
                                &format!("a {kind} entitlement states its {limit_key} (a number or \"unlimited\")"),
                            )
                            .and_then(|v| self.limit(&join(path, limit_key), v));
                        (t, limit)
                    }
                    Toml::Integer(_) | Toml::String(_) | Toml::Float(_) => {
                        (&empty, self.limit(path, v))
                    }
                    other => {
                        self.err(
                            path,
                            format!(
                                "{fkey} is a {kind} feature: expected a {limit_key} (a non-negative integer, a decimal string or \"unlimited\") or a table such as {{ {limit_key} = 100 }}, got {}",
                                describe(other)
                            ),
                        );
                        return None;
                    }
                };
                match feature.kind {
                    FeatureKind::Metered { .. } => self.metered(path, t, limit),
                    FeatureKind::Gauge => {
                        let enforcement = self.opt_choice(
                            path,
                            t,
                            "enforcement",
                            ENFORCEMENTS,
                            Enforcement::Hard,
                        );
                        let thresholds = self.opt_thresholds(path, t);
                        Some((
                            Entitlement::Gauge(GaugeEntitlement {
                                limit: limit?,
                                enforcement: enforcement?,
                                alert_thresholds: thresholds?,
                            }),
                            false,
                        ))
                    }
                    FeatureKind::Rate { .. } => {
                        let window = match t.get("window") {
                            None => Some(None),
                            Some(v) => self.duration(&join(path, "window"), v).map(Some),
                        };
                        Some((
                            Entitlement::Rate(RateEntitlement {
                                limit: limit?,
                                window_secs: window?,
                            }),
                            false,
                        ))
                    }
                    FeatureKind::Concurrency { .. } => {
                        Some((Entitlement::Concurrency { limit: limit? }, false))
                    }
                    _ => Some((Entitlement::Cap { max: limit? }, false)),
                }
            }
        }
    }

    fn opt_thresholds(&mut self, path: &str, t: &Table) -> Option<Option<Vec<Threshold>>> {
        match t.get("alert_thresholds") {
            None => Some(None),
            Some(v) => self
                .thresholds(&join(path, "alert_thresholds"), v)
                .map(Some),
        }
    }

    fn metered(
        &mut self,
        path: &str,
        t: &Table,
        limit: Option<Limit>,
    ) -> Option<(Entitlement, bool)> {
        let enforcement = self.opt_choice(path, t, "enforcement", ENFORCEMENTS, Enforcement::Hard);
        let overage = match t.get("overage") {
            None => Some(None),
            Some(v) => self.boolean(&join(path, "overage"), v).map(Some),
        };
        let reset = match t.get("reset") {
            None => Some(None),
            Some(v) => self.choice(&join(path, "reset"), v, RESETS).map(Some),
        };
        let allowance = match t.get("emergency_allowance") {
            None => Some(None),
            Some(v) => self
                .non_negative(&join(path, "emergency_allowance"), v, QUANTITY_EXPECTED)
                .map(Some),
        };
        let unit_price = match t.get("emergency_unit_price") {
            None => Some(None),
            Some(v) => self
                .non_negative(&join(path, "emergency_unit_price"), v, AMOUNT_EXPECTED)
                .map(Some),
        };
        let thresholds = self.opt_thresholds(path, t);

        let mut ok = true;
        if enforcement == Some(Enforcement::Hard) && overage == Some(Some(true)) {
            self.err(
                join(path, "overage"),
                "overage = true needs enforcement = \"soft\": a hard limit denies usage beyond it, so there is no overage to bill",
            );
            ok = false;
        }
        if let Some(Some(_)) = allowance {
            if enforcement == Some(Enforcement::Soft) {
                self.err(
                    join(path, "emergency_allowance"),
                    "an emergency allowance extends a hard limit; a soft limit already allows usage beyond it",
                );
                ok = false;
            } else if limit == Some(Limit::Unlimited) {
                self.err(
                    join(path, "emergency_allowance"),
                    "an unlimited limit needs no emergency allowance",
                );
                ok = false;
            }
        }
        if let (Some(Some(_)), Some(None)) = (unit_price, allowance) {
            self.err(
                join(path, "emergency_unit_price"),
                "prices the emergency allowance, but no emergency_allowance is set",
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        let enforcement = enforcement?;
        let overage = overage?;
        Some((
            Entitlement::Metered(MeteredEntitlement {
                limit: limit?,
                enforcement,
                overage: overage.unwrap_or(false),
                reset: reset?,
                emergency_allowance: allowance?,
                emergency_unit_price: unit_price?,
                alert_thresholds: thresholds?,
            }),
            overage.is_some(),
        ))
    }

    fn value(
        &mut self,
        path: &str,
        feature: &Feature,
        value_type: ValueType,
        allowed: Option<&BTreeSet<String>>,
        v: &Toml,
    ) -> Option<Value> {
        let fkey = &feature.key;
        let wrong = |expected: &str| {
            format!(
                "{fkey} is {} {} value feature: expected {expected}, got {}",
                if value_type == ValueType::Integer {
                    "an"
                } else {
                    "a"
                },
                value_type.name(),
                describe(v)
            )
        };
        let check_allowed = |this: &mut Loader, at: &str, s: &str| -> bool {
            match allowed {
                Some(set) if !set.contains(s) => {
                    let hint = did_you_mean(s, set.iter().map(String::as_str));
                    let list: Vec<String> = set.iter().map(|s| format!("{s:?}")).collect();
                    this.err(
                        at,
                        format!(
                            "{s:?} is not an allowed value of {fkey} ({}){hint}",
                            list.join(", ")
                        ),
                    );
                    false
                }
                _ => true,
            }
        };
        match (value_type, v) {
            (ValueType::String, Toml::String(s)) => {
                check_allowed(self, path, s).then(|| Value::String(s.clone()))
            }
            (ValueType::Integer | ValueType::Decimal, Toml::String(s)) if s == "unlimited" => {
                Some(Value::Unlimited)
            }
            (ValueType::Integer, Toml::Integer(i)) => Some(Value::Integer(*i)),
            (ValueType::Decimal, Toml::Integer(i)) => Some(Value::Decimal(Decimal::from(*i))),
            (ValueType::Decimal, Toml::String(s)) if Decimal::from_str_exact(s).is_ok() => {
                Decimal::from_str_exact(s).ok().map(Value::Decimal)
            }
            (ValueType::Boolean, Toml::Boolean(b)) => Some(Value::Bool(*b)),
            (ValueType::StringSet, Toml::Array(_)) => {
                let set = self.string_set(path, v)?;
                let mut ok = true;
                if let Toml::Array(items) = v {
                    for (i, item) in items.iter().enumerate() {
                        if let Toml::String(s) = item {
                            ok &= check_allowed(self, &index(path, i), s);
                        }
                    }
                }
                ok.then_some(Value::StringSet(set))
            }
            (ValueType::Integer | ValueType::Decimal, Toml::Float(_)) => {
                self.err(path, format!("{}: {FLOAT_HINT}", wrong("a number")));
                None
            }
            (ValueType::String, _) => {
                self.err(path, wrong("a string"));
                None
            }
            (ValueType::Integer, _) => {
                self.err(path, wrong("an integer or \"unlimited\""));
                None
            }
            (ValueType::Decimal, _) => {
                self.err(
                    path,
                    wrong("an integer, a decimal string such as \"1.5\", or \"unlimited\""),
                );
                None
            }
            (ValueType::Boolean, _) => {
                self.err(path, wrong("true or false"));
                None
            }
            (ValueType::StringSet, _) => {
                self.err(
                    path,
                    wrong("an array of strings such as [\"json\", \"txt\"]"),
                );
                None
            }
        }
    }

    // -----------------------------------------------------------------------
    // Charges and price tables
    // -----------------------------------------------------------------------

    fn charge(
        &mut self,
        path: &str,
        v: &Toml,
        features: &Features,
        plan_currency: Option<Currency>,
    ) -> Option<Charge> {
        let t = self.table(path, v)?;
        self.check_keys(path, t, CHARGE_KEYS, "charges");

        let metric_path = join(path, "metric");
        let metric = self
            .required(
                path,
                t,
                "metric",
                "the feature key whose usage this charge prices",
            )
            .and_then(|v| self.string(&metric_path, v));
        let feature = match &metric {
            None => None,
            Some(m) => match features.get(m.as_str()) {
                None => {
                    let hint = did_you_mean(m, features.keys().map(String::as_str));
                    self.err(&metric_path, format!("unknown feature {m:?}{hint}"));
                    None
                }
                Some(None) => None,
                Some(Some(f)) => match f.kind {
                    FeatureKind::Metered { .. } | FeatureKind::Gauge | FeatureKind::Rate { .. } => {
                        Some(f)
                    }
                    _ => {
                        self.err(
                            &metric_path,
                            format!(
                                "{m:?} is a {} feature; charges price consumed quantities: metered, gauge or rate features",
                                f.kind.name()
                            ),
                        );
                        None
                    }
                },
            },
        };
        let key = match t.get("key") {
            None => metric.clone(),
            Some(v) => {
                let at = join(path, "key");
                self.string(&at, v).and_then(|k| {
                    if valid_key(&k) {
                        Some(k)
                    } else {
                        self.err(at, format!("invalid charge key {k:?}: {KEY_RULE}"));
                        None
                    }
                })
            }
        };
        let name = match t.get("name") {
            None => feature.map(|f| f.name.clone()),
            Some(v) => self.non_empty_string(&join(path, "name"), v),
        };
        let included = match t.get("included") {
            None => Some(Decimal::ZERO),
            Some(v) => self.decimal(&join(path, "included"), v, QUANTITY_EXPECTED),
        };
        let minimum = match t.get("minimum") {
            None => Some(None),
            Some(v) => self
                .decimal(&join(path, "minimum"), v, AMOUNT_EXPECTED)
                .map(Some),
        };
        let mut currency_ok = true;
        if let Some(v) = t.get("currency") {
            let at = join(path, "currency");
            match (self.currency(&at, v), plan_currency) {
                (Some(c), Some(plan)) if c != plan => {
                    self.err(
                        at,
                        format!("{c} does not match the plan's currency {plan}; a plan bills in one currency"),
                    );
                    currency_ok = false;
                }
                (None, _) => currency_ok = false,
                _ => {}
            }
        }
        let price = self
            .required(
                path,
                t,
                "price",
                "e.g. price = { model = \"per_unit\", unit_price = \"0.004\" }",
            )
            .and_then(|v| self.charge_price(&join(path, "price"), v));

        let charge = Charge {
            key: key?,
            metric: metric?,
            display_name: name?,
            included: included?,
            price: price?,
            minimum: minimum?,
        };
        feature?;
        let problems = charge.validate();
        let valid = problems.is_empty();
        for (rel, message) in problems {
            self.err(format!("{path}.{}", toml_relative_path(&rel)), message);
        }
        (valid && currency_ok).then_some(charge)
    }

    fn charge_price(&mut self, path: &str, v: &Toml) -> Option<ChargePrice> {
        let t = self.table(path, v)?;
        if !t.contains_key("group_by") {
            return self.price_model(path, t, &[]).map(ChargePrice::Single);
        }
        self.check_keys(path, t, DIMENSIONAL_KEYS, "dimensional prices");
        let group_by = t.get("group_by").and_then(|v| {
            let at = join(path, "group_by");
            let items = self.array(&at, v)?;
            let mut out = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match self.string(&index(&at, i), item) {
                    Some(s) => out.push(s),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        });
        let prices_path = join(path, "prices");
        let prices = match t.get("prices") {
            None => Some(Vec::new()),
            Some(v) => self.array(&prices_path, v).and_then(|items| {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.dimension_price(&index(&prices_path, i), item) {
                        Some(p) => out.push(p),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }),
        };
        let default = match t.get("default") {
            None => Some(None),
            Some(v) => {
                let at = join(path, "default");
                self.table(&at, v)
                    .and_then(|dt| self.price_model(&at, dt, &[]))
                    .map(Some)
            }
        };
        if let (Some(p), Some(None)) = (&prices, &default)
            && p.is_empty()
        {
            self.err(
                path,
                "a dimensional price needs prices = [ { when = { … }, model = … } ] or a default",
            );
            return None;
        }
        Some(ChargePrice::Dimensional(Dimensional {
            group_by: group_by?,
            prices: prices?,
            default: default?,
        }))
    }

    fn dimension_price(&mut self, path: &str, v: &Toml) -> Option<DimensionPrice> {
        let t = self.table(path, v)?;
        let when = self
            .required(
                path,
                t,
                "when",
                "the property values this price applies to, e.g. when = { model = \"gpt-4o\" }",
            )
            .and_then(|v| {
                let at = join(path, "when");
                let wt = self.table(&at, v)?;
                let mut out = BTreeMap::new();
                let mut ok = true;
                for (k, v) in entries(wt) {
                    match self.string(&join(&at, k), v) {
                        Some(s) => {
                            out.insert(k.clone(), s);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            });
        let model = self.price_model(path, t, &["when"]);
        Some(DimensionPrice {
            when: when?,
            model: model?,
        })
    }

    /// A single price model written as `{ model = "…", … }` (plus `extra` keys
    /// that the caller reads).
    fn price_model(&mut self, path: &str, t: &Table, extra: &[&str]) -> Option<PriceModel> {
        let model = self
            .required(
                path,
                t,
                "model",
                "one of \"per_unit\", \"package\", \"graduated\", \"volume\" (or group_by for a dimensional price)",
            )
            .and_then(|v| {
                let options: Vec<(&str, &str)> = MODELS.iter().map(|m| (*m, *m)).collect();
                self.choice(&join(path, "model"), v, &options)
            });
        let own: &[&str] = match model {
            Some("per_unit") => &["unit_price"],
            Some("package") => &["package_size", "package_price"],
            Some("graduated" | "volume") => &["tiers"],
            _ => &["unit_price", "package_size", "package_price", "tiers"],
        };
        let allowed: Vec<&str> = ["model"].iter().chain(own).chain(extra).copied().collect();
        let context = match model {
            Some(m) => format!("{m} prices"),
            None => "prices".into(),
        };
        self.check_keys(path, t, &allowed, &context);
        let amount = |this: &mut Loader, key: &str, why: &str| {
            this.required(path, t, key, why)
                .and_then(|v| this.decimal(&join(path, key), v, AMOUNT_EXPECTED))
        };
        match model? {
            "per_unit" => {
                let unit_price = amount(
                    self,
                    "unit_price",
                    "the price of one unit, e.g. unit_price = \"0.004\"",
                );
                Some(PriceModel::PerUnit {
                    unit_price: unit_price?,
                })
            }
            "package" => {
                let size = amount(
                    self,
                    "package_size",
                    "units per package, e.g. package_size = 1000",
                );
                let price = amount(self, "package_price", "the price of one package");
                Some(PriceModel::Package {
                    package_size: size?,
                    package_price: price?,
                })
            }
            m => {
                let tiers = self
                    .required(path, t, "tiers", "tiers = [ { up_to = 1000, unit_price = \"0\" }, { unit_price = \"0.01\" } ]")
                    .and_then(|v| self.tiers(&join(path, "tiers"), v))?;
                Some(if m == "volume" {
                    PriceModel::Volume { tiers }
                } else {
                    PriceModel::Graduated { tiers }
                })
            }
        }
    }

    fn tiers(&mut self, path: &str, v: &Toml) -> Option<Vec<Tier>> {
        let items = self.array(path, v)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let at = index(path, i);
            let Some(t) = self.table(&at, item) else {
                ok = false;
                continue;
            };
            self.check_keys(&at, t, TIER_KEYS, "tiers");
            let up_to = match t.get("up_to") {
                None => Some(None),
                Some(Toml::String(s)) if s == "unlimited" => Some(None),
                Some(v) => self
                    .decimal(&join(&at, "up_to"), v, QUANTITY_EXPECTED)
                    .map(Some),
            };
            let unit_price = self
                .required(&at, t, "unit_price", "the price of one unit in this tier")
                .and_then(|v| self.decimal(&join(&at, "unit_price"), v, AMOUNT_EXPECTED));
            let flat_fee = match t.get("flat_fee") {
                None => Some(Decimal::ZERO),
                Some(v) => self.decimal(&join(&at, "flat_fee"), v, AMOUNT_EXPECTED),
            };
            match (up_to, unit_price, flat_fee) {
                (Some(up_to), Some(unit_price), Some(flat_fee)) => out.push(Tier {
                    up_to,
                    unit_price,
                    flat_fee,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// The default lease time-to-live of concurrency features: 5 minutes.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 300;

/// `"30s"`, `"1m"`, `"1h30m"`, `"1d"` → seconds (> 0).
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return None,
        };
        if digits.is_empty() {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        any = true;
    }
    (any && digits.is_empty() && total > 0).then_some(total)
}

/// Maps a path relative to a charge, as [`Charge::validate`] reports it, to the
/// TOML layout: a dimension price's model fields sit next to its `when`
/// (`price.prices[0].model.unit_price` → `price.prices[0].unit_price`).
fn toml_relative_path(rel: &str) -> String {
    if rel.starts_with("price.prices[")
        && let Some(i) = rel.find("].model")
    {
        let rest = &rel[i + "].model".len()..];
        return format!("{}]{rest}", &rel[..i]);
    }
    rel.to_string()
}
