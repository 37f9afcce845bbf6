//! Per-tenant request quotas of the API: one busy dashboard (or a script in a loop) must not
//! take the ClickHouse time of every other tenant. A token bucket per tenant: `rate` requests a
//! second on average, bursts of up to `burst`. Pure logic (time is passed in), so it is tested
//! alone; the HTTP layer answers 429 when [`Quotas::allow`] says no.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// At most this many tenants have a bucket at once; when full, the buckets that are full again
/// (tenants idle for a while) are dropped, and if none is, a new tenant is refused until one is.
/// A token valid for every tenant (`*`) can name any tenant string, so the map must not grow
/// with them (and the token's own bucket, [`RequestQuotas`], bounds it anyway).
pub const MAX_TENANT_BUCKETS: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every tenant seen.
#[derive(Debug)]
pub struct Quotas {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Quotas {
    /// `rate` requests a second per tenant, bursts of `burst` (at least 1).
    pub fn new(rate: f64, burst: f64) -> Quotas {
        Quotas {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a request for `tenant` at `now` may go on (and takes its token if so).
    pub fn allow(&self, tenant: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(tenant) && buckets.len() >= MAX_TENANT_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| refill(*b, now, rate, burst) < burst);
            if buckets.len() >= MAX_TENANT_BUCKETS {
                // Every bucket in use: refuse the newcomer rather than grow or forget a
                // throttled tenant.
                return false;
            }
        }
        let b = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = refill(*b, now, self.rate, self.burst);
        if tokens >= 1.0 {
            *b = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            true
        } else {
            *b = Bucket { tokens, at: now };
            false
        }
    }

    /// How many tenants have a bucket.
    pub fn tenants(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The API's quotas: per tenant (`rate` a second, bursts of twice that) and per token (ten
/// times as much: a token may serve many tenants, but made-up tenant names do not give it more).
#[derive(Debug)]
pub struct RequestQuotas {
    tenants: Quotas,
    tokens: Quotas,
}

impl RequestQuotas {
    /// Quotas of `rate` requests a second per tenant.
    pub fn new(rate: f64) -> RequestQuotas {
        RequestQuotas {
            tenants: Quotas::new(rate, 2.0 * rate),
            tokens: Quotas::new(10.0 * rate, 20.0 * rate),
        }
    }

    /// Whether the token named `token` may make a request for `tenant` at `now`; if not, which
    /// quota it is over.
    pub fn allow(&self, token: &str, tenant: &str, now: Instant) -> Result<(), &'static str> {
        if !self.tokens.allow(token, now) {
            return Err("the token");
        }
        if !self.tenants.allow(tenant, now) {
            return Err("the tenant");
        }
        Ok(())
    }
}

fn refill(b: Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let secs = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + secs * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_tenant_gets_its_burst_then_its_rate() {
        let q = Quotas::new(2.0, 4.0);
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| q.allow("a", t0)).count();
        assert_eq!(allowed, 4, "the burst");
        // Half a second later: one more token (2 a second).
        assert!(q.allow("a", t0 + Duration::from_millis(500)));
        assert!(!q.allow("a", t0 + Duration::from_millis(500)));
        // Another tenant is not affected.
        assert_eq!((0..10).filter(|_| q.allow("b", t0)).count(), 4);
        // After a long pause, the burst again, not more.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| q.allow("a", later)).count(), 4);
    }

    #[test]
    fn the_buckets_do_not_grow_with_tenant_names() {
        let q = Quotas::new(1.0, 1.0);
        let t0 = Instant::now();
        for i in 0..MAX_TENANT_BUCKETS {
            assert!(q.allow(&format!("tenant-{i}"), t0), "a new tenant starts full");
        }
        // Full, every bucket in use: a newcomer waits; a throttled tenant stays throttled.
        assert!(!q.allow("newcomer", t0));
        assert!(!q.allow("tenant-0", t0));
        assert_eq!(q.tenants(), MAX_TENANT_BUCKETS);
        // Once buckets are full again (idle tenants), the newcomer gets in.
        assert!(q.allow("newcomer", t0 + Duration::from_secs(2)));
        assert!(q.tenants() <= MAX_TENANT_BUCKETS);
    }

    #[test]
    fn made_up_tenant_names_do_not_give_a_token_more() {
        let q = RequestQuotas::new(1.0);
        let t0 = Instant::now();
        let ok = (0..100)
            .filter(|i| q.allow("admin", &format!("made-up-{i}"), t0).is_ok())
            .count();
        assert_eq!(ok, 20, "the token's burst (20 x 1 a second)");
        assert_eq!(q.allow("admin", "t1", t0), Err("the token"));
        assert_eq!(q.allow("reader", "t1", t0), Ok(()));
    }
}
