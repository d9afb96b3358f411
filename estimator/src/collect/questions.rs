//! Questions for `estimator collect`: JSONL, one question per line —
//! `{"id", "prompt", "answer", "task"?, "grader"?}` (`grader` overrides the command's default).

use super::grade::Grader;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuestion {
    id: Option<String>,
    task: Option<String>,
    prompt: Option<String>,
    answer: Option<String>,
    grader: Option<Grader>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub task: Option<String>,
    pub prompt: String,
    pub answer: String,
    pub grader: Grader,
}

/// Reads and checks a questions file; errors name the line and the field.
pub fn read_questions(path: &Path, default: Option<Grader>) -> Result<Vec<Question>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| Error::Record { path: path.into(), line: n, msg };
        let raw: RawQuestion = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
        let id = raw.id.filter(|s| !s.is_empty()).ok_or_else(|| err("field `id`: missing or empty".into()))?;
        let prompt = raw
            .prompt
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| err("field `prompt`: missing or empty".into()))?;
        let answer = raw
            .answer
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| err("field `answer`: missing or empty".into()))?;
        let grader = raw
            .grader
            .or(default)
            .ok_or_else(|| err("field `grader`: missing, and no --grader default was given".into()))?;
        if !ids.insert(id.clone()) {
            return Err(err(format!("field `id`: duplicate id {id}")));
        }
        out.push(Question { id, task: raw.task, prompt, answer, grader });
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!("{}: no questions", path.display())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_name_the_field() {
        let dir = std::env::temp_dir().join(format!("llmroute-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("q.jsonl");
        std::fs::write(&p, "{\"id\":\"1\",\"prompt\":\"2+2?\",\"answer\":\"4\"}\n").unwrap();
        assert!(read_questions(&p, None).unwrap_err().to_string().contains("`grader`"));
        let q = read_questions(&p, Some(Grader::Number)).unwrap();
        assert_eq!(q[0].grader, Grader::Number);
        std::fs::write(&p, "{\"id\":\"1\",\"prompt\":\"\",\"answer\":\"4\",\"grader\":\"number\"}\n").unwrap();
        let e = read_questions(&p, None).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("`prompt`"), "{e}");
        std::fs::write(&p, "{\"id\":\"1\",\"prompt\":\"x\",\"answer\":\"4\",\"grader\":\"fuzzy\"}\n").unwrap();
        assert!(read_questions(&p, None).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
