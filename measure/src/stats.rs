//! Summaries of measured samples. Percentiles interpolate linearly between the two closest
//! ranks (Hyndman and Fan's definition 7, the default of numpy, R and spreadsheets): the
//! `p`th percentile of n sorted samples lies at position `p / 100 * (n - 1)`.

use serde::Serialize;

/// A set of samples and the figures reports show for it.
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
    /// Number of samples.
    pub n: usize,
    /// Every sample, in the order measured.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarizes `samples` (all zero when there are none).
    pub fn of(samples: &[f64]) -> Summary {
        Summary::of_some(samples).unwrap_or_default()
    }

    /// Summarizes `samples`, or `None` when there are none.
    pub fn of_some(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let sorted = sorted(samples);
        Some(Summary {
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
            n: samples.len(),
            samples: samples.to_vec(),
        })
    }
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The `p`th percentile (0 to 100) of sorted, non-empty `sorted`, interpolating linearly
/// between the closest ranks.
///
/// # Panics
///
/// When `sorted` is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The median of `samples` (in any order; the mean of the two middle ones for an even
/// count), if there are any.
pub fn median(samples: &[f64]) -> Option<f64> {
    (!samples.is_empty()).then(|| percentile(&sorted(samples), 50.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn percentiles_interpolate_between_closest_ranks() {
        // 1..=20: positions 9.5, 17.1 and 18.81 (numpy.percentile gives the same). Nearest
        // rank, the definition kvmini compare used before, gave 10, 18 and 20.
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        let sum = Summary::of(&s);
        assert!(close(sum.p50, 10.5), "{}", sum.p50);
        assert!(close(sum.p90, 18.1), "{}", sum.p90);
        assert!(close(sum.p99, 19.81), "{}", sum.p99);
        assert_eq!((sum.min, sum.max, sum.mean, sum.n), (1.0, 20.0, 10.5, 20));
        let one = Summary::of(&[3.5]);
        assert_eq!((one.p50, one.p90, one.p99), (3.5, 3.5, 3.5));
        // Order of measurement is kept; the percentiles do not depend on it.
        let shuffled = Summary::of(&[5.0, 1.0, 3.0]);
        assert_eq!(shuffled.samples, vec![5.0, 1.0, 3.0]);
        assert_eq!(shuffled.p50, 3.0);
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    #[test]
    fn four_samples_summarize_like_numpy() {
        let s = Summary::of_some(&[4.0, 1.0, 3.0, 2.0]).expect("samples");
        assert_eq!((s.p50, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(close(s.p90, 3.7), "p90 interpolates: {}", s.p90);
        assert_eq!(Summary::of_some(&[]), None);
        assert_eq!(Summary::of_some(&[7.0]).map(|s| s.p90), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 0.0), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 100.0), 2.0);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        // kvmini compare's integer median took the lower middle one, 3.
        assert_eq!(median(&[9.0, 1.0, 5.0, 3.0]), Some(4.0));
    }
}
