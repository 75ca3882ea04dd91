//! Latency statistics (pure).

use serde::Serialize;

/// Mean and percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

/// The `q`-th percentile (0–100) of sorted values, interpolating linearly
/// between neighbours (numpy's default).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = q.clamp(0.0, 100.0) / 100.0 * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// Summarize values given in seconds, reporting milliseconds; `None` when empty.
pub fn summarize_ms(seconds: &[f64]) -> Option<Summary> {
    if seconds.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = seconds
        .iter()
        .map(|s| s * 1e3)
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(Summary {
        count: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        p50: percentile(&v, 50.0),
        p90: percentile(&v, 90.0),
        p99: percentile(&v, 99.0),
        max: v[v.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn summaries_in_milliseconds() {
        let s = summarize_ms(&[0.001, 0.003, 0.002]).unwrap();
        assert_eq!(s.count, 3);
        assert!(
            (s.mean - 2.0).abs() < 1e-9 && (s.p50 - 2.0).abs() < 1e-9 && (s.max - 3.0).abs() < 1e-9
        );
        assert!(summarize_ms(&[]).is_none());
    }
}
