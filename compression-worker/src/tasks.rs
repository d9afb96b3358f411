//! Task accuracy through the worker's own forward pass ([`Llama::extend`], with a key/value cache):
//! multiple-choice questions scored by log-likelihood (the option the model finds most probable
//! after the context wins, as lm-evaluation-harness scores MMLU or HellaSwag) and greedy
//! generation graded by exact match on the answer's number (GSM8K-style). Pruned networks are
//! scored in memory, before the GGUF's quantization.
//!
//! Question sets built here, all from text that calibration never sees:
//! - [`arith_choices`]: arithmetic questions with the answer among three near numbers;
//! - [`plays_next_line`]: a held-out play's next line of verse among three lines from elsewhere
//!   in the held-out plays (a HellaSwag-style continuation task);
//! - [`keyed_choices`]: the vendored keyed MMLU questions, each option's text scored as the
//!   continuation of the question (the cloze form, which small models score above chance on).

use crate::error::{Error, Result};
use crate::llama::{KvCache, Llama};
use crate::tokenizer::Tok;
use candle_core::{Tensor, D};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How an option's log-probability is compared across options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// Summed over its tokens (options of about the same length: numbers).
    Sum,
    /// Summed, divided by the option's length in bytes (options of different lengths).
    PerByte,
}

/// A multiple-choice question: the context, the options (each a continuation of it) and the
/// index of the right one.
#[derive(Debug, Clone)]
pub struct Choice {
    pub task: String,
    pub context: String,
    pub options: Vec<String>,
    pub answer: usize,
    pub norm: Norm,
}

/// A question answered by greedy generation; right when the first number of the answer's first
/// line equals `answer`.
#[derive(Debug, Clone)]
pub struct Generate {
    pub task: String,
    pub prompt: String,
    pub answer: String,
}

/// One task's accuracy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    pub name: String,
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// What guessing scores (1 / options for multiple choice, 0 for an exact number).
    pub chance: f64,
}

/// Per-task tallies in name order.
#[derive(Default)]
struct Tally(BTreeMap<String, (usize, usize, f64)>);

impl Tally {
    fn add(&mut self, task: &str, right: bool, chance: f64) {
        let e = self.0.entry(task.to_string()).or_insert((0, 0, 0.0));
        e.0 += 1;
        e.1 += usize::from(right);
        e.2 += chance;
    }

    fn scores(self) -> Vec<Score> {
        self.0
            .into_iter()
            .map(|(name, (n, correct, chance))| Score {
                name,
                n,
                correct,
                accuracy: correct as f64 / n.max(1) as f64,
                chance: chance / n.max(1) as f64,
            })
            .collect()
    }
}

/// `text`'s ids, after the BOS token when `bos` (once: a chat template may write it already).
fn ids_of(tok: &Tok, text: &str, bos: bool) -> Result<Vec<u32>> {
    let body = tok.encode(text)?;
    let mut ids: Vec<u32> = match tok.bos {
        Some(b) if bos && body.first() != Some(&b) => vec![b],
        _ => Vec::new(),
    };
    ids.extend(body);
    Ok(ids)
}

/// A model's chat template (GGUF `tokenizer.chat_template`, Jinja), rendered as llama.cpp's
/// server does for one user message with the generation prompt: instruct models answer in it.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The template, with the BOS / EOS tokens' texts it may print.
    pub fn new(source: &str, tok: &Tok) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Invalid(format!("tokenizer.chat_template: {e}")))?;
        let text = |id: Option<u32>| id.and_then(|i| tok.token(i)).unwrap_or_default();
        Ok(ChatTemplate { env, bos: text(tok.bos), eos: text(tok.eos) })
    }

    /// One user turn and the assistant's opening.
    pub fn user(&self, content: &str) -> Result<String> {
        let t = self.env.get_template("chat").map_err(|e| Error::Invalid(format!("tokenizer.chat_template: {e}")))?;
        t.render(minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => content }],
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| Error::Invalid(format!("tokenizer.chat_template: {e}")))
    }
}

/// Questions run through the network together (their rows share one pass over the weights).
const CHUNK: usize = 8;

