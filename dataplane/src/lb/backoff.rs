//! Exponential backoff with full jitter for retries.

use std::time::Duration;

/// The backoff ceiling for retry `attempt` (0 for the first retry):
/// `min(max, base * 2^attempt)`, saturating instead of overflowing.
pub fn backoff_ceiling(attempt: u32, base: Duration, max: Duration) -> Duration {
    let base_nanos = base.as_nanos();
    if base_nanos == 0 {
        return Duration::ZERO;
    }
    if attempt >= base_nanos.leading_zeros() {
        return max; // base * 2^attempt does not even fit in u128 nanoseconds
    }
    let scaled = base_nanos << attempt;
    if scaled >= max.as_nanos() {
        return max;
    }
    // scaled < max.as_nanos(), so the whole seconds fit in u64.
    let secs = u64::try_from(scaled / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (scaled % 1_000_000_000) as u32)
}

/// "Full jitter" backoff (as described in the AWS architecture blog): a uniformly random
/// duration in `[0, backoff_ceiling(attempt, base, max)]`, with nanosecond resolution.
/// Spreading retries over the whole interval keeps clients that failed together from
/// retrying together. Ceilings beyond `u64::MAX` nanoseconds (584 years) are clamped there.
pub fn backoff(
    attempt: u32,
    base: Duration,
    max: Duration,
    rng: &mut impl FnMut() -> u64,
) -> Duration {
    let ceiling = backoff_ceiling(attempt, base, max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    // Uniform over 0..=nanos: a multiply-high of a uniform u64 by the span (nanos + 1).
    let span = u128::from(nanos) + 1;
    let drawn = (u128::from(rng()) * span) >> 64;
    Duration::from_nanos(u64::try_from(drawn).unwrap_or(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::SplitMix64;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_per_attempt_up_to_max() {
        let base = 25 * MS;
        let max = 1000 * MS;
        let ceilings: Vec<u64> = (0..8)
            .map(|a| backoff_ceiling(a, base, max).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ceiling(200, base, max), max);
        assert_eq!(
            backoff_ceiling(40, Duration::from_secs(1), Duration::MAX),
            Duration::from_secs(1 << 40)
        );
        assert_eq!(
            backoff_ceiling(127, Duration::from_secs(1), Duration::MAX),
            Duration::MAX
        );
        assert_eq!(
            backoff_ceiling(40, Duration::from_nanos(1), Duration::MAX),
            Duration::from_nanos(1 << 40)
        );
        assert_eq!(backoff_ceiling(500, Duration::ZERO, max), Duration::ZERO);
    }

    #[test]
    fn extremes_of_the_random_input_reach_both_ends() {
        assert_eq!(
            backoff(2, 10 * MS, Duration::MAX, &mut || 0),
            Duration::ZERO
        );
        assert_eq!(
            backoff(2, 10 * MS, Duration::MAX, &mut || u64::MAX),
            40 * MS
        );
        assert_eq!(
            backoff(3, Duration::MAX, Duration::MAX, &mut || u64::MAX),
            Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn full_jitter_is_uniform_below_the_ceiling() {
        let mut rng = SplitMix64::new(9);
        let mut next = || rng.next_u64();
        let ceiling = backoff_ceiling(3, 10 * MS, Duration::from_secs(1));
        let n = 20_000u32;
        let mut sum = Duration::ZERO;
        let mut below_quarter = 0;
        for _ in 0..n {
            let d = backoff(3, 10 * MS, Duration::from_secs(1), &mut next);
            assert!(d <= ceiling);
            if d < ceiling / 4 {
                below_quarter += 1;
            }
            sum += d;
        }
        let mean = sum / n;
        assert!(mean > 38 * MS && mean < 42 * MS, "mean {mean:?}");
        let q = f64::from(below_quarter) / f64::from(n);
        assert!((0.23..0.27).contains(&q), "{q}");
    }
}
