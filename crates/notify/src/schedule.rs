//! When a failed delivery is tried again.
//!
//! After the n-th failed attempt the next one waits the n-th delay of the
//! schedule (default 5 s, 30 s, 2 min, 10 min, 1 h, 4 h, 12 h, 24 h), spread by
//! a jitter of ±`jitter_percent` so that receivers coming back up are not hit by
//! every sender at the same second. A `Retry-After` from the receiver (seconds
//! or an HTTP date, at most 24 h) is honoured: the next attempt is never earlier
//! than it asks. After the last delay the delivery gives up (`failed`); an admin
//! can still retry it or replay its time range.
//!
//! The jitter is derived from the delivery id and the attempt number (a hash),
//! not from a random source, so a schedule can be checked exactly in tests.

use jiff::{SignedDuration, Timestamp};
use sha2::Digest;

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: SignedDuration = SignedDuration::from_hours(24);

/// Delays between attempts, with jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    pub delays: Vec<SignedDuration>,
    pub jitter_percent: u32,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays: DEFAULT_DELAYS_SECS
                .iter()
                .map(|s| SignedDuration::from_secs(*s))
                .collect(),
            jitter_percent: 20,
        }
    }
}

/// The default schedule, in seconds.
pub const DEFAULT_DELAYS_SECS: [i64; 8] = [5, 30, 120, 600, 3_600, 14_400, 43_200, 86_400];

impl RetrySchedule {
    /// How many attempts a delivery gets in all (the first and one per delay).
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wait before the next attempt after `failed` failed attempts of
    /// delivery `key`, or `None` when the schedule is exhausted.
    pub fn next_delay(
        &self,
        key: &str,
        failed: u32,
        retry_after: Option<SignedDuration>,
    ) -> Option<SignedDuration> {
        let index = usize::try_from(failed.checked_sub(1)?).ok()?;
        let base = *self.delays.get(index)?;
        let jittered = jitter(base, self.jitter_percent, key, failed);
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }
}

/// `base` scaled by a factor in `[1 - p/100, 1 + p/100]` picked by a hash of
/// (`key`, `attempt`), to the millisecond.
fn jitter(base: SignedDuration, percent: u32, key: &str, attempt: u32) -> SignedDuration {
    let p = i64::from(percent.min(100));
    if p == 0 {
        return base;
    }
    let digest = sha2::Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let h = u64::from_be_bytes(first);
    let span = u64::try_from(2 * p * 100 + 1).unwrap_or(1);
    // Basis points in [-p*100, p*100].
    let bp = i64::try_from(h % span).unwrap_or(0) - p * 100;
    let ms = i64::try_from(base.as_millis()).unwrap_or(i64::MAX);
    SignedDuration::from_millis(ms.saturating_add(ms.saturating_mul(bp) / 10_000))
}

/// A `Retry-After` value (delay seconds or an HTTP date) as a wait from `now`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<SignedDuration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return (secs >= 0).then(|| SignedDuration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = Timestamp::try_from(at).ok()?;
    let wait = at.duration_since(now);
    Some(wait.max(SignedDuration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_schedule_within_the_jitter() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 9);
        assert_eq!(s.next_delay("dlv_a", 0, None), None);
        for (n, base) in DEFAULT_DELAYS_SECS.iter().enumerate() {
            let failed = u32::try_from(n + 1).unwrap_or(0);
            let d = s.next_delay("dlv_a", failed, None).map(|d| d.as_millis());
            let base = i128::from(*base) * 1000;
            assert!(
                d.is_some_and(|d| d >= base * 8 / 10 && d <= base * 12 / 10),
                "attempt {failed}: {d:?} not within 20 % of {base} ms"
            );
        }
        assert_eq!(s.next_delay("dlv_a", 9, None), None);
    }

    #[test]
    fn the_jitter_differs_between_deliveries_and_is_repeatable() {
        let s = RetrySchedule::default();
        let a = s.next_delay("dlv_a", 3, None);
        assert_eq!(a, s.next_delay("dlv_a", 3, None));
        let distinct: std::collections::BTreeSet<_> = (0..20)
            .filter_map(|i| s.next_delay(&format!("dlv_{i}"), 3, None))
            .collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_day() -> Result<(), jiff::Error> {
        let s = RetrySchedule {
            jitter_percent: 0,
            ..RetrySchedule::default()
        };
        let now: Timestamp = "2026-11-23T12:00:00Z".parse()?;
        let ask = parse_retry_after("120", now);
        assert_eq!(ask, Some(SignedDuration::from_secs(120)));
        assert_eq!(
            s.next_delay("d", 1, ask),
            Some(SignedDuration::from_secs(120))
        );
        // A shorter request than the schedule does not hurry the retry.
        assert_eq!(
            s.next_delay("d", 2, Some(SignedDuration::from_secs(1))),
            Some(SignedDuration::from_secs(30))
        );
        let date = parse_retry_after("Mon, 23 Nov 2026 12:10:00 GMT", now);
        assert_eq!(date, Some(SignedDuration::from_secs(600)));
        assert_eq!(
            s.next_delay("d", 1, Some(SignedDuration::from_hours(100))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        Ok(())
    }
}
