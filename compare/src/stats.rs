//! Summaries of measured samples: percentiles by the nearest-rank method (the smallest sample
//! with at least p % of the samples at or below it), so every figure reported is a sample that
//! was really measured.

use serde::Serialize;

/// A set of samples and the figures the report shows for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Every sample, in the order measured.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarizes `samples` (all zero when there are none).
    pub fn of(samples: &[f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
            samples: samples.to_vec(),
        }
    }
}

/// The nearest-rank `p`th percentile of sorted, non-empty `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (integers; the lower middle one for an even count), if any.
pub fn median_u64(values: &[u64]) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_real_samples() {
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        let sum = Summary::of(&s);
        assert_eq!((sum.p50, sum.p90, sum.p99), (10.0, 18.0, 20.0));
        assert_eq!((sum.min, sum.max, sum.mean), (1.0, 20.0, 10.5));
        let one = Summary::of(&[3.5]);
        assert_eq!((one.p50, one.p90, one.p99), (3.5, 3.5, 3.5));
        // Order of measurement is kept; the percentiles do not depend on it.
        let shuffled = Summary::of(&[5.0, 1.0, 3.0]);
        assert_eq!(shuffled.samples, vec![5.0, 1.0, 3.0]);
        assert_eq!(shuffled.p50, 3.0);
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    #[test]
    fn median_of_integers() {
        assert_eq!(median_u64(&[]), None);
        assert_eq!(median_u64(&[7]), Some(7));
        assert_eq!(median_u64(&[9, 1, 5, 3]), Some(3));
    }
}
