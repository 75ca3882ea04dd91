//! A small least-recently-used map from constraints to their compiled
//! start state, so a constraint checked at admission is not compiled again
//! when its sequences start, and repeated schemas compile once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// At most `capacity` entries; inserting past it drops the least recently used.
pub(crate) struct LruCache<K, V> {
    capacity: usize,
    entries: HashMap<K, V>,
    /// Keys, least recently used first.
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V> LruCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        LruCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&mut self, key: &K) -> Option<&V> {
        if self.entries.contains_key(key) {
            self.touch(key);
        }
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.insert(key.clone(), value).is_some() {
            self.touch(&key);
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    fn touch(&mut self, key: &K) {
        if let Some(pos) = self.order.iter().position(|k| k == key) {
            let k = self.order.remove(pos).expect("position is in range");
            self.order.push_back(k);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut c = LruCache::new(2);
        c.insert(1, "a");
        c.insert(2, "b");
        assert_eq!(c.get(&1), Some(&"a"));
        c.insert(3, "c");
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(&"a"));
        assert_eq!(c.get(&3), Some(&"c"));
    }

    proptest! {
        #[test]
        fn never_exceeds_capacity_and_keeps_the_last_insert(
            capacity in 1usize..8,
            keys in proptest::collection::vec(0u8..16, 0..64),
        ) {
            let mut c = LruCache::new(capacity);
            for &k in &keys {
                c.insert(k, k);
                prop_assert!(c.len() <= capacity);
                prop_assert_eq!(c.get(&k), Some(&k));
            }
        }
    }
}
