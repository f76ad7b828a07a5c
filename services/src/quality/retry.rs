//! The retry schedule of the Gemini judge: exponential backoff with jitter, and a server's
//! `Retry-After` honoured as a floor.

use std::time::Duration;

/// A server asking for a longer pause than this is not waited out: the judge falls back at
/// once rather than hold a batch for minutes.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Calls per output, the first included (≥ 1).
    pub max_attempts: u32,
    /// The pause before the second call; each further pause doubles it.
    pub base: Duration,
    /// No computed backoff is longer (a `Retry-After` may be, up to [`MAX_RETRY_AFTER`]).
    pub max: Duration,
    /// The longest `Retry-After` that is waited out.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retry_after: MAX_RETRY_AFTER,
        }
    }
}

impl RetryPolicy {
    /// The pause after failed call number `attempt` (1-based). `jitter` is uniform in [0, 1):
    /// "equal jitter" keeps at least half of the exponential step, so retries never bunch up at
    /// zero yet many clients that failed together spread out. A `Retry-After` is a floor: the
    /// server knows when its quota refills.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let step = self
            .base
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        let backoff = step / 2 + step.mul_f64(0.5 * jitter);
        match retry_after {
            Some(wait) => backoff.max(wait),
            None => backoff,
        }
    }
}

/// A uniform fraction in [0, 1) from the operating system's randomness (through a v4 UUID, so
/// no extra dependency): jitter must differ between processes, so it cannot be seeded.
pub fn jitter() -> f64 {
    // The low 62 bits of a v4 UUID are random (the version and variant bits sit above them).
    let bits = (uuid::Uuid::new_v4().as_u128() as u64) & ((1u64 << 53) - 1);
    bits as f64 / (1u64 << 53) as f64
}

/// A `Retry-After` header in delay-seconds form (`"7"`). The HTTP-date form is not used by
/// Google's APIs and is ignored (the exponential backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The `retryDelay` of a `google.rpc.RetryInfo` detail (`"37s"`, `"1.5s"`), which Gemini sends
/// in 429 bodies instead of, or beside, a `Retry-After` header.
pub fn parse_retry_delay(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

    #[test]
    fn backoff_doubles_keeps_half_its_step_and_stops_at_the_cap() {
        let p = policy();
        assert_eq!(p.delay(1, None, 0.0), Duration::from_millis(50));
        assert!(p.delay(1, None, 0.999_999) < Duration::from_millis(100));
        assert_eq!(p.delay(2, None, 0.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(300));
        assert_eq!(p.delay(10, None, 1.0), Duration::from_millis(1_000));
        assert_eq!(p.delay(u32::MAX, None, 1.0), Duration::from_millis(1_000));
    }

    #[test]
    fn retry_after_is_a_floor_over_the_backoff() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7)), 0.3),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(4, Some(Duration::ZERO), 0.0),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn retry_after_and_retry_delay_parse_seconds_only() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_delay("37s"), Some(Duration::from_secs(37)));
        assert_eq!(
            parse_retry_delay("1.5s"),
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(parse_retry_delay("-1s"), None);
        assert_eq!(parse_retry_delay("soon"), None);
    }

    #[test]
    fn jitter_is_a_fraction_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(
            samples.iter().all(|j| (0.0..1.0).contains(j)),
            "{samples:?}"
        );
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }
}