/// The index of the option the network scores highest (the first of equal ones), per question.
pub fn choose(net: &Llama, tok: &Tok, questions: &[Choice]) -> Result<Vec<usize>> {
    let mut ctx = Vec::with_capacity(questions.len());
    for q in questions {
        if q.options.len() < 2 || q.answer >= q.options.len() {
            return Err(Error::Invalid(format!(
                "{}: a question needs 2 or more options and a right one among them",
                q.task
            )));
        }
        let ids = ids_of(tok, &q.context, true)?;
        if ids.is_empty() {
            return Err(Error::Invalid(format!("{}: empty context", q.task)));
        }
        ctx.push(ids);
    }
    let refs: Vec<&[u32]> = ctx.iter().map(Vec::as_slice).collect();
    let mut caches = vec![KvCache::default(); questions.len()];
    let hidden = net.extend_many(&refs, &mut caches)?;
    // Every option of every question, in order: its question and ids. The rows before its tokens
    // are the context's last one and, for an option of several tokens, all but its last token
    // run on a fork of the question's cache (all options in one batch).
    let mut opts: Vec<(usize, Vec<u32>)> = Vec::new();
    for (qi, q) in questions.iter().enumerate() {
        for (i, o) in q.options.iter().enumerate() {
            let ids = tok.encode(o)?;
            if ids.is_empty() {
                return Err(Error::Invalid(format!("{}: empty option {i}", q.task)));
            }
            opts.push((qi, ids));
        }
    }
    let longer: Vec<usize> = (0..opts.len()).filter(|&i| opts[i].1.len() > 1).collect();
    let runs: Vec<&[u32]> = longer.iter().map(|&i| &opts[i].1[..opts[i].1.len() - 1]).collect();
    let mut forks: Vec<KvCache> = longer.iter().map(|&i| caches[opts[i].0].clone()).collect();
    let mut ran: Vec<Option<Tensor>> = vec![None; opts.len()];
    if !runs.is_empty() {
        for (i, h) in longer.into_iter().zip(net.extend_many(&runs, &mut forks)?) {
            ran[i] = Some(h);
        }
    }
    let mut opts = opts.into_iter().zip(ran);
    let mut best = Vec::with_capacity(questions.len());
    for (qi, q) in questions.iter().enumerate() {
        let last = hidden[qi].narrow(0, ctx[qi].len() - 1, 1)?;
        let mut top = (0usize, f64::NEG_INFINITY);
        for (oi, o) in q.options.iter().enumerate() {
            let Some(((_, ids), h)) = opts.next() else { break };
            let rows = match h {
                Some(h) => Tensor::cat(&[&last, &h], 0)?,
                None => last.clone(),
            };
            let lp = net.logp(&rows, &ids)?;
            let score = match q.norm {
                Norm::Sum => lp,
                Norm::PerByte => lp / o.len().max(1) as f64,
            };
            if score > top.1 {
                top = (oi, score);
            }
        }
        best.push(top);
    }
    Ok(best.into_iter().map(|b| b.0).collect())
}

/// Accuracy per task of multiple-choice questions; `progress(done, total)` after each chunk.
pub fn choice_accuracy(
    net: &Llama,
    tok: &Tok,
    questions: &[Choice],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Score>> {
    let mut tally = Tally::default();
    let mut done = 0;
    for chunk in questions.chunks(CHUNK) {
        for (q, picked) in chunk.iter().zip(choose(net, tok, chunk)?) {
            tally.add(&q.task, picked == q.answer, 1.0 / q.options.len() as f64);
        }
        done += chunk.len();
        progress(done, questions.len());
    }
    Ok(tally.scores())
}

/// The last number in `text` (an optional minus sign, digits, thousands commas dropped), if any:
/// how `estimator collect` and scripts/chat_check.py grade `number` answers.
pub fn final_number(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let end = b.iter().rposition(|c| c.is_ascii_digit())? + 1;
    let mut start = end;
    while start > 0
        && (b[start - 1].is_ascii_digit() || (b[start - 1] == b',' && start >= 2 && b[start - 2].is_ascii_digit()))
    {
        start -= 1;
    }
    let digits: String = text[start..end].chars().filter(|c| *c != ',').collect();
    Some(if start > 0 && b[start - 1] == b'-' { format!("-{digits}") } else { digits })
}

/// How greedy answers end.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stop {
    /// At most this many new tokens.
    pub max_new: usize,
    /// Also at the first line break (the plain question form; chat answers run over lines).
    pub at_newline: bool,
}

