//! The estimator artifact (`estimator train --out FILE`): everything needed to rebuild the
//! trained estimator without the records file — the training records, their embeddings (MiniLM),
//! the kNN settings, the head's weights, the combination, σ's scales, the prices, and where the
//! training split came from. Gzip-compressed JSON; large float arrays are base64.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::knn::{KnnConfig, KnnEstimator};
use crate::mlp::Mlp;
use crate::model::{Combine, Embedder, Estimator, TrainReport};
use crate::records::Record;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;

pub const FORMAT: &str = "llmroute-estimator/1";

/// Which records and split the estimator was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// The records file's name (not its path) and its number of usable records.
    pub source: String,
    pub records: usize,
    /// 1.0 = trained on every record.
    pub train_frac: f64,
    pub seed: u64,
}

#[derive(Serialize, Deserialize)]
struct Embeddings {
    dim: usize,
    #[serde(with = "crate::b64")]
    data: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    embedder: Embedder,
    knn: KnnConfig,
    models: Vec<String>,
    /// The catalog (prices) training used, as YAML.
    catalog_yaml: Option<String>,
    split: SplitInfo,
    combine: Combine,
    sigma_scale: Vec<f64>,
    head: Option<Mlp>,
    report: TrainReport,
    records: Vec<Record>,
    embeddings: Option<Embeddings>,
    /// The table a static estimator embeds queries with (absent for the other embedders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    static_table: Option<TableRef>,
}

/// Which static table: where it was, and its fingerprint (another table is refused).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableRef {
    path: String,
    fingerprint: u64,
    /// The training prompts' centre (`static_embed::StaticEmbedder`).
    #[serde(with = "crate::b64")]
    center: Vec<f32>,
}

/// Writes the artifact for `est`, trained on `records` (in training order) with `embeddings`.
pub fn save(
    path: &Path,
    est: &Estimator,
    records: &[&Record],
    embeddings: Option<&[Vec<f32>]>,
    catalog: Option<&Catalog>,
    split: SplitInfo,
) -> Result<()> {
    let catalog_yaml =
        catalog.map(serde_yaml::to_string).transpose().map_err(|e| Error::Invalid(format!("catalog: {e}")))?;
    let file = File {
        format: FORMAT.into(),
        embedder: est.embedder(),
        knn: est.knn().config.clone(),
        models: est.models().to_vec(),
        catalog_yaml,
        split,
        combine: est.combine(),
        sigma_scale: est.sigma_scales().to_vec(),
        head: est.head().cloned(),
        report: est.report.clone(),
        records: records.iter().map(|r| (*r).clone()).collect(),
        embeddings: embeddings
            .filter(|_| est.embedder().is_dense())
            .map(|e| Embeddings { dim: e.first().map_or(0, Vec::len), data: e.iter().flatten().copied().collect() }),
        static_table: est.static_table().map(|t| TableRef {
            path: t.table.path.display().to_string(),
            fingerprint: t.table.fingerprint,
            center: t.center.clone(),
        }),
    };
    if est.embedder() == Embedder::Static && file.static_table.is_none() {
        return Err(Error::Invalid("a static estimator without its table cannot be saved".into()));
    }
    let json = serde_json::to_vec(&file).map_err(|e| Error::Invalid(format!("artifact: {e}")))?;
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut gz = GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::default());
    gz.write_all(&json).map_err(|e| Error::io(path, e))?;
    gz.finish().and_then(|mut w| w.flush()).map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// A loaded artifact: the estimator, its training records (in training order) and the split.
pub struct Loaded {
    pub estimator: Estimator,
    pub records: Vec<Record>,
    pub split: SplitInfo,
}

/// Reads an artifact and rebuilds the estimator (retrains the kNN index from the stored records:
/// deterministic, well under a second). A MiniLM artifact also loads the MiniLM weights, to embed
/// live queries; where they are missing the error says how to install them. A static artifact
/// loads the table it names ($LLMROUTE_STATIC_TABLE overrides the recorded path) and refuses a
/// table whose fingerprint differs.
pub fn load(path: &Path) -> Result<Loaded> {
    load_tuned(path, None)
}

/// As `load`, with the kNN's retrieval cuts `(max_query_terms, max_doc_terms)` (speed knobs of
/// retrieval, not learned values) set by the caller — the router serves with its own settings.
pub fn load_tuned(path: &Path, cuts: Option<(usize, usize)>) -> Result<Loaded> {
    let bad = |msg: String| Error::Invalid(format!("estimator artifact {}: {msg}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut json = Vec::new();
    GzDecoder::new(std::io::BufReader::new(f))
        .read_to_end(&mut json)
        .map_err(|e| bad(format!("not a gzip file ({e})")))?;
    let file: File = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    if file.format != FORMAT {
        return Err(bad(format!("format `{}`, this build reads `{FORMAT}`", file.format)));
    }
    if file.sigma_scale.len() != file.models.len() {
        return Err(bad(format!("{} σ scales for {} models", file.sigma_scale.len(), file.models.len())));
    }
    if let Some(h) = &file.head {
        if h.models != file.models.len() || h.w1.len() != h.in_rows * h.hidden || h.v.len() != h.models * h.hidden {
            return Err(bad("the head's weights do not match its shape".into()));
        }
    }
    let catalog = file
        .catalog_yaml
        .as_deref()
        .map(|y| Catalog::parse(y, path))
        .transpose()
        .map_err(|e| bad(format!("stored catalog: {e}")))?;
    let refs: Vec<&Record> = file.records.iter().collect();
    let mut cfg = file.knn.clone();
    if let Some((query, doc)) = cuts {
        cfg.max_query_terms = query;
        cfg.max_doc_terms = doc;
    }
    let mut knn = KnnEstimator::train(&refs, &file.models, catalog.as_ref(), cfg)?;
    if let Some(e) = &file.embeddings {
        if e.dim == 0 || e.data.len() != e.dim * file.records.len() {
            return Err(bad(format!("{} embedding floats for {} records of dim {}", e.data.len(), refs.len(), e.dim)));
        }
        let rows: Vec<Vec<f32>> = e.data.chunks_exact(e.dim).map(<[f32]>::to_vec).collect();
        knn = knn.with_embeddings(&rows)?;
    } else if file.embedder.is_dense() {
        return Err(bad(format!("a {:?} artifact without embeddings", file.embedder)));
    }
    let table = match (&file.static_table, file.embedder) {
        (Some(t), Embedder::Static) => {
            let at = crate::static_embed::locate(Path::new(&t.path));
            let table = crate::static_embed::StaticTable::load(&at).map_err(|e| match e {
                Error::Io { .. } => bad(format!("its static table: {e}; {}", crate::static_embed::INSTALL_HINT)),
                e => bad(e.to_string()),
            })?;
            if table.fingerprint != t.fingerprint {
                return Err(bad(format!(
                    "static table {} is not the one it was trained with (fingerprint {:016x}, trained with {:016x})",
                    at.display(),
                    table.fingerprint,
                    t.fingerprint
                )));
            }
            Some(
                crate::static_embed::StaticEmbedder::with_center(std::sync::Arc::new(table), t.center.clone())
                    .map_err(|e| bad(e.to_string()))?,
            )
        }
        (None, Embedder::Static) => return Err(bad("a static artifact that names no table".into())),
        (Some(_), e) => return Err(bad(format!("a {e:?} artifact that names a static table"))),
        (None, _) => None,
    };
    let estimator =
        Estimator::from_parts(knn, file.head, file.combine, file.sigma_scale, file.embedder, table, file.report)?;
    Ok(Loaded { estimator, records: file.records, split: file.split })
}
