//! Sliding-window rate limiting, exact at the window's edges.
//!
//! A rate of `limit` per `window` admits a hit at `now` when the hits in
//! `(now − window, now]` plus the new one stay within `limit`. A hit exactly
//! `window` old has left the window: with 1 per minute, a hit at t = 0 allows,
//! at t = 59.999 s denies, at t = 60.000 s allows again. The log holds at most
//! `limit` entries per (customer, feature).

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;

#[derive(Clone, Debug, Default)]
pub(crate) struct RateLog {
    hits: VecDeque<(Timestamp, Decimal)>,
    sum: Decimal,
}

pub(crate) struct RateOutcome {
    pub allowed: bool,
    /// Hits in the window before this one.
    pub used: Decimal,
    /// When enough hits will have left the window for this one to be admitted.
    pub retry_at: Option<Timestamp>,
}

impl RateLog {
    fn expire(&mut self, now: Timestamp, window: SignedDuration) {
        let edge = now.checked_sub(window).unwrap_or(Timestamp::MIN);
        while let Some(&(t, q)) = self.hits.front() {
            if t <= edge {
                self.sum -= q;
                self.hits.pop_front();
            } else {
                break;
            }
        }
    }

    /// Hits currently in the window.
    pub(crate) fn used(&mut self, now: Timestamp, window: SignedDuration) -> Decimal {
        self.expire(now, window);
        self.sum
    }

    /// Decides a hit of `qty`; records it when `apply` and allowed.
    pub(crate) fn admit(
        &mut self,
        now: Timestamp,
        window: SignedDuration,
        limit: Option<Decimal>,
        qty: Decimal,
        apply: bool,
    ) -> RateOutcome {
        self.expire(now, window);
        let used = self.sum;
        let allowed = limit.is_none_or(|l| used + qty <= l);
        let mut retry_at = None;
        if !allowed {
            if let Some(l) = limit {
                // Walk the oldest hits until enough room is freed.
                let mut left = used;
                for &(t, q) in &self.hits {
                    left -= q;
                    if left + qty <= l {
                        retry_at = t.checked_add(window).ok();
                        break;
                    }
                }
            }
        } else if apply {
            self.push(now, qty);
        }
        RateOutcome {
            allowed,
            used,
            retry_at,
        }
    }

    /// Records a hit unconditionally (replay from the ledger, or a bypassed hit).
    pub(crate) fn push(&mut self, at: Timestamp, qty: Decimal) {
        // Keep the log ordered even if hits are replayed slightly out of order.
        let pos = self
            .hits
            .iter()
            .rposition(|&(t, _)| t <= at)
            .map_or(0, |p| p + 1);
        self.hits.insert(pos, (at, qty));
        self.sum += qty;
    }

    /// Removes one hit recorded at `at` (compensation of a failed commit).
    pub(crate) fn undo(&mut self, at: Timestamp, qty: Decimal) {
        if let Some(pos) = self.hits.iter().rposition(|&(t, q)| t == at && q == qty) {
            self.hits.remove(pos);
            self.sum -= qty;
        }
    }

    /// When the window next frees room (the oldest hit leaves it).
    pub(crate) fn next_reset(&self, window: SignedDuration) -> Option<Timestamp> {
        self.hits
            .front()
            .and_then(|&(t, _)| t.checked_add(window).ok())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hits.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn exact_edges_one_per_minute() {
        let mut log = RateLog::default();
        let w = SignedDuration::from_secs(60);
        let lim = Some(dec!(1));
        assert!(
            log.admit(t("2025-01-01T00:00:00Z"), w, lim, dec!(1), true)
                .allowed
        );
        let denied = log.admit(t("2025-01-01T00:00:59.999Z"), w, lim, dec!(1), true);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_at, Some(t("2025-01-01T00:01:00Z")));
        assert!(
            log.admit(t("2025-01-01T00:01:00Z"), w, lim, dec!(1), true)
                .allowed
        );
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn ten_per_minute_slides() {
        let mut log = RateLog::default();
        let w = SignedDuration::from_secs(60);
        let lim = Some(dec!(10));
        for i in 0..10 {
            let at = t("2025-01-01T00:00:00Z") + SignedDuration::from_secs(i * 5);
            assert!(log.admit(at, w, lim, dec!(1), true).allowed);
        }
        assert!(
            !log.admit(t("2025-01-01T00:00:59Z"), w, lim, dec!(1), true)
                .allowed
        );
        // The first hit (t=0) leaves at t=60, the second (t=5) at t=65.
        assert!(
            log.admit(t("2025-01-01T00:01:00Z"), w, lim, dec!(1), true)
                .allowed
        );
        assert!(
            !log.admit(t("2025-01-01T00:01:04Z"), w, lim, dec!(1), true)
                .allowed
        );
        assert!(
            log.admit(t("2025-01-01T00:01:05Z"), w, lim, dec!(1), true)
                .allowed
        );
    }
}
