//! A bounded memory of keys seen lately: each is remembered for a fixed time, and expired keys
//! are dropped once there are many. Used to skip work this process has just done (a Run the
//! trigger engine created, a completion the ingest recorded).

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Keys remembered for `ttl`; expired ones are dropped when more than `prune_above` are held.
#[derive(Debug)]
pub struct RecentKeys {
    seen: DashMap<String, Instant>,
    ttl: Duration,
    prune_above: usize,
}

impl RecentKeys {
    pub fn new(ttl: Duration, prune_above: usize) -> Self {
        Self { seen: DashMap::new(), ttl, prune_above }
    }

    /// Remembers `key` from now on; whether it was not remembered already (of two callers
    /// remembering the same key at once, one is first).
    pub fn remember(&self, key: String) -> bool {
        if self.seen.len() > self.prune_above {
            self.seen.retain(|_, at| at.elapsed() < self.ttl);
        }
        self.seen.insert(key, Instant::now()).is_none_or(|at| at.elapsed() >= self.ttl)
    }

    /// Whether `key` was remembered less than `ttl` ago.
    pub fn contains(&self, key: &str) -> bool {
        self.seen.get(key).is_some_and(|at| at.elapsed() < self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_and_are_pruned() {
        let keys = RecentKeys::new(Duration::ZERO, 1);
        keys.remember("a".into());
        assert!(!keys.contains("a"), "expired at once");
        keys.remember("b".into());
        keys.remember("c".into());
        assert!(keys.seen.len() <= 2, "expired keys were dropped");

        let keys = RecentKeys::new(Duration::from_secs(600), 10);
        keys.remember("a".into());
        assert!(keys.contains("a"));
        assert!(!keys.contains("b"));
    }
}
