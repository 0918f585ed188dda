//! The catalog: features and plans as code (TOML), loaded and validated.
//!
//! A catalog file declares the product's **features** (each of one of seven
//! kinds: metered, gauge, rate, concurrency, cap, flag, value) and its **plans**
//! (a price, an interval, a tier rank, entitlements per feature and usage
//! charges). [`load_catalog`] turns the TOML text into a validated [`Catalog`]
//! or reports every problem at once, each at its path
//! (`pulse.toml: plans.pro.entitlements.queries.limit: …`).
//!
//! Published plans are versioned ([`assign_versions`]); [`diff_plans`] lists
//! what changes between two plans (features gained or lost, limits and prices
//! before and after). The format is documented in `docs/catalog.md`.

mod errors;
mod load;
mod model;
mod versioning;

pub use errors::{CatalogError, CatalogErrors};
pub use load::{DEFAULT_LEASE_TTL_SECS, load_catalog, parse_duration};
pub use model::{
    BaseBilling, Catalog, Enforcement, Entitlement, Feature, FeatureKind, GaugeEntitlement, Limit,
    MeteredEntitlement, Plan, RateEntitlement, Threshold, Value, ValueType,
    default_alert_thresholds, format_duration, percent_of_limit,
};
pub use versioning::{
    DiffEffect, PlanDiffEntry, VersionChange, VersionChangeKind, assign_versions,
    describe_charge_price, describe_price_model, diff_plans, fingerprint, same_content,
};
