//! The estimator artifact on the vendored records: `estimator train` writes it, loading it gives
//! the same predictions as the estimator that was trained, and bad files are refused clearly.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use estimator::records::{common_models, read_records};
use estimator::{Catalog, Estimator, Record, TrainOptions};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmroute-artifact-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn train_save_load_predicts_the_same() {
    let all = read_records(&root().join("data/dcrouter.jsonl.gz")).unwrap();
    let (models, _) = common_models(&all);
    let catalog = Catalog::load(&root().join("deploy/catalogs/dcrouter.yaml")).unwrap();
    let train: Vec<&Record> = all.iter().take(1500).collect();
    let est = Estimator::train(&train, &models, Some(&catalog), None, &TrainOptions::default()).unwrap();
    assert!(est.head().is_some());
    let dir = scratch("roundtrip");
    let path = dir.join("est.json.gz");
    let split = estimator::artifact::SplitInfo { source: "x".into(), records: 1500, train_frac: 1.0, seed: 1 };
    estimator::artifact::save(&path, &est, &train, None, Some(&catalog), split.clone()).unwrap();
    let loaded = estimator::artifact::load(&path).unwrap();
    assert_eq!(loaded.split, split);
    assert_eq!(loaded.records.len(), 1500);
    assert_eq!(loaded.estimator.models(), est.models());
    assert_eq!(loaded.estimator.combine(), est.combine());
    for r in all.iter().skip(1500).take(50) {
        let a = est.predict(&r.prompt, r.task.as_deref());
        let b = loaded.estimator.predict(&r.prompt, r.task.as_deref());
        assert_eq!(a, b, "prediction changed through the artifact for {}", r.id);
    }
    // Bad files: not gzip, wrong format tag.
    std::fs::write(dir.join("bad"), "{}").unwrap();
    let e = estimator::artifact::load(&dir.join("bad")).err().unwrap().to_string();
    assert!(e.contains("not a gzip file"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_static_estimator_round_trips_and_refuses_another_table() {
    use estimator::static_embed::{StaticEmbedder, StaticTable};
    let all = read_records(&root().join("data/dcrouter.jsonl.gz")).unwrap();
    let (models, _) = common_models(&all);
    let catalog = Catalog::load(&root().join("deploy/catalogs/dcrouter.yaml")).unwrap();
    let train: Vec<&Record> = all.iter().take(800).collect();
    let dir = scratch("static");
    let table_path = dir.join("table.bin");
    let mut table = StaticTable::spelled(16, 1).unwrap();
    table.save(&table_path).unwrap();
    let table = std::sync::Arc::new(StaticTable::load(&table_path).unwrap());
    let texts: Vec<&str> = train.iter().map(|r| r.prompt.as_str()).collect();
    let embedder = StaticEmbedder::fit(table, &texts);
    let emb: Vec<Vec<f32>> = texts.iter().map(|t| embedder.embed(t)).collect();
    let opts = TrainOptions { embedder: estimator::Embedder::Static, ..TrainOptions::default() };
    let est = Estimator::train(&train, &models, Some(&catalog), Some(&emb), &opts).unwrap();
    // Without its table a static estimator can neither predict live nor be saved.
    let split = estimator::artifact::SplitInfo { source: "x".into(), records: 800, train_frac: 1.0, seed: 1 };
    let path = dir.join("est.json.gz");
    let e = estimator::artifact::save(&path, &est, &train, Some(&emb), Some(&catalog), split.clone()).unwrap_err();
    assert!(e.to_string().contains("without its table"), "{e}");
    let est = est.with_static_table(embedder.clone()).unwrap();
    estimator::artifact::save(&path, &est, &train, Some(&emb), Some(&catalog), split).unwrap();
    let loaded = estimator::artifact::load(&path).unwrap();
    assert_eq!(loaded.estimator.embedder(), estimator::Embedder::Static);
    for r in all.iter().skip(800).take(50) {
        let a = est.predict(&r.prompt, r.task.as_deref());
        assert_eq!(a, loaded.estimator.predict(&r.prompt, r.task.as_deref()), "{}", r.id);
        // The live path embeds the query: the same as predicting with its embedding.
        assert_eq!(a, est.predict_with(&r.prompt, r.task.as_deref(), Some(&embedder.embed(&r.prompt)), None));
    }
    // Another table at the recorded path is refused; a missing one says how to make it.
    StaticTable::spelled(16, 2).unwrap().save(&table_path).unwrap();
    let e = estimator::artifact::load(&path).err().unwrap().to_string();
    assert!(e.contains("not the one it was trained with"), "{e}");
    std::fs::remove_file(&table_path).unwrap();
    let e = estimator::artifact::load(&path).err().unwrap().to_string();
    assert!(e.contains("distill-static"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_train_writes_an_artifact_and_eval_reports_calibration() {
    let dir = scratch("cli");
    let out = dir.join("est.json.gz");
    let o = Command::new(env!("CARGO_BIN_EXE_estimator"))
        .current_dir(root())
        .args(["train", "--records", "data/routellm.jsonl.gz", "--catalog", "deploy/catalogs/routellm.yaml"])
        .args(["--train-frac", "0.7", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let loaded = estimator::artifact::load(&out).unwrap();
    assert_eq!(loaded.split.records, 6126);
    assert_eq!(loaded.records.len(), (6126.0f64 * 0.7).round() as usize);
    assert!(loaded.estimator.report.sigma_scale.iter().all(|s| *s > 0.0));

    // eval --json on GSM8K only: output tokens are predicted far better than the mean.
    let o = Command::new(env!("CARGO_BIN_EXE_estimator"))
        .current_dir(root())
        .args(["eval", "--records", "data/routellm.jsonl.gz", "--catalog", "deploy/catalogs/routellm.yaml"])
        .args(["--only-task", "gsm8k", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for m in v["models"].as_array().unwrap() {
        let c = m["sigma_coverage"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        assert!(m["output_tokens_mae"].as_f64().unwrap() > 0.0);
    }
    assert!(v["output_tokens_mae"].as_f64().unwrap() <= v["output_tokens_mae_mean_baseline"].as_f64().unwrap());

    // Bad input is an error naming the flag, not a panic.
    let o = Command::new(env!("CARGO_BIN_EXE_estimator"))
        .current_dir(root())
        .args(["train", "--records", "data/routellm.jsonl.gz", "--train-frac", "1.5", "--out", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--train-frac"));
    std::fs::remove_dir_all(&dir).ok();
}
