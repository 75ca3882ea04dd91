//! BPE merges recovered from a SentencePiece vocabulary's scores, in the
//! order transformers derives them for GGUF files that carry no merges:
//! every split of a piece into two pieces of the vocabulary is a merge
//! ranked by the whole piece's score (best first; ties: longer left part,
//! then longer right part, then vocabulary order).

use std::collections::HashMap;

struct Candidate<'a> {
    left: &'a str,
    right: &'a str,
    score: f32,
    left_chars: usize,
    right_chars: usize,
}

/// A total order on scores: `-0.0` equals `0.0`, NaN ranks below everything.
fn score_key(score: f32) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else if score == 0.0 {
        0.0
    } else {
        score
    }
}

/// `(left, right)` merges for `tokens` with `scores` (same length).
pub(crate) fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    // Token → id: a repeated token keeps its last id, and the last score;
    // pieces are visited once each, in order of first appearance.
    let mut id: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut score: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        if id.insert(token, i).is_none() {
            order.push(token);
        }
        score.insert(token, scores.get(i).copied().unwrap_or(0.0));
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    for piece in order {
        let start = candidates.len();
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if id.contains_key(left) && id.contains_key(right) {
                candidates.push(Candidate {
                    left,
                    right,
                    score: score_key(score[piece]),
                    left_chars: left.chars().count(),
                    right_chars: right.chars().count(),
                });
            }
        }
        candidates[start..].sort_by_key(|c| (id[c.left], id[c.right]));
    }
    // Stable: equal keys keep the order above.
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    candidates
        .into_iter()
        .map(|c| (c.left.to_string(), c.right.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranked_by_score_then_longer_left_part() {
        let tokens = strings(&["a", "b", "c", "ab", "bc", "abc"]);
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -2.0];
        let merges = merges_from_scores(&tokens, &scores);
        let merges: Vec<String> = merges.iter().map(|(l, r)| format!("{l} {r}")).collect();
        // Three merges tie on -2: the longer left part, then the longer right part wins.
        assert_eq!(merges, ["a b", "ab c", "a bc", "b c"]);
    }

    #[test]
    fn nan_and_missing_scores_do_not_panic() {
        let tokens = strings(&["x", "y", "xy", "yx"]);
        let merges = merges_from_scores(&tokens, &[0.0, 0.0, f32::NAN]);
        assert_eq!(merges.len(), 2);
        assert_eq!(merges[1], ("x".to_string(), "y".to_string()));
    }
}
