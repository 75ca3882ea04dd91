//! Benchmark prompts: synthetic ones made of random common words, cut to an
//! exact token count when the server can count tokens, or read from a JSONL
//! dataset.

use std::path::Path;

use serde::Deserialize;

use super::BenchError;
use super::client::{BenchRequest, Client, TokenizeRoute};

const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "president",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "information",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "river",
    "garden",
    "music",
    "light",
    "stone",
    "window",
    "market",
    "table",
    "paper",
    "field",
    "road",
    "picture",
    "summer",
    "winter",
    "forest",
    "ocean",
    "mountain",
    "bridge",
    "letter",
    "animal",
    "island",
    "engine",
    "kitchen",
    "village",
    "doctor",
    "season",
    "energy",
    "machine",
    "voice",
    "dream",
    "silver",
    "yellow",
    "green",
    "quiet",
    "bright",
    "simple",
    "early",
    "ancient",
    "modern",
    "gentle",
    "rapid",
    "careful",
    "happy",
    "strong",
    "small",
    "large",
    "young",
    "old",
    "new",
    "good",
    "great",
    "little",
    "long",
    "walk",
    "run",
    "build",
    "carry",
    "open",
    "write",
    "read",
    "learn",
    "grow",
    "find",
    "bring",
    "hold",
    "follow",
    "begin",
    "watch",
    "listen",
    "speak",
    "travel",
    "climb",
    "paint",
    "cook",
    "sing",
    "dance",
    "plant",
    "think",
    "and",
    "the",
    "of",
    "with",
    "from",
    "under",
    "over",
    "near",
    "after",
    "before",
    "while",
    "because",
    "again",
];

/// SplitMix64: small, seedable, good enough for choosing words and arrival times.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with rate `rate` (mean 1/rate).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.next_f64()).ln() / rate
    }
}

/// `n` random words.
pub fn random_words(rng: &mut Rng, n: usize) -> Vec<&'static str> {
    (0..n)
        .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
        .collect()
}

/// How prompt lengths are hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Counted by the server (exact).
    Server(TokenizeRoute),
    /// One word per token (approximate).
    Approximate,
}

impl Counting {
    /// For reports.
    pub fn describe(&self) -> String {
        match self {
            Counting::Server(r) => format!("server {}", r.path()),
            Counting::Approximate => "approximate (one word per token)".into(),
        }
    }
}

/// Find the longest prefix of `words` (as text) with at most `target` tokens
/// in a few `count` calls: secant steps (using `tokens_per_word`) inside the
/// bracket of what is known to be short and too long. Returns (words, tokens).
pub fn fit_words(
    words: &[&str],
    target: usize,
    tokens_per_word: f64,
    mut count: impl FnMut(&str) -> Result<usize, BenchError>,
) -> Result<(usize, usize), BenchError> {
    let text = |k: usize| words[..k].join(" ");
    let ratio = tokens_per_word.max(0.1);
    let mut k = ((target as f64 / ratio).round() as usize).clamp(1, words.len());
    let mut best: Option<(usize, usize)> = None;
    let mut too_long = words.len() + 1;
    for _ in 0..12 {
        let c = count(&text(k))?;
        if c == target {
            return Ok((k, c));
        }
        if c < target {
            if best.is_none_or(|(bk, _)| bk < k) {
                best = Some((k, c));
            }
        } else {
            too_long = too_long.min(k);
        }
        let step = ((target as f64 - c as f64) / ratio).round() as i64;
        let step = if step != 0 {
            step
        } else if c < target {
            1
        } else {
            -1
        };
        let low = best.map_or(1, |(bk, _)| bk + 1);
        let high = too_long - 1;
        if low > high {
            break;
        }
        let next = (k as i64 + step).clamp(low as i64, high as i64) as usize;
        if next == k {
            break;
        }
        k = next;
    }
    match best {
        Some(b) => Ok(b),
        None => Ok((1, count(&text(1))?)),
    }
}