/// Greedy answers of several sequences at once, each after its own cache (`last`: its last
/// hidden row, (1, dim)); each ends at the end-of-turn token or as `stop` says.
fn greedy(net: &Llama, tok: &Tok, caches: &mut [KvCache], last: Vec<Tensor>, stop: Stop) -> Result<Vec<String>> {
    let n = caches.len();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut live: Vec<usize> = (0..n).collect();
    let mut rows = last;
    for _ in 0..stop.max_new {
        if live.is_empty() {
            break;
        }
        let next = net.logits(&Tensor::cat(&rows, 0)?)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let mut still = Vec::with_capacity(live.len());
        for (&s, &t) in live.iter().zip(&next) {
            if Some(t) == tok.eos {
                continue;
            }
            out[s].push(t);
            if !(stop.at_newline && tok.decode(&out[s])?.contains('\n')) {
                still.push(s);
            }
        }
        live = still;
        if live.is_empty() {
            break;
        }
        let step: Vec<[u32; 1]> = live.iter().map(|&s| [out[s][out[s].len() - 1]]).collect();
        let refs: Vec<&[u32]> = step.iter().map(|t| t.as_slice()).collect();
        let mut cs: Vec<KvCache> = live.iter().map(|&s| std::mem::take(&mut caches[s])).collect();
        rows = net.extend_many(&refs, &mut cs)?;
        for (&s, c) in live.iter().zip(cs) {
            caches[s] = c;
        }
    }
    out.iter()
        .map(|ids| {
            let text = tok.decode(ids)?;
            Ok(if stop.at_newline { text.split('\n').next().unwrap_or_default().to_string() } else { text })
        })
        .collect()
}

/// Exact-match accuracy per task of greedy answers after `shots` (worked examples shared by every
/// question, run once; may be empty), graded on the answer's final number; the answers.
pub fn generate_accuracy(
    net: &Llama,
    tok: &Tok,
    shots: &str,
    questions: &[Generate],
    stop: Stop,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Score>, Vec<String>)> {
    let mut prefix = KvCache::default();
    let shot_ids = ids_of(tok, shots, true)?;
    if !shots.is_empty() {
        net.extend(&shot_ids, &mut prefix)?;
    }
    let mut tally = Tally::default();
    let mut answers = Vec::with_capacity(questions.len());
    for chunk in questions.chunks(2 * CHUNK) {
        let ids: Vec<Vec<u32>> =
            chunk.iter().map(|q| ids_of(tok, &q.prompt, shots.is_empty())).collect::<Result<_>>()?;
        if let Some(q) = chunk.iter().zip(&ids).find(|(_, i)| i.is_empty()).map(|(q, _)| q) {
            return Err(Error::Invalid(format!("{}: empty prompt", q.task)));
        }
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let mut caches = vec![prefix.clone(); chunk.len()];
        let hidden = net.extend_many(&refs, &mut caches)?;
        let last: Vec<Tensor> =
            hidden.iter().zip(&ids).map(|(h, i)| h.narrow(0, i.len() - 1, 1)).collect::<candle_core::Result<_>>()?;
        for (q, text) in chunk.iter().zip(greedy(net, tok, &mut caches, last, stop)?) {
            let right = final_number(&text).is_some_and(|n| Some(n) == final_number(&q.answer));
            tally.add(&q.task, right, 0.0);
            answers.push(text);
        }
        progress(answers.len(), questions.len());
    }
    Ok((tally.scores(), answers))
}

/// The "Question: … / Answer:" form both arithmetic tasks use.
pub fn qa(prompt: &str) -> String {
    format!("Question: {prompt}\nAnswer:")
}

/// Arithmetic questions as multiple choice: the answer among three other numbers near it
/// (±1, ±2, ±3, ±10, never negative), in a seeded order. Each prompt is the context as given
/// (already in its question form); each option is `option_prefix` and the number. Questions
/// whose answer is not a whole number are skipped.
pub fn arith_choices(questions: &[Generate], seed: u64, option_prefix: &str) -> Vec<Choice> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    questions
        .iter()
        .filter_map(|q| {
            let a: i64 = q.answer.trim().parse().ok()?;
            let mut near: Vec<i64> = [-10, -3, -2, -1, 1, 2, 3, 10].iter().map(|d| a + d).filter(|v| *v >= 0).collect();
            near.shuffle(&mut rng);
            let mut options: Vec<i64> = near.into_iter().take(3).collect();
            let at = rng.gen_range(0..=options.len());
            options.insert(at, a);
            Some(Choice {
                task: "arith-mc".into(),
                context: q.prompt.clone(),
                options: options.iter().map(|v| format!("{option_prefix}{v}")).collect(),
                answer: at,
                norm: Norm::Sum,
            })
        })
        .collect()
}

