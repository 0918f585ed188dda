//! Proration of a base price across a mid-period change.
