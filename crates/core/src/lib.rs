//! Tollgate's pure domain core.
//!
//! Everything here is a pure function over values: no I/O, no wall clock (time is
//! always an argument), no dependency on the rest of the workspace. This is where
//! correctness lives: money, billing periods, the catalog (plans-as-code), price
//! models, quotes and proration.

pub mod billing;
pub mod catalog;
pub mod money;
pub mod period;
pub mod pricing;
pub mod proration;
