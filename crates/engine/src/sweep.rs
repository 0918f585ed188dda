//! The sweeper: a background task that expires abandoned reservations (they
//! also expire lazily whenever their customer's feature is touched), forgets
//! expired leases and prunes idempotency keys older than the window.

use std::sync::Arc;

use crate::engine::{Engine, Inner};
use crate::recover::settle_expired;
use crate::state::{Idem, Slot};

/// Idempotency keys are pruned every this many sweeps.
const PRUNE_EVERY: u64 = 60;

pub(crate) fn spawn(engine: &Engine) {
    let weak = engine.weak();
    let every = engine.inner.config.sweep_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            sweep(&inner, n % PRUNE_EVERY == 0);
            n = n.wrapping_add(1);
        }
    });
}

/// One pass. Index entries are collected first and customers locked after, so
/// the sweeper never holds an index shard while waiting for a customer lock.
pub(crate) fn sweep(inner: &Arc<Inner>, prune_keys: bool) {
    let now = inner.now();
    let mut owners: Vec<Arc<str>> = inner
        .reservations
        .iter()
        .map(|e| e.value().clone())
        .collect();
    owners.sort_unstable();
    owners.dedup();
    for c in owners {
        let _ = inner.with_customer(&c, |st| {
            let gone = st.expire_reservations(now);
            settle_expired(inner, st, gone);
        });
    }
    let leases: Vec<(String, Arc<str>, usize)> = inner
        .leases
        .iter()
        .map(|e| (e.key().clone(), e.value().0.clone(), e.value().1))
        .collect();
    for (id, c, f) in leases {
        let alive = inner
            .with_customer(&c, |st| match st.slots.get_mut(f) {
                Some(Slot::Leases(set)) => {
                    set.expire(now);
                    set.leases.iter().any(|l| l.id == id)
                }
                _ => false,
            })
            .unwrap_or(false);
        if !alive {
            inner.leases.remove(&id);
        }
    }
    if prune_keys {
        let cutoff = now
            .checked_sub(inner.config.idempotency_window)
            .unwrap_or(jiff::Timestamp::MIN);
        for cell in inner.customers.iter() {
            let mut st = cell.lock();
            if st.idem.is_empty() {
                continue;
            }
            st.idem.retain(|_, v| match v {
                Idem::Done { at, .. } => *at >= cutoff,
                Idem::Pending { .. } => true,
            });
        }
    }
}

impl Engine {
    /// Runs one sweep now (expiry of reservations and leases, pruning of
    /// idempotency keys older than the window). The background task does this
    /// every `sweep_interval`; tests on a `TestClock` call it directly.
    pub fn sweep_now(&self) {
        sweep(&self.inner, true);
    }
}

/// What the idempotency window holds in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdempotencyFootprint {
    /// Keys remembered (done and pending).
    pub keys: usize,
    /// Bytes they take: hash-table slots (entry + control byte, at the
    /// table's capacity), the key strings' heap blocks (glibc malloc: 8 bytes
    /// of header, 16-byte granules, 32 bytes at least) and answers kept whole.
    pub bytes: usize,
}

fn heap_block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16).max(2) * 16
    }
}

impl Engine {
    /// Counts the idempotency keys held and the memory they take (computed
    /// from the structures, not measured: the process's resident size also
    /// moves with the allocator and the database's page cache).
    pub fn idempotency_footprint(&self) -> IdempotencyFootprint {
        let slot = std::mem::size_of::<(Box<str>, Idem)>() + 1;
        let kept = heap_block(std::mem::size_of::<crate::types::Decision>() + 16);
        let mut f = IdempotencyFootprint::default();
        for cell in self.inner.customers.iter() {
            let st = cell.lock();
            f.keys += st.idem.len();
            f.bytes += st.idem.capacity() * slot;
            for (k, v) in &st.idem {
                f.bytes += heap_block(k.len());
                if let Idem::Done {
                    answer: crate::state::Answer::Kept(_),
                    ..
                } = v
                {
                    f.bytes += kept;
                }
            }
        }
        f
    }
}
