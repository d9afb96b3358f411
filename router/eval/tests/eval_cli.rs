//! End to end: the `llmroute-eval eval` binary on the vendored records — JSON schema, budget
//! adherence with the ledger under adversarial batching, the plot, and clear errors.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llmroute-eval"))
        .current_dir(root())
        .arg("eval")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run llmroute-eval")
}

#[test]
fn json_schema_and_budget_adherence_on_dcrouter() {
    let svg = std::env::temp_dir().join(format!("llmroute-eval-{}.svg", std::process::id()));
    let out = eval(&[
        "--records",
        "data/dcrouter.jsonl.gz",
        "--catalog",
        "deploy/catalogs/dcrouter.yaml",
        "--assigners",
        "fast,per-query-price,per-query-threshold,oracle,single:gemma-2-9b-it,random",
        "--spend",
        "0.1,0.2",
        "--batching",
        "adversarial",
        "--bootstrap",
        "50",
        "--sweep-points",
        "5",
        "--format",
        "json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(v["records"], 5989);
    assert_eq!(v["models"].as_array().unwrap().len(), 9);
    let n_test = v["n_test"].as_u64().unwrap();
    assert!(n_test > 1500);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 6 * 2);
    for r in results {
        for key in [
            "assigner",
            "spend_frac",
            "target_cost",
            "accuracy",
            "accuracy_ci",
            "mean_cost",
            "batches",
            "batches_over_budget",
            "max_overspend",
            "rolling_overspend",
            "solve_ms_p50",
            "solve_ms_p99",
        ] {
            assert!(r.get(key).is_some(), "result lacks {key}: {r}");
        }
        let acc = r["accuracy"].as_f64().unwrap();
        let ci = r["accuracy_ci"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() <= acc && acc <= ci[1].as_f64().unwrap(), "{r}");
        if r["assigner"] == "fast" || r["assigner"] == "oracle" {
            // The ledger holds the realized budget in every batch.
            assert_eq!(r["batches_over_budget"], 0, "{r}");
        }
    }
    // Calibrated on train, the batch assigner's realized spend lands near its target on test, and
    // not above it: under adversarial order the dear tasks come first and bind the balance, so it
    // spends somewhat less (the price is fixed; nothing re-spends what they saved).
    for fast in results.iter().filter(|r| r["assigner"] == "fast") {
        let (t, c) = (fast["target_cost"].as_f64().unwrap(), fast["mean_cost"].as_f64().unwrap());
        assert!(c <= t * 1.01 && c >= 0.8 * t, "target {t} realized {c}");
        // Ahead of the budget only where a batch's cheapest assignment alone exceeded what the
        // balance held (an overdraft, outside the guarantee).
        if fast["batches_overdraft"] == 0 {
            assert!(fast["rolling_overspend"].as_f64().unwrap() <= 0.01, "{fast}");
        }
    }
    // The cost model's calibration table rides along.
    assert!(v["cost_models"][0]["models"].as_array().is_some_and(|m| m.len() == 9));
    for key in ["matched", "aiq"] {
        assert!(v.get(key).is_some());
    }
    assert!(v["aiq"]["fast"].as_f64().unwrap() > 0.5);
    assert!(!v["matched"].as_array().unwrap().is_empty());
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<svg") && svg_text.contains("per-query-price"));
}

#[test]
fn routellm_with_capacity_and_noise_runs() {
    let out = eval(&[
        "--records",
        "data/routellm.jsonl.gz",
        "--assigners",
        "fast,mip,per-query-price",
        "--spend",
        "0.2",
        "--capacity-frac",
        "0.6",
        "--gamma",
        "3",
        "--estimator-noise",
        "0.1",
        "--bootstrap",
        "20",
        "--sweep-points",
        "3",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
    assert_eq!(v["settings"]["capacity_frac"], 0.6);
    // HiGHS is silent: stdout held nothing but the JSON (parsed above), and mip ran.
    assert!(v["results"].as_array().unwrap().iter().any(|r| r["assigner"] == "mip"));
}

#[test]
fn ledger_holds_budget_with_cost_prediction_error_under_adversarial_batching() {
    // RouteLLM costs depend on the recorded answer lengths, which the estimator only predicts:
    // with the dearest queries first (an order no predictor sees coming) the share of batches over
    // their grant stays within max_over_probability (0.05), and the run's mean spend within the
    // target.
    let out = eval(&[
        "--records",
        "data/routellm.jsonl.gz",
        "--assigners",
        "fast",
        "--spend",
        "0.05,0.2,0.5",
        "--batching",
        "adversarial",
        "--bootstrap",
        "10",
        "--sweep-points",
        "2",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["settings"]["prior_cost_margin"].as_f64().unwrap() > 0.0, "costs here are uncertain");
    for r in v["results"].as_array().unwrap() {
        let (over, batches) = (r["batches_over_budget"].as_u64().unwrap(), r["batches"].as_u64().unwrap());
        assert!(over as f64 <= (0.05 * batches as f64).ceil(), "{r}");
        assert!(r["spend_vs_allowance"].as_f64().unwrap() <= 1.0 + 1e-9, "{r}");
    }
}

/// Real recorded costs (pricing-reversal SimpleQA): with random traffic `fast` holds the budget in
/// every batch and at every prefix, where per-query pricing at the same target does not; the
/// plain kNN reference arm runs in the same report.
#[test]
fn real_costs_budget_held_where_per_query_pricing_overspends() {
    let out = eval(&[
        "--records",
        "data/pricing-reversal-simpleqa.jsonl.gz",
        "--assigners",
        "fast,per-query-price,fast@plain-knn",
        "--spend",
        "0.05",
        "--bootstrap",
        "20",
        "--sweep-points",
        "4",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |a: &str| v["results"].as_array().unwrap().iter().find(|r| r["assigner"] == a).unwrap().clone();
    let (fast, pqp) = (row("fast"), row("per-query-price"));
    assert_eq!(fast["batches_over_budget"], 0, "{fast}");
    assert!(fast["rolling_overspend"].as_f64().unwrap() <= 0.01, "{fast}");
    assert!(pqp["rolling_overspend"].as_f64().unwrap() > 0.05, "{pqp}");
    assert!(row("fast@plain-knn")["accuracy"].as_f64().unwrap() > 0.3);
    assert!(v["settings"]["kappa"].as_f64().unwrap() > 1.6);
    // Per-model cost calibration within 10 % on held-out data for every model.
    for m in v["cost_models"][0]["models"].as_array().unwrap() {
        let r = m["realized_over_predicted"].as_f64().unwrap();
        assert!((r - 1.0).abs() < 0.1, "{m}");
    }
}

#[test]
fn bad_flags_are_clear_errors() {
    for (args, needle) in [
        (vec!["--records", "data/dcrouter.jsonl.gz", "--spend", "1.5"], "--spend"),
        (vec!["--records", "data/dcrouter.jsonl.gz", "--assigners", "nope"], "unknown assigner"),
        (vec!["--records", "data/dcrouter.jsonl.gz", "--assigners", "single:gpt-9"], "no such model"),
        (vec!["--records", "does/not/exist.jsonl"], "exist.jsonl"),
        (vec!["--records", "data/dcrouter.jsonl.gz", "--capacity-frac", "0.01"], "cannot hold a batch"),
        (vec!["--records", "data/dcrouter.jsonl.gz", "--cost-noise", "gauss:1"], "lognormal:S"),
        (vec!["--records", "data/dcrouter.jsonl.gz", "--max-over-probability", "0.9"], "--max-over-probability"),
    ] {
        let out = eval(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn eval_with_an_estimator_artifact_and_a_split_mismatch() {
    use estimator::records::{common_models, read_records};
    let root = root();
    let all = read_records(&root.join("data/routellm.jsonl.gz")).unwrap();
    let (models, _) = common_models(&all);
    let catalog = estimator::Catalog::load(&root.join("deploy/catalogs/routellm.yaml")).unwrap();
    let (tr, _) = estimator::split::train_test(all.len(), 0.7, 1);
    let train: Vec<&estimator::Record> = tr.iter().map(|&i| &all[i]).collect();
    let opts = estimator::TrainOptions { head: false, ..Default::default() };
    let est = estimator::Estimator::train(&train, &models, Some(&catalog), None, &opts).unwrap();
    let dir = std::env::temp_dir().join(format!("llmroute-eval-artifact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("est.json.gz");
    let split = estimator::artifact::SplitInfo {
        source: "routellm.jsonl.gz".into(),
        records: all.len(),
        train_frac: 0.7,
        seed: 1,
    };
    estimator::artifact::save(&path, &est, &train, None, Some(&catalog), split).unwrap();
    let args = |seed: &str| {
        eval(&[
            "--records",
            "data/routellm.jsonl.gz",
            "--catalog",
            "deploy/catalogs/routellm.yaml",
            "--assigners",
            "fast",
            "--spend",
            "0.1",
            "--bootstrap",
            "10",
            "--sweep-points",
            "3",
            "--format",
            "json",
            "--seed",
            seed,
            "--estimator-artifact",
            path.to_str().unwrap(),
        ])
    };
    let out = args("1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["settings"]["estimator_artifact"].as_str().unwrap().ends_with("est.json.gz"), "{}", v["settings"]);
    let acc = v["results"][0]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.7, "{acc}");
    // Another seed = another split: the artifact's "test" predictions would be in-sample.
    let out = args("2");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another split") && err.contains("estimator train"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