/// A line of verse or prose a continuation task can use: 4 to 14 words, some lower case (not a
/// speaker's name or a heading), not a stage direction.
fn spoken(line: &str) -> bool {
    let t = line.trim();
    let words = t.split_whitespace().count();
    (4..=14).contains(&words)
        && t.chars().any(|c| c.is_lowercase())
        && !t.starts_with(['[', '(', '_'])
        && !["Enter ", "Exit", "Exeunt", "Re-enter", "ACT ", "SCENE "].iter().any(|p| t.starts_with(p))
}

/// `n` continuation questions from the held-out plays: two consecutive spoken lines as the
/// context, the line that follows them among three spoken lines drawn from anywhere in the
/// held-out text (seeded). Scored per byte, as the options' lengths differ.
pub fn plays_next_line(files: &[PathBuf], n: usize, seed: u64) -> Result<Vec<Choice>> {
    let mut lines: Vec<String> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        lines.extend(text.lines().map(|l| l.trim().to_string()));
        lines.push(String::new());
    }
    let pool: Vec<usize> = (0..lines.len()).filter(|&i| spoken(&lines[i])).collect();
    let mut triples: Vec<usize> =
        (2..lines.len()).filter(|&i| spoken(&lines[i - 2]) && spoken(&lines[i - 1]) && spoken(&lines[i])).collect();
    if triples.len() < n || pool.len() < 4 {
        return Err(Error::Invalid(format!(
            "held-out plays give {} runs of three spoken lines; {n} questions asked",
            triples.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    triples.shuffle(&mut rng);
    let mut out = Vec::with_capacity(n);
    for &i in triples.iter().take(n) {
        let right = &lines[i];
        let mut options: Vec<String> = Vec::with_capacity(4);
        while options.len() < 3 {
            let cand = &lines[pool[rng.gen_range(0..pool.len())]];
            if cand != right && !options.contains(cand) {
                options.push(cand.clone());
            }
        }
        let at = rng.gen_range(0..=options.len());
        options.insert(at, right.clone());
        out.push(Choice {
            task: "plays-next".into(),
            context: format!("{}\n{}\n", lines[i - 2], lines[i - 1]),
            options,
            answer: at,
            norm: Norm::PerByte,
        });
    }
    Ok(out)
}

/// The keyed multiple-choice questions of a JSONL file (`grader: "choice"`, `answer` a letter,
/// the options as "A. text" lines after the question): the question as context, each option's
/// text as the continuation after "Answer:", scored per byte. Task `mmlu-ll`.
pub fn keyed_choices(path: &Path) -> Result<Vec<Choice>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |m: &str| Error::Invalid(format!("{} line {}: {m}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        if v.get("grader").and_then(|g| g.as_str()) != Some("choice") {
            continue;
        }
        let prompt = v.get("prompt").and_then(|p| p.as_str()).ok_or_else(|| bad("no prompt"))?;
        let key = v.get("answer").and_then(|a| a.as_str()).ok_or_else(|| bad("no answer"))?.trim();
        let (mut stem, mut options) = (Vec::new(), Vec::new());
        for l in prompt.lines() {
            let opt = l
                .get(..3)
                .filter(|p| p.as_bytes()[0].is_ascii_uppercase() && p.ends_with(". ") && p.is_char_boundary(3));
            match opt {
                Some(p) if p.as_bytes()[0] == b'A' + options.len() as u8 => options.push(l[3..].trim().to_string()),
                _ if options.is_empty() && l.trim() != "Answer:" => stem.push(l),
                _ => {}
            }
        }
        let answer = key
            .bytes()
            .next()
            .filter(|_| key.len() == 1)
            .map(|c| c.wrapping_sub(b'A') as usize)
            .filter(|&a| a < options.len())
            .ok_or_else(|| bad(&format!("answer `{key}` is not one of {} option letters", options.len())))?;
        if options.len() < 2 {
            return Err(bad("fewer than 2 options"));
        }
        out.push(Choice {
            task: "mmlu-ll".into(),
            context: format!("{}\nAnswer:", stem.join("\n")),
            options: options.into_iter().map(|o| format!(" {o}")).collect(),
            answer,
            norm: Norm::PerByte,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_number_is_read_with_its_sign_and_without_commas() {
        assert_eq!(final_number(" 1,234 apples"), Some("1234".into()));
        assert_eq!(final_number("3 - 10 = -7."), Some("-7".into()));
        assert_eq!(final_number("12, 13"), Some("13".into()));
        assert_eq!(final_number("x 2,5"), Some("25".into()));
        assert_eq!(final_number("none"), None);
    }

    #[test]
    fn arithmetic_choices_hold_the_answer_once_among_four_non_negative_numbers() {
        let qs: Vec<Generate> = (0..200)
            .map(|i| Generate {
                task: "arith".into(),
                prompt: format!("What is {i} + 1?"),
                answer: (i + 1).to_string(),
            })
            .collect();
        let cs = arith_choices(&qs, 3, " ");
        assert_eq!(cs.len(), 200);
        let mut at = [0usize; 4];
        for (c, q) in cs.iter().zip(&qs) {
            assert_eq!(c.options.len(), 4);
            assert_eq!(c.options[c.answer].trim(), q.answer);
            assert_eq!(c.options.iter().filter(|o| o.trim() == q.answer).count(), 1);
            assert!(c.options.iter().all(|o| o.trim().parse::<i64>().is_ok_and(|v| v >= 0)));
            at[c.answer] += 1;
        }
        // The right option's place is spread over the four.
        assert!(at.iter().all(|&k| k > 20), "{at:?}");
        assert!(
            arith_choices(&[Generate { task: "a".into(), prompt: "p".into(), answer: "1.5".into() }], 1, "").is_empty()
        );
    }

    #[test]
    fn keyed_questions_are_parsed_into_stem_options_and_key() {
        let dir = std::env::temp_dir().join(format!("cw-keyed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("q.jsonl");
        std::fs::write(
            &f,
            concat!(
                r#"{"prompt": "Which is a fruit?\nPick one.\nA. stone\nB. apple\nC. iron\nD. salt\nAnswer:", "answer": "B", "grader": "choice"}"#,
                "\n",
                r#"{"prompt": "2+2?", "answer": "4", "grader": "number"}"#,
                "\n"
            ),
        )
        .unwrap();
        let qs = keyed_choices(&f).unwrap();
        assert_eq!(qs.len(), 1);
        assert_eq!(qs[0].context, "Which is a fruit?\nPick one.\nAnswer:");
        assert_eq!(qs[0].options, vec![" stone", " apple", " iron", " salt"]);
        assert_eq!(qs[0].answer, 1);
        std::fs::write(&f, r#"{"prompt": "Q\nA. x\nB. y\nAnswer:", "answer": "C", "grader": "choice"}"#).unwrap();
        let e = keyed_choices(&f).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("`C`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn continuation_questions_come_from_consecutive_spoken_lines() {
        let dir = std::env::temp_dir().join(format!("cw-plays-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("play.txt");
        let mut text = String::from("ACT I. SCENE 1.\n\nHAMLET.\n");
        for i in 0..40 {
            text.push_str(&format!("this is the spoken line number {i} of the play\n"));
            if i % 10 == 9 {
                text.push_str("\nEnter the King and Queen\n\n");
            }
        }
        std::fs::write(&f, text).unwrap();
        let qs = plays_next_line(std::slice::from_ref(&f), 20, 5).unwrap();
        assert_eq!(qs.len(), 20);
        for q in &qs {
            let ctx: Vec<&str> = q.context.lines().collect();
            let num = |s: &str| s.split_whitespace().nth(6).and_then(|w| w.parse::<usize>().ok()).unwrap();
            // The right option is the line after the context's two.
            assert_eq!(num(ctx[0]) + 1, num(ctx[1]));
            assert_eq!(num(ctx[1]) + 1, num(&q.options[q.answer]));
            assert_eq!(q.options.len(), 4);
        }
        let e = plays_next_line(std::slice::from_ref(&f), 1000, 5).unwrap_err().to_string();
        assert!(e.contains("1000 questions asked"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
