//! GBNF (llama.cpp's grammar format, the EBNF that vLLM's `guided_grammar`
//! accepts) rewritten as the Lark syntax llguidance compiles: a syntax
//! translation only; llguidance checks and compiles the result.
//!
//! `root ::= ...` becomes `start: ...`, rule names are lower-cased with `-`
//! as `_`, string literals are re-quoted, character classes and `.` become
//! regex terminals; groups, alternatives and `* + ? {m,n}` carry over.

/// Whether `text` is GBNF rather than Lark (it defines rules with `::=`).
pub(crate) fn is_gbnf(text: &str) -> bool {
    text.contains("::=")
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Defines,
    Literal(String),
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
    Any,
    Punct(char),
    Repeat(Option<u32>, Option<u32>),
}

/// The Lark form of a GBNF grammar; the error names the line.
pub fn gbnf_to_lark(text: &str) -> Result<String, String> {
    let tokens = lex(text)?;
    let mut rules: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = &tokens[i];
        let defines = matches!(tokens.get(i + 1), Some((_, Token::Defines)));
        match token {
            Token::Name(name) if defines => {
                rules.push((rule_name(name), Vec::new()));
                i += 2;
                continue;
            }
            _ if rules.is_empty() => {
                return Err(format!(
                    "line {line}: expected a rule definition (`name ::= ...`)"
                ));
            }
            Token::Defines => return Err(format!("line {line}: `::=` without a rule name")),
            _ => {}
        }
        let body = &mut rules.last_mut().expect("checked above").1;
        body.push(match token {
            Token::Name(name) => rule_name(name),
            Token::Literal(s) => serde_json::Value::String(s.clone()).to_string(),
            Token::Class { negated, items } => class_regex(*negated, items),
            Token::Any => "/(?s:.)/".to_string(),
            Token::Punct(c) => c.to_string(),
            Token::Repeat(min, max) => repeat(*min, *max),
            Token::Defines => unreachable!("handled above"),
        });
        i += 1;
    }
    if !rules.iter().any(|(name, _)| name == "start") {
        return Err("the grammar has no `root` rule".to_string());
    }
    if let Some((name, _)) = rules.iter().find(|(_, body)| body.is_empty()) {
        return Err(format!("the rule `{name}` is empty"));
    }
    Ok(rules
        .iter()
        .map(|(name, body)| format!("{name}: {}\n", body.join(" ")))
        .collect())
}

fn rule_name(name: &str) -> String {
    if name == "root" {
        return "start".to_string();
    }
    format!("r_{}", name.to_ascii_lowercase().replace('-', "_"))
}

fn repeat(min: Option<u32>, max: Option<u32>) -> String {
    match (min, max) {
        (Some(m), Some(n)) if m == n => format!("{{{m}}}"),
        (m, Some(n)) => format!("{{{},{n}}}", m.unwrap_or(0)),
        (m, None) => format!("{{{},}}", m.unwrap_or(0)),
    }
}

fn class_regex(negated: bool, items: &[(char, char)]) -> String {
    let mut out = String::from("/[");
    if negated {
        out.push('^');
    }
    for &(lo, hi) in items {
        out.push_str(&class_char(lo));
        if hi != lo {
            out.push('-');
            out.push_str(&class_char(hi));
        }
    }
    out.push_str("]/");
    out
}

fn class_char(c: char) -> String {
    if c.is_ascii_alphanumeric() || c == ' ' || c == '_' {
        c.to_string()
    } else {
        format!("\\x{{{:X}}}", c as u32)
    }
}

/// Tokens with their line numbers (1-based).
fn lex(text: &str) -> Result<Vec<(usize, Token)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ':' if chars[i..].starts_with(&[':', ':', '=']) => {
                out.push((line, Token::Defines));
                i += 3;
            }
            '"' => {
                let (s, next) = literal(&chars, i + 1, line)?;
                out.push((line, Token::Literal(s)));
                i = next;
            }
            '[' => {
                let (token, next) = class(&chars, i + 1, line)?;
                out.push((line, token));
                i = next;
            }
            '.' => {
                out.push((line, Token::Any));
                i += 1;
            }
            '(' | ')' | '|' | '*' | '+' | '?' => {
                out.push((line, Token::Punct(c)));
                i += 1;
            }
            '{' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| i + p)
                    .ok_or_else(|| format!("line {line}: unclosed `{{`"))?;
                let body: String = chars[i + 1..end].iter().collect();
                out.push((line, bounds(&body, line)?));
                i = end + 1;
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1;
                }
                out.push((line, Token::Name(chars[start..i].iter().collect())));
            }
            other => return Err(format!("line {line}: unexpected character {other:?}")),
        }
    }
    Ok(out)
}

