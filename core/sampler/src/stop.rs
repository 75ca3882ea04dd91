//! Stop strings matched across token boundaries on the decoded text.
//!
//! The match that ends the text is the one that *completes first* as the
//! text grows (earliest end; among those ending together, the longest), so
//! the result does not depend on how the text was split into tokens. While
//! stop strings are hidden from the output, the tail of the text that could
//! still become one is held back and released once it cannot.

/// Whether a matched stop string is part of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStringOutput {
    /// Cut the text before the stop string (the default).
    Exclude,
    /// Keep the text up to and including it (`include_stop_str_in_output`).
    Include,
}

/// A request's stop strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStrings {
    strings: Vec<String>,
    output: StopStringOutput,
}

/// A stop string found in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopMatch {
    /// Byte offset where the stop string starts.
    pub start: usize,
    /// Byte offset just past it.
    pub end: usize,
    /// Which of the request's stop strings.
    pub index: usize,
}

impl StopStrings {
    /// The non-empty strings of `strings`.
    pub fn new(strings: &[String], output: StopStringOutput) -> Self {
        StopStrings {
            strings: strings.iter().filter(|s| !s.is_empty()).cloned().collect(),
            output,
        }
    }

    /// Whether matched stop strings (and stop tokens' text) are output.
    pub fn output(&self) -> StopStringOutput {
        self.output
    }

    /// True when there is nothing to match.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// The stop string at `index`.
    pub fn get(&self, index: usize) -> &str {
        &self.strings[index]
    }

    /// Byte length of the longest stop string.
    pub fn max_len(&self) -> usize {
        self.strings.iter().map(String::len).max().unwrap_or(0)
    }

    /// The first stop string to complete among matches that end after byte
    /// `old_len` of `text` (i.e. use text added since then).
    pub fn find(&self, text: &str, old_len: usize) -> Option<StopMatch> {
        let mut best: Option<StopMatch> = None;
        for (index, s) in self.strings.iter().enumerate() {
            let from = floor_char_boundary(text, old_len.saturating_sub(s.len() - 1));
            let Some(at) = text[from..].find(s.as_str()) else {
                continue;
            };
            let m = StopMatch {
                start: from + at,
                end: from + at + s.len(),
                index,
            };
            if best.is_none_or(|b| (m.end, m.start) < (b.end, b.start)) {
                best = Some(m);
            }
        }
        best
    }

    /// Where the visible text ends when `m` stops the sequence.
    pub fn cut(&self, m: StopMatch) -> usize {
        match self.output {
            StopStringOutput::Exclude => m.start,
            StopStringOutput::Include => m.end,
        }
    }

    /// Bytes at the end of `unreleased` to hold back: the longest suffix that
    /// is a proper prefix of a stop string. Always 0 when stop strings are
    /// part of the output (nothing after a match is ever released anyway).
    pub fn held_back(&self, unreleased: &str) -> usize {
        if self.output == StopStringOutput::Include {
            return 0;
        }
        let mut best = 0;
        for s in &self.strings {
            let longest = (s.len() - 1).min(unreleased.len());
            for n in (best + 1..=longest).rev() {
                if s.is_char_boundary(n) && unreleased.ends_with(&s[..n]) {
                    best = n;
                    break;
                }
            }
        }
        best
    }
}

/// The largest char boundary of `text` at or below `at`.
pub fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str], output: StopStringOutput) -> StopStrings {
        let owned: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        StopStrings::new(&owned, output)
    }

    #[test]
    fn held_back_is_the_longest_suffix_that_starts_a_stop_string() {
        let s = stops(&["</end>", "STOP", ""], StopStringOutput::Exclude);
        assert_eq!(s.held_back("hello </e"), 3);
        assert_eq!(s.held_back("hello ST"), 2);
        assert_eq!(s.held_back("hello S"), 1);
        assert_eq!(s.held_back("hello"), 0);
        // A complete stop string is not a proper prefix.
        assert_eq!(s.held_back("STOP"), 0);
        let included = stops(&["STOP"], StopStringOutput::Include);
        assert_eq!(included.held_back("hello ST"), 0);
    }

    #[test]
    fn held_back_respects_multibyte_prefixes() {
        let s = stops(&["éa"], StopStringOutput::Exclude);
        assert_eq!(s.held_back("xé"), 2);
        assert_eq!(s.held_back("x\u{FFFD}"), 0);
    }

    #[test]
    fn find_takes_the_first_match_to_complete() {
        let s = stops(&["abcd", "bc"], StopStringOutput::Exclude);
        let m = s.find("xabcd", 0).unwrap();
        assert_eq!((m.start, m.end, s.get(m.index)), (2, 4, "bc"));
        // Ending together: the longer one.
        let s = stops(&["cd", "bcd"], StopStringOutput::Exclude);
        let m = s.find("abcd", 0).unwrap();
        assert_eq!((m.start, s.get(m.index)), (1, "bcd"));
    }

    #[test]
    fn find_only_reports_matches_that_use_new_text() {
        let s = stops(&["ab"], StopStringOutput::Exclude);
        assert_eq!(s.find("ab xy", 3), None);
        assert_eq!(s.find("ab xa", 4), None);
        assert_eq!(s.find("ab xab", 5).map(|m| m.start), Some(4));
        // A multi-byte character before the window start.
        let s = stops(&["éb"], StopStringOutput::Exclude);
        assert_eq!(s.find("aéb", 3).map(|m| m.start), Some(1));
    }

    #[test]
    fn cut_depends_on_output_mode() {
        let m = StopMatch {
            start: 2,
            end: 5,
            index: 0,
        };
        assert_eq!(stops(&["x"], StopStringOutput::Exclude).cut(m), 2);
        assert_eq!(stops(&["x"], StopStringOutput::Include).cut(m), 5);
    }
}
