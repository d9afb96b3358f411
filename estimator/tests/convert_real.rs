//! Converters on the real files in ../shared/data, and the vendored subsets against them.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use estimator::convert::{dcrouter, routellm};
use estimator::records::{common_models, read_records};
use estimator::Catalog;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared data folder: `LLMROUTE_SHARED_DATA`, else ../shared/data beside the checkout.
fn shared() -> Option<PathBuf> {
    let p =
        std::env::var_os("LLMROUTE_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"));
    if p.is_dir() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!("CI run without the shared data at {}", p.display());
    } else {
        eprintln!("skipping: no shared data at {}", p.display());
        None
    }
}

/// Equal up to float formatting in the JSON round trip.
fn same(a: &estimator::Record, b: &estimator::Record) -> bool {
    a.id == b.id
        && a.task == b.task
        && a.prompt == b.prompt
        && a.outcomes.len() == b.outcomes.len()
        && a.outcomes.iter().all(|(m, x)| {
            b.outcomes.get(m).is_some_and(|y| {
                x.score == y.score
                    && x.input_tokens == y.input_tokens
                    && x.output_tokens == y.output_tokens
                    && match (x.cost_usd, y.cost_usd) {
                        (Some(p), Some(q)) => (p - q).abs() <= 1e-12 * p.abs().max(q.abs()),
                        (p, q) => p == q,
                    }
            })
        })
}

#[test]
fn dcrouter_converts_and_matches_the_vendored_file() {
    let Some(d) = shared() else { return };
    let (records, report, catalog) = dcrouter::convert(&d.join("llmrouter-dcrouter"), 256).unwrap();
    assert_eq!(report.rows_read, 6108);
    assert_eq!(records.len(), 5989); // 119 duplicated test questions dropped
    assert_eq!(catalog.models.len(), 9);
    let (models, partial) = common_models(&records);
    assert_eq!((models.len(), partial), (9, 0));
    let r = &records[0];
    let o = &r.outcomes["gemma-2-9b-it"];
    let tokens = estimator::estimate_tokens(&r.prompt) as f64;
    assert!((o.cost_usd.unwrap() - 0.1e-6 * (tokens + 256.0)).abs() < 1e-15);
    let vendored = read_records(&repo().join("data/dcrouter.jsonl.gz")).unwrap();
    assert_eq!(vendored.len(), records.len());
    for (v, r) in vendored.iter().zip(&records) {
        assert!(same(v, r), "data/dcrouter.jsonl.gz is stale at {}: re-run the converter", r.id);
    }
    // Accuracies as the data's README states them (llama-3.1-nemotron-51b is the best single).
    let acc = |m: &str| records.iter().map(|r| r.outcomes[m].score).sum::<f64>() / records.len() as f64;
    assert!(acc("llama-3.1-nemotron-51b-instruct") > acc("gemma-2-9b-it"));
}

#[test]
fn routellm_converts_all_parts() {
    let Some(d) = shared() else { return };
    let catalog = Catalog::load(&repo().join("deploy/catalogs/routellm.yaml")).unwrap();
    let parts = routellm::Parts { mmlu: true, gsm8k: true, mt_bench: true };
    let (records, report) = routellm::convert(&d.join("routellm"), &catalog, parts).unwrap();
    assert_eq!(report.rows_read, 14042 + 1319 + 80);
    assert_eq!(report.duplicates_dropped, 105);
    assert!(report.contaminated_dropped >= 12);
    assert_eq!(records.len(), report.rows_read - report.duplicates_dropped - report.contaminated_dropped);
    let gsm: Vec<_> = records.iter().filter(|r| r.task.as_deref() == Some("gsm8k")).collect();
    assert_eq!(gsm.len(), 1319 - 12);
    let acc = |m: &str| gsm.iter().map(|r| r.outcomes[m].score).sum::<f64>() / gsm.len() as f64;
    assert!((acc("gpt-4-1106-preview") - 0.857).abs() < 0.01);
    assert!((acc("mixtral-8x7b-instruct-v0.1") - 0.638).abs() < 0.01);
    // GSM8K output tokens come from the recorded responses, so they vary per query.
    let outs: std::collections::BTreeSet<u32> =
        gsm.iter().filter_map(|r| r.outcomes["gpt-4-1106-preview"].output_tokens).collect();
    assert!(outs.len() > 50);
    assert!(records.iter().any(|r| r.task.as_deref().is_some_and(|t| t.starts_with("mt_bench/"))));
    let vendored = read_records(&repo().join("data/routellm.jsonl.gz")).unwrap();
    assert!(vendored.len() > 5000);
    let by_id: std::collections::HashMap<&str, &estimator::Record> =
        records.iter().map(|r| (r.id.as_str(), r)).collect();
    for v in &vendored {
        assert!(by_id.get(v.id.as_str()).is_some_and(|r| same(v, r)), "data/routellm.jsonl.gz is stale at {}", v.id);
    }
}

#[test]
fn vendored_records_load_without_shared_data() {
    for f in ["data/dcrouter.jsonl.gz", "data/routellm.jsonl.gz"] {
        let recs = read_records(&repo().join(f)).unwrap();
        let (models, partial) = common_models(&recs);
        assert!(models.len() >= 2 && partial == 0, "{f}");
        assert!(recs.iter().all(|r| r.outcomes.values().all(|o| o.cost_usd.is_some())));
    }
    for f in ["deploy/catalogs/dcrouter.yaml", "deploy/catalogs/routellm.yaml"] {
        let c = Catalog::load(&repo().join(f)).unwrap();
        assert!(c.models.iter().all(|m| m.price_source.is_some()), "{f}: every price names its source");
    }
}

#[test]
fn pricing_reversal_converts_and_matches_the_vendored_files() {
    let Some(d) = shared() else { return };
    let dir = d.join("pricing-reversal");
    let (records, report) =
        estimator::convert::pricing_reversal::convert(&dir, &["simpleqa-test".to_string()]).unwrap();
    assert_eq!((report.rows_read, records.len()), (4310, 4310));
    let (models, partial) = common_models(&records);
    assert_eq!((models.len(), partial), (6, 0));
    // Real, heavy-tailed costs: every outcome carries one, and they span orders of magnitude.
    let costs: Vec<f64> = records.iter().flat_map(|r| r.outcomes.values().map(|o| o.cost_usd.unwrap())).collect();
    let (lo, hi) = costs.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &c| (a.min(c), b.max(c)));
    assert!(hi / lo.max(1e-12) > 100.0, "{lo} .. {hi}");
    let vendored = read_records(&repo().join("data/pricing-reversal-simpleqa.jsonl.gz")).unwrap();
    assert_eq!(vendored.len(), records.len());
    assert!(vendored.iter().zip(&records).all(|(v, r)| same(v, r)));
    let parts: Vec<String> = ["gpqa-test", "aime-hybrid", "livemathbench-test"].iter().map(|s| s.to_string()).collect();
    let (reasoning, _) = estimator::convert::pricing_reversal::convert(&dir, &parts).unwrap();
    let vendored = read_records(&repo().join("data/pricing-reversal-reasoning.jsonl.gz")).unwrap();
    assert_eq!((vendored.len(), reasoning.len()), (378, 378));
    assert!(vendored.iter().zip(&reasoning).all(|(v, r)| same(v, r)));
}
