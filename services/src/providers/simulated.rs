//! An in-process provider for load tests and benchmarks without a real backend.
//!
//! Every answer is a pure function of `(seed, dispatch_id)`: the id is hashed (FNV-1a) and mixed
//! with the seed (splitmix64), and independent uniform draws are taken from that state. No shared
//! random generator means no lock on the hot path and the same answer whatever the concurrency or
//! the order in which dispatches arrive, so a rerun with the same seed reproduces a run exactly.

use super::provider::{DispatchFuture, DispatchRequest, DispatchResult, Provider};
use std::time::Duration;

/// The reason recorded for a simulated failure.
pub const SIMULATED_FAILURE: &str = "simulated failure";

/// The knobs of a `[providers.*] kind = "simulated"` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatedSettings {
    /// Median service time.
    pub latency_ms: f64,
    /// Half-width of the uniform spread around `latency_ms`.
    pub jitter_ms: f64,
    /// Probability in `[0, 1]` that a dispatch fails.
    pub failure_rate: f64,
    /// Cost of every attempt, failed ones included.
    pub cost_usd: f64,
    pub seed: u64,
}

impl SimulatedSettings {
    /// The checks `studio.toml` validation makes, repeated so a provider is never built from
    /// nonsense.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
            ("cost_usd", self.cost_usd),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{field} = {value} must be ≥ 0"));
            }
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!(
                "failure_rate = {} must be between 0 and 1",
                self.failure_rate
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    name: String,
    settings: SimulatedSettings,
    /// Multiplies the real sleep (not the reported service time); tests shrink it.
    time_scale: f64,
}

impl SimulatedProvider {
    pub fn new(name: impl Into<String>, settings: SimulatedSettings) -> Self {
        Self {
            name: name.into(),
            settings,
            time_scale: 1.0,
        }
    }

    /// Sleep `scale` times the simulated latency (0 does not sleep at all); the reported
    /// service time stays the simulated one. Negative or non-finite scales count as 0.
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            0.0
        };
        self
    }

    pub fn settings(&self) -> &SimulatedSettings {
        &self.settings
    }

    /// The answer to a dispatch, without sleeping: a pure function of the seed and the id.
    pub fn answer(&self, dispatch_id: &str) -> DispatchResult {
        let s = &self.settings;
        let mut state = s.seed ^ fnv1a(dispatch_id.as_bytes());
        let failure_draw = unit(splitmix64(&mut state));
        let jitter_draw = unit(splitmix64(&mut state));

        let latency_ms = (s.latency_ms + (2.0 * jitter_draw - 1.0) * s.jitter_ms).max(0.0);
        let service_time = Duration::from_secs_f64(latency_ms / 1000.0);
        // `failure_draw` is in [0, 1), so a rate of 0 never fails and a rate of 1 always does.
        if failure_draw < s.failure_rate {
            DispatchResult::Failed {
                error: SIMULATED_FAILURE.to_owned(),
                cost_usd: Some(s.cost_usd),
                service_time,
            }
        } else {
            DispatchResult::Succeeded {
                output_uri: format!("sim://{}/{dispatch_id}.png", self.name),
                cost_usd: Some(s.cost_usd),
                service_time,
            }
        }
    }
}

impl Provider for SimulatedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn dispatch<'a>(&'a self, request: &'a DispatchRequest) -> DispatchFuture<'a> {
        Box::pin(async move {
            let result = self.answer(&request.dispatch_id);
            let sleep = result.service_time().mul_f64(self.time_scale);
            if !sleep.is_zero() {
                tokio::time::sleep(sleep).await;
            }
            result
        })
    }
}

