//! A fast, non-cryptographic hasher for the engine's own maps (customer ids,
//! feature keys). Rotate-xor-multiply over 8-byte words, the scheme of
//! rustc's FxHash. It is not resistant to hash flooding: keys are the host
//! application's customer ids and the catalog's feature keys, not arbitrary
//! attacker input. SipHash cost ~10 % of an in-memory decision.

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn different_ids_hash_differently() {
        let b = FxBuild::default();
        let h = |s: &str| b.hash_one(s);
        assert_ne!(h("cust-000001"), h("cust-000002"));
        assert_ne!(h("a"), h("b"));
        assert_eq!(h("same"), h("same"));
    }
}

/// A customer id as a map key: ids of up to 23 bytes are stored inline in the
/// map's bucket, so a lookup compares them without chasing a pointer (the
/// usual heap string costs a cache miss per lookup over many customers).
#[derive(Clone, Debug)]
pub(crate) enum CustKey {
    Inline { len: u8, buf: [u8; 23] },
    Heap(Box<str>),
}

impl CustKey {
    pub(crate) fn new(s: &str) -> CustKey {
        if s.len() <= 23 {
            let mut buf = [0u8; 23];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            CustKey::Inline {
                len: s.len() as u8,
                buf,
            }
        } else {
            CustKey::Heap(s.into())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // The bytes were copied from a `str`, so this never fails.
            CustKey::Inline { len, buf } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            CustKey::Heap(s) => s,
        }
    }
}

impl std::borrow::Borrow<str> for CustKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for CustKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CustKey {}

impl std::hash::Hash for CustKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly as `str` hashes, so lookups by `&str` find it.
        self.as_str().hash(state);
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keys_hash_and_compare_like_str() {
        let b = FxBuild::default();
        for s in [
            "",
            "cust-000001",
            "exactly-23-bytes-long!!",
            "a-much-longer-customer-identifier-0001",
        ] {
            let k = CustKey::new(s);
            assert_eq!(k.as_str(), s);
            assert_eq!(b.hash_one(&k), b.hash_one(s));
        }
        let m: std::collections::HashMap<CustKey, u32, FxBuild> =
            [(CustKey::new("x"), 1)].into_iter().collect();
        assert_eq!(m.get("x"), Some(&1));
    }
}
