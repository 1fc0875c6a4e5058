//! Abuse limits (DESIGN §7): failed authentications per client address, and
//! requests per token. Token buckets: `per_minute` of capacity, refilled at
//! `per_minute` a minute, so a client may burst up to the limit and then goes
//! at the limit's pace. Memory is bounded: at most [`MAX_KEYS`] keys are
//! tracked; full buckets are forgotten first, then the least recently used.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys (addresses or tokens) tracked by one limiter.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token-bucket rate limiter per key.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32) -> Option<Self> {
        (per_minute > 0).then(|| RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn capacity(&self) -> f64 {
        f64::from(self.per_minute)
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.capacity() / 60.0).min(self.capacity());
        bucket.updated = now;
    }

    /// How long until one more event is allowed (whole seconds, at least 1).
    fn wait(&self, bucket: &Bucket) -> Duration {
        let seconds = (1.0 - bucket.tokens) * 60.0 / self.capacity();
        Duration::from_secs(seconds.ceil().max(1.0) as u64)
    }

    /// `Err(retry after)` when `key` has no event left now; counts nothing.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get_mut(key) else {
            return Ok(());
        };
        self.refill(bucket, Instant::now());
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait(bucket))
        }
    }

    /// Counts one event for `key`; `Err(retry after)` when none was left.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_KEYS {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.capacity(),
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(bucket))
        }
    }

    /// Makes room: drops buckets that have refilled (they hold no state a
    /// new bucket would not), else the least recently used one.
    fn evict(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let full_after = Duration::from_secs(60);
        buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        if buckets.len() >= MAX_KEYS {
            if let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

/// The key a client address is counted under: IPv4 addresses one by one,
/// IPv6 by /64 (one host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// The limits of one server.
#[derive(Debug)]
pub struct Limits {
    /// Failed authentications per client address.
    pub auth_failures: Option<RateLimiter<IpAddr>>,
    /// Requests per token or client certificate (by audit actor).
    pub token_requests: Option<RateLimiter<String>>,
}

impl Limits {
    /// From the configuration.
    pub fn new(config: ca_core::Limits) -> Self {
        Limits {
            auth_failures: RateLimiter::new(config.auth_failures_per_minute),
            token_requests: RateLimiter::new(config.token_requests_per_minute),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(ca_core::Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::<u32>::new(20).unwrap();
        for _ in 0..20 {
            assert!(limiter.check(&1).is_ok());
            assert!(limiter.take(&1).is_ok());
        }
        let wait = limiter.check(&1).unwrap_err();
        assert!((1..=3).contains(&wait.as_secs()), "{wait:?}");
        assert!(limiter.take(&1).is_err());
        assert!(limiter.check(&2).is_ok(), "other keys are not affected");
        assert!(RateLimiter::<u32>::new(0).is_none(), "0 means off");
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = RateLimiter::<usize>::new(5).unwrap();
        for key in 0..MAX_KEYS + 50 {
            let _ = limiter.take(&key);
        }
        assert!(limiter.len() <= MAX_KEYS);
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let v4: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(address_key(v4), "127.0.0.2".parse::<IpAddr>().unwrap());
    }
}
