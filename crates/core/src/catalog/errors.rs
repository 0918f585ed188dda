//! Catalog validation errors: every problem of a catalog file, each at its path.

use std::fmt;

use serde::Serialize;

/// One problem in a catalog, at a dotted path into the TOML document
/// (`plans.pro.entitlements.queries.limit`, `plans.pro.charges[0].price.tiers[1].up_to`).
/// A TOML syntax error has an empty path and its line and column in the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogError {
    pub path: String,
    pub message: String,
}

impl CatalogError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> CatalogError {
        CatalogError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one catalog source, in document order of discovery.
/// Displays one error per line: `pulse.toml: plans.pro.tier: …`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct CatalogErrors {
    /// The name the caller gave the source (usually its file name).
    pub source_name: String,
    pub errors: Vec<CatalogError>,
}

impl CatalogErrors {
    /// The errors as display lines, `source: path: message`.
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| format!("{}: {e}", self.source_name))
            .collect()
    }
}

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}
