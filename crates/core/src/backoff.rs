//! Retry delays.

use crate::model::{Backoff, BackoffStrategy, Jitter};

/// The delay before the retry that follows failed attempt number `attempt` (1-based):
/// exponential `min(base · 2^(attempt−1), max)`, fixed `min(base, max)`; full jitter picks
/// uniformly in `[0, delay)` using `unit`, a number in `[0, 1)`.
pub fn delay_ms(backoff: &Backoff, attempt: u32, unit: f64) -> u64 {
    let capped = match backoff.strategy {
        BackoffStrategy::Fixed => backoff.base_ms.min(backoff.max_ms),
        BackoffStrategy::Exponential => {
            let shift = attempt.saturating_sub(1).min(63);
            let factor = 1u64.checked_shl(shift).unwrap_or(u64::MAX);
            backoff.base_ms.saturating_mul(factor).min(backoff.max_ms)
        }
    };
    match backoff.jitter {
        Jitter::None => capped,
        Jitter::Full => {
            let unit = unit.clamp(0.0, 1.0 - f64::EPSILON);
            (capped as f64 * unit).floor() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exp(base: u64, max: u64, jitter: Jitter) -> Backoff {
        Backoff {
            strategy: BackoffStrategy::Exponential,
            base_ms: base,
            max_ms: max,
            jitter,
        }
    }

    #[test]
    fn exponential_doubles_until_the_cap() {
        let b = exp(1000, 60_000, Jitter::None);
        let delays: Vec<u64> = (1..=8).map(|a| delay_ms(&b, a, 0.5)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
    }

    #[test]
    fn fixed_is_base_capped_by_max() {
        let mut b = exp(500, 300, Jitter::None);
        b.strategy = BackoffStrategy::Fixed;
        assert_eq!(delay_ms(&b, 1, 0.0), 300);
        assert_eq!(delay_ms(&b, 9, 0.0), 300);
    }

    #[test]
    fn huge_attempts_saturate() {
        let b = exp(u64::MAX / 2, u64::MAX, Jitter::None);
        assert_eq!(delay_ms(&b, 500, 0.0), u64::MAX);
    }

    proptest! {
        #[test]
        fn full_jitter_stays_below_the_delay(base in 1u64..100_000, max in 1u64..1_000_000, attempt in 1u32..40, unit in 0.0f64..1.0) {
            let plain = delay_ms(&exp(base, max, Jitter::None), attempt, unit);
            let jittered = delay_ms(&exp(base, max, Jitter::Full), attempt, unit);
            prop_assert!(jittered < plain.max(1));
        }
    }
}