fn bounds(body: &str, line: usize) -> Result<Token, String> {
    let number = |s: &str| -> Result<Option<u32>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| format!("line {line}: bad repetition count `{s}`"))
    };
    match body.split_once(',') {
        None => {
            let n = number(body)?.ok_or_else(|| format!("line {line}: empty `{{}}`"))?;
            Ok(Token::Repeat(Some(n), Some(n)))
        }
        Some((lo, hi)) => {
            let (lo, hi) = (number(lo)?, number(hi)?);
            if let (Some(a), Some(b)) = (lo, hi)
                && a > b
            {
                return Err(format!("line {line}: repetition {{{a},{b}}} has min > max"));
            }
            Ok(Token::Repeat(lo, hi))
        }
    }
}

/// An escaped character at `chars[i]` (just after `\`): the character and
/// the index after it.
fn escape(chars: &[char], i: usize, line: usize) -> Result<(char, usize), String> {
    let c = *chars
        .get(i)
        .ok_or_else(|| format!("line {line}: escape at the end of the grammar"))?;
    let hex = |n: usize| -> Result<(char, usize), String> {
        let digits: String = chars.get(i + 1..i + 1 + n).unwrap_or(&[]).iter().collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .map(|ch| (ch, i + 1 + n))
            .ok_or_else(|| format!("line {line}: bad escape `\\{c}{digits}`"))
    };
    match c {
        'n' => Ok(('\n', i + 1)),
        'r' => Ok(('\r', i + 1)),
        't' => Ok(('\t', i + 1)),
        'x' => hex(2),
        'u' => hex(4),
        'U' => hex(8),
        other => Ok((other, i + 1)),
    }
}

fn literal(chars: &[char], mut i: usize, line: usize) -> Result<(String, usize), String> {
    let mut s = String::new();
    loop {
        match chars.get(i) {
            None | Some('\n') => return Err(format!("line {line}: unterminated string")),
            Some('"') => return Ok((s, i + 1)),
            Some('\\') => {
                let (c, next) = escape(chars, i + 1, line)?;
                s.push(c);
                i = next;
            }
            Some(&c) => {
                s.push(c);
                i += 1;
            }
        }
    }
}

fn class(chars: &[char], mut i: usize, line: usize) -> Result<(Token, usize), String> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let next_char = |i: usize| -> Result<(char, usize), String> {
        match chars.get(i) {
            None => Err(format!("line {line}: unterminated character class")),
            Some('\\') => escape(chars, i + 1, line),
            Some(&c) => Ok((c, i + 1)),
        }
    };
    loop {
        match chars.get(i) {
            None => return Err(format!("line {line}: unterminated character class")),
            Some(']') => break,
            _ => {}
        }
        let (lo, after) = next_char(i)?;
        i = after;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            let (hi, after) = next_char(i + 1)?;
            if hi < lo {
                return Err(format!(
                    "line {line}: character range {lo:?}-{hi:?} is reversed"
                ));
            }
            items.push((lo, hi));
            i = after;
        } else {
            items.push((lo, lo));
        }
    }
    if items.is_empty() {
        return Err(format!("line {line}: empty character class"));
    }
    Ok((Token::Class { negated, items }, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_rules_literals_classes_and_repeats() {
        let lark = gbnf_to_lark(
            "# a list\nroot ::= \"[\" item (\", \" item){0,3} \"]\"\nitem ::= [a-z0-9_-]+ | \"\\\"q\\\"\" | .\n",
        )
        .unwrap();
        assert_eq!(
            lark,
            "start: \"[\" r_item ( \", \" r_item ) {0,3} \"]\"\n\
             r_item: /[a-z0-9_\\x{2D}]/ + | \"\\\"q\\\"\" | /(?s:.)/\n"
        );
    }

    #[test]
    fn continuation_lines_belong_to_the_rule_above() {
        let lark = gbnf_to_lark("root ::= a\n  | b-c\nb-c ::= \"x\"\na ::= [^\\n]{2,}").unwrap();
        assert_eq!(
            lark,
            "start: r_a | r_b_c\nr_b_c: \"x\"\nr_a: /[^\\x{A}]/ {2,}\n"
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert!(gbnf_to_lark("item ::= \"a\"").unwrap_err().contains("root"));
        let e = gbnf_to_lark("root ::= \"a\"\nx ::= [z-a]").unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
        assert!(
            gbnf_to_lark("root ::= \"abc")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            gbnf_to_lark("\"a\" root ::= x")
                .unwrap_err()
                .contains("line 1")
        );
    }
}
