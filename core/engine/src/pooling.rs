//! Pooling an embedding sequence's final hidden states into one vector.
//! Pure: `[rows, hidden]` f32 in, `[hidden]` f32 out, never normalized
//! here (callers normalize after any truncation).

use kiln_protocol::Pooling;

/// The pooled vector of `rows` (`[n, hidden]`, n ≥ 1).
pub fn pool(rows: &[f32], hidden: usize, pooling: Pooling) -> Vec<f32> {
    let n = rows.len() / hidden.max(1);
    if n == 0 {
        return vec![0.0; hidden];
    }
    match pooling {
        Pooling::Cls => rows[..hidden].to_vec(),
        Pooling::Last => rows[(n - 1) * hidden..n * hidden].to_vec(),
        Pooling::Mean => {
            // Summed in f64 so that the mean does not depend on the row count's rounding.
            let mut sum = vec![0f64; hidden];
            for row in rows.chunks_exact(hidden) {
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, x)| *s += f64::from(*x));
            }
            sum.iter().map(|s| (*s / n as f64) as f32).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pooling_picks_its_rows() {
        let rows = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0];
        assert_eq!(pool(&rows, 2, Pooling::Cls), vec![1.0, 2.0]);
        assert_eq!(pool(&rows, 2, Pooling::Last), vec![5.0, 9.0]);
        assert_eq!(pool(&rows, 2, Pooling::Mean), vec![3.0, 5.0]);
    }
}