/// FNV-1a over the bytes: a stable hash (unlike `DefaultHasher`, which may change between Rust
/// releases and would break reproducibility across builds).
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// splitmix64: advances the state and returns a well-mixed 64-bit value, so nearby seeds and
/// ids give unrelated draws.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in `[0, 1)` from the top 53 bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::DispatchInput;
    use eventlog::catalogue::Outcome;
    use std::time::Instant;

    fn settings(seed: u64) -> SimulatedSettings {
        SimulatedSettings {
            latency_ms: 900.0,
            jitter_ms: 200.0,
            failure_rate: 0.03,
            cost_usd: 0.004,
            seed,
        }
    }

    fn request(dispatch_id: &str) -> DispatchRequest {
        DispatchRequest {
            dispatch_id: dispatch_id.to_owned(),
            variant_id: "v".into(),
            input: DispatchInput {
                input_id: "i".into(),
                uri: "s3://in/i.png".into(),
            },
        }
    }

    #[tokio::test]
    async fn the_same_seed_and_dispatch_id_give_the_same_result() {
        let a = SimulatedProvider::new("sim", settings(7)).with_time_scale(0.0);
        let b = SimulatedProvider::new("sim", settings(7)).with_time_scale(0.0);
        let ids: Vec<String> = (0..200).map(|i| format!("d{i}")).collect();
        let forward: Vec<_> = {
            let mut out = Vec::new();
            for id in &ids {
                out.push(a.dispatch(&request(id)).await);
            }
            out
        };
        // Another instance, asked in reverse order, answers the same for every id.
        for (id, expected) in ids.iter().zip(&forward).rev() {
            assert_eq!(&b.dispatch(&request(id)).await, expected);
        }
    }

    #[test]
    fn different_seeds_give_different_results() {
        let a = SimulatedProvider::new("sim", settings(7));
        let b = SimulatedProvider::new("sim", settings(8));
        let differing = (0..100)
            .map(|i| format!("d{i}"))
            .filter(|id| a.answer(id) != b.answer(id))
            .count();
        // Latency is continuous, so practically every answer differs.
        assert!(differing > 90, "only {differing} of 100 answers differ");
    }

    #[test]
    fn the_observed_failure_share_is_within_three_points_of_the_failure_rate() {
        for failure_rate in [0.03, 0.2, 0.5] {
            let provider = SimulatedProvider::new(
                "sim",
                SimulatedSettings {
                    failure_rate,
                    ..settings(42)
                },
            );
            let failed = (0..2_000)
                .filter(|i| {
                    provider
                        .answer(&format!("studio_load_test_r_{i}"))
                        .outcome()
                        == Outcome::Failed
                })
                .count();
            let share = failed as f64 / 2_000.0;
            assert!(
                (share - failure_rate).abs() <= 0.03,
                "failure share {share} for a rate of {failure_rate}"
            );
        }
    }

    #[test]
    fn rates_of_zero_and_one_never_and_always_fail() {
        let never = SimulatedProvider::new(
            "sim",
            SimulatedSettings {
                failure_rate: 0.0,
                ..settings(1)
            },
        );
        let always = SimulatedProvider::new(
            "sim",
            SimulatedSettings {
                failure_rate: 1.0,
                ..settings(1)
            },
        );
        for i in 0..500 {
            let id = format!("d{i}");
            assert_eq!(never.answer(&id).outcome(), Outcome::Succeeded);
            assert_eq!(always.answer(&id).outcome(), Outcome::Failed);
        }
    }

    #[test]
    fn latency_stays_within_the_jitter_around_the_median() {
        let provider = SimulatedProvider::new("sim", settings(3));
        let (low, high) = (Duration::from_millis(700), Duration::from_millis(1100));
        let latencies: Vec<Duration> = (0..2_000)
            .map(|i| provider.answer(&format!("d{i}")).service_time())
            .collect();
        assert!(latencies.iter().all(|l| (low..=high).contains(l)));
        // The spread is used, not collapsed onto the median.
        assert!(latencies.iter().any(|l| *l < Duration::from_millis(750)));
        assert!(latencies.iter().any(|l| *l > Duration::from_millis(1050)));
    }

    #[test]
    fn latency_is_never_negative_when_the_jitter_exceeds_the_median() {
        let provider = SimulatedProvider::new(
            "sim",
            SimulatedSettings {
                latency_ms: 5.0,
                jitter_ms: 50.0,
                ..settings(3)
            },
        );
        let zeros = (0..1_000)
            .filter(|i| provider.answer(&format!("d{i}")).service_time().is_zero())
            .count();
        assert!(zeros > 0, "clamping at 0 should happen for some draws");
    }

    #[tokio::test]
    async fn a_dispatch_actually_takes_its_latency() {
        let provider = SimulatedProvider::new(
            "sim",
            SimulatedSettings {
                latency_ms: 40.0,
                jitter_ms: 10.0,
                ..settings(5)
            },
        );
        let started = Instant::now();
        let result = provider.dispatch(&request("d1")).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed >= result.service_time(),
            "{elapsed:?} < {:?}",
            result.service_time()
        );
        assert!(result.service_time() >= Duration::from_millis(30));
    }

    #[test]
    fn failed_attempts_carry_their_cost() {
        let provider = SimulatedProvider::new(
            "sim",
            SimulatedSettings {
                failure_rate: 1.0,
                ..settings(9)
            },
        );
        let result = provider.answer("d1");
        assert_eq!(result.outcome(), Outcome::Failed);
        assert_eq!(result.cost_usd(), Some(0.004));
        assert_eq!(result.error(), Some(SIMULATED_FAILURE));
    }

    #[test]
    fn a_success_names_its_output_after_the_provider_and_the_dispatch() {
        let provider = SimulatedProvider::new(
            "sim-cheap",
            SimulatedSettings {
                failure_rate: 0.0,
                ..settings(9)
            },
        );
        assert_eq!(
            provider.answer("d1").output_uri(),
            Some("sim://sim-cheap/d1.png")
        );
    }

    #[test]
    fn settings_outside_their_ranges_are_refused() {
        assert!(settings(1).validate().is_ok());
        assert!(SimulatedSettings {
            failure_rate: 1.5,
            ..settings(1)
        }
        .validate()
        .is_err());
        assert!(SimulatedSettings {
            latency_ms: -1.0,
            ..settings(1)
        }
        .validate()
        .is_err());
        assert!(SimulatedSettings {
            cost_usd: f64::NAN,
            ..settings(1)
        }
        .validate()
        .is_err());
    }
}