/// Synthetic requests of `input_len` tokens each (seeded by `seed`).
pub fn synthetic(
    client: &Client,
    model: &str,
    counting: Counting,
    spec: &SyntheticSpec,
) -> Result<Vec<BenchRequest>, BenchError> {
    let mut out = Vec::with_capacity(spec.num_prompts);
    let mut ratio = 1.0;
    if let Counting::Server(route) = counting {
        let mut rng = Rng::new(spec.seed ^ 0xC0FFEE);
        let sample = random_words(&mut rng, 200).join(" ");
        let n = client.count_tokens(route, model, &sample)?;
        ratio = (n as f64 / 200.0).max(0.1);
    }
    for i in 0..spec.num_prompts {
        let mut rng = Rng::new(spec.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        let words = random_words(
            &mut rng,
            (spec.input_len as f64 * 2.0 / ratio) as usize + 16,
        );
        let (k, tokens) = match counting {
            Counting::Server(route) => fit_words(&words, spec.input_len, ratio, |t| {
                Ok(client.count_tokens(route, model, t)?)
            })?,
            Counting::Approximate => (spec.input_len.clamp(1, words.len()), spec.input_len),
        };
        out.push(BenchRequest {
            prompt: words[..k].join(" "),
            input_tokens: tokens,
            output_len: spec.output_len,
        });
    }
    Ok(out)
}

/// What synthetic prompts to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// How many.
    pub num_prompts: usize,
    /// Tokens each.
    pub input_len: usize,
    /// `max_tokens` each.
    pub output_len: usize,
    /// Seeds the word choice; the same seed gives the same prompts.
    pub seed: u64,
}

#[derive(Deserialize)]
struct DatasetLine {
    prompt: String,
    output_len: Option<usize>,
    max_tokens: Option<usize>,
}

/// Requests from a JSONL dataset (`{"prompt", "output_len"|"max_tokens"}`),
/// cycled to `num_prompts`.
pub fn dataset(
    path: &Path,
    num_prompts: usize,
    default_output_len: usize,
    counter: impl Fn(&str) -> usize,
) -> Result<Vec<BenchRequest>, BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::Dataset(format!("{}: {e}", path.display())))?;
    let mut base = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let l: DatasetLine = serde_json::from_str(line)
            .map_err(|e| BenchError::Dataset(format!("{} line {}: {e}", path.display(), i + 1)))?;
        base.push(BenchRequest {
            input_tokens: counter(&l.prompt),
            output_len: l
                .output_len
                .or(l.max_tokens)
                .unwrap_or(default_output_len)
                .max(1),
            prompt: l.prompt,
        });
    }
    if base.is_empty() {
        return Err(BenchError::Dataset(format!(
            "{} holds no prompts",
            path.display()
        )));
    }
    Ok(base.iter().cycle().take(num_prompts).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uniform_enough() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
        let mean: f64 = (0..10_000).map(|_| a.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let exp: f64 = (0..10_000).map(|_| a.exponential(4.0)).sum::<f64>() / 10_000.0;
        assert!((exp - 0.25).abs() < 0.02, "{exp}");
    }

    /// A tokenizer where word i costs 1 + (i % 3 == 0) tokens, plus a BOS.
    fn fake_count<'a>(words: &'a [&'a str]) -> impl FnMut(&str) -> Result<usize, BenchError> + 'a {
        move |text: &str| {
            let n = text.split(' ').count();
            Ok(1 + (0..n)
                .map(|i| if words[i].len() > 5 { 2 } else { 1 })
                .sum::<usize>())
        }
    }

    #[test]
    fn fitting_hits_the_target_or_the_closest_below() {
        let mut rng = Rng::new(9);
        let words = random_words(&mut rng, 600);
        for target in [2, 17, 64, 128, 255] {
            let mut calls = 0;
            let mut counter = fake_count(&words);
            let (k, tokens) = fit_words(&words, target, 1.3, |t| {
                calls += 1;
                counter(t)
            })
            .unwrap();
            assert!(tokens <= target, "{target}: {tokens}");
            assert!(
                tokens + 1 >= target,
                "{target}: {tokens} (one word costs at most 2 tokens)"
            );
            assert_eq!(tokens, fake_count(&words)(&words[..k].join(" ")).unwrap());
            assert!(calls <= 13, "{calls} calls");
        }
    }

    #[test]
    fn dataset_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\": \"a b c\", \"output_len\": 4}\n\n{\"prompt\": \"d\"}\n",
        )
        .unwrap();
        let reqs = dataset(&p, 5, 9, |t| t.split(' ').count()).unwrap();
        assert_eq!(reqs.len(), 5);
        assert_eq!((reqs[0].input_tokens, reqs[0].output_len), (3, 4));
        assert_eq!((reqs[1].input_tokens, reqs[1].output_len), (1, 9));
        assert_eq!(reqs[2], reqs[0]);
        std::fs::write(&p, "{\"text\": 1}").unwrap();
        assert!(
            dataset(&p, 1, 1, |_| 0)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
    }
}
