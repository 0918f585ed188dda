//! Identifiers the engine mints (`res_…`, `lse_…`, `grt_…`) and validation of
//! idempotency keys.
//!
//! Ids must stay unique across restarts even when the injected clock is a test
//! clock that restarts at the same instant, so they are built from the real
//! wall clock at engine start, the process id and a counter (they carry no
//! meaning; no business rule reads them).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::EngineError;

/// Prefix of grant ids; allocation buckets with this prefix are grant draws.
pub const GRANT_PREFIX: &str = "grt_";

pub(crate) fn is_grant_id(bucket: &str) -> bool {
    bucket.starts_with(GRANT_PREFIX)
}

#[derive(Debug)]
pub(crate) struct IdGen {
    stem: String,
    next: AtomicU64,
}

impl IdGen {
    pub(crate) fn new() -> IdGen {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default();
        let pid = std::process::id() & 0xffff;
        IdGen {
            stem: format!("{micros:x}{pid:04x}"),
            next: AtomicU64::new(0),
        }
    }

    /// A fresh id such as `res_18c3f0a9b2c41a2b0`.
    pub(crate) fn mint(&self, prefix: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{}{n:x}", self.stem)
    }
}

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Rejects empty keys, keys longer than 255 bytes and keys with control
/// characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), EngineError> {
    if key.is_empty() {
        return Err(EngineError::InvalidIdempotencyKey { reason: "is empty" });
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(EngineError::InvalidIdempotencyKey {
            reason: "is longer than 255 bytes",
        });
    }
    if key.chars().any(char::is_control) {
        return Err(EngineError::InvalidIdempotencyKey {
            reason: "contains control characters",
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_prefixed() {
        let g = IdGen::new();
        let a = g.mint("res");
        let b = g.mint("res");
        assert!(a.starts_with("res_"));
        assert_ne!(a, b);
        assert!(is_grant_id(&IdGen::new().mint("grt")));
    }

    #[test]
    fn idempotency_keys_are_validated() {
        assert!(validate_idempotency_key("order-42").is_ok());
        assert!(validate_idempotency_key(&"k".repeat(255)).is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key(&"k".repeat(256)).is_err());
        assert!(validate_idempotency_key("a\nb").is_err());
        assert!(validate_idempotency_key("a\u{0}b").is_err());
    }
}
