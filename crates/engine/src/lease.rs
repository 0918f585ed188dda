//! Concurrency leases: at most N held at once per (customer, feature). A lease
//! expires `ttl` after it was acquired or last heartbeated, so a holder that
//! died frees its slot by itself. Leases live in memory only: after a restart
//! they are gone and heartbeats answer `lease_not_found`; holders re-acquire.

use jiff::Timestamp;

#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub id: String,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseSet {
    pub leases: Vec<Lease>,
}

impl LeaseSet {
    /// Drops leases whose expiry is at or before `now`; returns how many.
    pub(crate) fn expire(&mut self, now: Timestamp) -> usize {
        let before = self.leases.len();
        self.leases.retain(|l| l.expires_at > now);
        before - self.leases.len()
    }

    pub(crate) fn active(&mut self, now: Timestamp) -> usize {
        self.expire(now);
        self.leases.len()
    }

    pub(crate) fn find_mut(&mut self, id: &str) -> Option<&mut Lease> {
        self.leases.iter_mut().find(|l| l.id == id)
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Lease> {
        let pos = self.leases.iter().position(|l| l.id == id)?;
        Some(self.leases.swap_remove(pos))
    }

    /// The earliest expiry among held leases.
    pub(crate) fn next_expiry(&self) -> Option<Timestamp> {
        self.leases.iter().map(|l| l.expires_at).min()
    }
}
