//! Graders: turn a model's free-text answer into a score in {0, 1} against the reference answer.
//!
//! - `number`: the answer's final number (after `####`, inside `\boxed{}`, after "answer is" /
//!   "Answer:", else the last number in the text; commas, `$` and `%` ignored) equals the
//!   reference within 1e-6 (relative).
//! - `choice`: the chosen letter (a leading `B`, `B.`, `(B)`, or after "answer is" / "Answer:")
//!   equals the reference letter.
//! - `exact`: after normalization (lower case, punctuation and the articles a / an / the removed,
//!   whitespace collapsed) the answer equals the reference or contains it as a whole-word run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Grader {
    Exact,
    Choice,
    Number,
}

impl Grader {
    pub fn grade(self, answer: &str, reference: &str) -> f64 {
        let ok = match self {
            Grader::Number => match (final_number(answer), parse_number(reference)) {
                (Some(a), Some(r)) => (a - r).abs() <= 1e-6 * r.abs().max(1.0),
                _ => false,
            },
            Grader::Choice => {
                let r = reference.trim().to_ascii_uppercase();
                chosen_letter(answer).is_some_and(|c| r.len() == 1 && r.starts_with(c))
            }
            Grader::Exact => {
                let (a, r) = (normalize(answer), normalize(reference));
                !r.is_empty() && (a == r || format!(" {a} ").contains(&format!(" {r} ")))
            }
        };
        if ok {
            1.0
        } else {
            0.0
        }
    }
}

fn parse_number(s: &str) -> Option<f64> {
    let t: String = s.chars().filter(|c| !matches!(c, ',' | '$' | '%' | ' ')).collect();
    let t = t.trim_end_matches('.');
    t.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Every number in the text, in order (a minus sign directly before the digits counts).
fn numbers(text: &str) -> Vec<f64> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            let mut j = i;
            while j < b.len()
                && (b[j].is_ascii_digit()
                    || (matches!(b[j], b',' | b'.') && j + 1 < b.len() && b[j + 1].is_ascii_digit()))
            {
                j += 1;
            }
            if let Some(x) = parse_number(&text[start..j]) {
                out.push(x);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// The number the answer commits to.
pub fn final_number(answer: &str) -> Option<f64> {
    let lower = answer.to_lowercase();
    for marker in ["####", "\\boxed{", "answer is", "answer:"] {
        if let Some(p) = lower.rfind(marker) {
            if let Some(x) = numbers(&answer[p + marker.len()..]).first() {
                return Some(*x);
            }
        }
    }
    numbers(answer).last().copied()
}

fn letter_at(s: &str) -> Option<char> {
    let t = s.trim_start().trim_start_matches(['(', '*', '[']);
    let mut it = t.chars();
    let c = it.next()?;
    let next = it.next();
    (matches!(c, 'A'..='E') && next.is_none_or(|n| !n.is_alphanumeric())).then_some(c)
}

/// The letter the answer chooses.
pub fn chosen_letter(answer: &str) -> Option<char> {
    let lower = answer.to_lowercase();
    for marker in ["answer is", "answer:"] {
        if let Some(p) = lower.find(marker) {
            if let Some(c) = letter_at(&answer[p + marker.len()..]) {
                return Some(c);
            }
        }
    }
    letter_at(answer)
}

fn normalize(s: &str) -> String {
    let cleaned: String =
        s.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' }).collect();
    cleaned.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_grader() {
        let g = Grader::Number;
        assert_eq!(g.grade("She pays 3 * 4 = 12 dollars.\n#### 12", "12"), 1.0);
        assert_eq!(g.grade("So the answer is $1,250.", "1250"), 1.0);
        assert_eq!(g.grade("\\boxed{-3.5} since 7/2 = 3.5", "-3.5"), 1.0);
        assert_eq!(g.grade("First 5 apples, then 7 more: 12 apples in all", "12"), 1.0);
        assert_eq!(g.grade("The answer is 13, not 12", "12"), 0.0);
        assert_eq!(g.grade("no idea", "12"), 0.0);
        assert_eq!(g.grade("12", "not a number"), 0.0);
    }

    #[test]
    fn choice_grader() {
        let g = Grader::Choice;
        assert_eq!(g.grade("B", "B"), 1.0);
        assert_eq!(g.grade(" (C) because ...", "C"), 1.0);
        assert_eq!(g.grade("The correct answer is D. Paris", "D"), 1.0);
        assert_eq!(g.grade("Answer: A", "A"), 1.0);
        assert_eq!(g.grade("A", "B"), 0.0);
        // "Apples" starts with A but is a word, not a choice.
        assert_eq!(g.grade("Apples are red", "A"), 0.0);
        assert_eq!(g.grade("", "A"), 0.0);
    }

    #[test]
    fn exact_grader() {
        let g = Grader::Exact;
        assert_eq!(g.grade("The Eiffel Tower.", "eiffel tower"), 1.0);
        assert_eq!(g.grade("It was built by Gustave Eiffel in 1889", "Gustave Eiffel"), 1.0);
        assert_eq!(g.grade("Eiffelish", "Eiffel"), 0.0);
        assert_eq!(g.grade("anything", ""), 0.0);
    }
}
