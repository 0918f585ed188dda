//! Injected time. Every expiry, rollover and window in the engine reads the
//! clock it was given, never the system time directly, so tests (and
//! simulations) can drive time with a [`TestClock`].

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;

/// A source of "now".
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Clone, Debug)]
pub struct TestClock {
    now: Arc<Mutex<Timestamp>>,
}

impl TestClock {
    pub fn new(start: Timestamp) -> TestClock {
        TestClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Sets the current time (it may go backwards; the engine tolerates it but
    /// never un-expires what already expired).
    pub fn set(&self, at: Timestamp) {
        *self.now.lock() = at;
    }

    /// Moves the clock forward (or backward with a negative duration).
    /// Saturates at the ends of the representable range.
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock();
        *now = now.checked_add(by).unwrap_or(if by.is_negative() {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        });
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.now.lock()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_moves_only_when_told() {
        let start: Timestamp = "2025-01-31T12:00:00Z".parse().unwrap();
        let clock = TestClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_secs(90));
        assert_eq!(clock.now(), "2025-01-31T12:01:30Z".parse().unwrap());
        let shared = clock.clone();
        shared.set("2025-02-01T00:00:00Z".parse().unwrap());
        assert_eq!(clock.now(), "2025-02-01T00:00:00Z".parse().unwrap());
    }
}
