//! `estimator`: convert the shared public data into routing records, and evaluate the baseline
//! quality estimator on a held-back split.

use clap::{Parser, Subcommand};
use estimator::convert::{dcrouter, routellm};
use estimator::records::{common_models, read_records, write_records};
use estimator::{Catalog, KnnConfig, KnnEstimator, Record};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "estimator",
    version,
    about = "llmroute estimator: routing-record converters and the quality/cost estimator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert public routing data into routing records (JSONL; `.gz` output is compressed).
    Convert {
        #[command(subcommand)]
        source: Source,
    },
    /// Train on a seeded split and print per-model AUC and Brier on the held-back part.
    Eval {
        /// Routing records (.jsonl or .jsonl.gz).
        #[arg(long)]
        records: PathBuf,
        /// Catalog YAML (prices); optional when every outcome carries cost_usd.
        #[arg(long)]
        catalog: Option<PathBuf>,
        #[arg(long, default_value_t = 0.7)]
        train_frac: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Neighbours per query.
        #[arg(long, default_value_t = 25)]
        k: usize,
        /// Ignore the records' task labels (no per-task priors).
        #[arg(long)]
        no_task_hint: bool,
        /// Skip features in more than this fraction of the training prompts when scoring neighbours
        /// (smaller = faster, coarser).
        #[arg(long, default_value_t = 0.5)]
        max_df: f32,
        /// Score neighbours on the query's N heaviest features only (0 = all).
        #[arg(long, default_value_t = 0)]
        max_query_terms: usize,
        /// Neighbour retrieval: hashed TF-IDF features, or MiniLM sentence embeddings.
        #[arg(long, value_enum, default_value = "hashed")]
        embedder: EmbedderKind,
        /// On-disk embedding cache (MiniLM).
        #[arg(long, default_value = "out/embeddings-minilm.bin")]
        embedding_cache: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Throughput: hashed-feature predictions/s (all features, and the 32 heaviest) and MiniLM
    /// embeddings/s at several batch sizes, on the records' prompts.
    Bench {
        #[arg(long)]
        records: PathBuf,
        /// Prompts to embed per MiniLM batch size.
        #[arg(long, default_value_t = 256)]
        n: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EmbedderKind {
    Hashed,
    Minilm,
}

#[derive(Subcommand)]
enum Source {
    /// shared/data/llmrouter-dcrouter (prices from its model_prices.csv).
    Dcrouter {
        /// The llmrouter-dcrouter folder.
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Also write the catalog (prices) as YAML here.
        #[arg(long)]
        catalog_out: Option<PathBuf>,
        /// Output tokens assumed per answer (the data has none).
        #[arg(long, default_value_t = 256)]
        output_tokens: u32,
        /// Keep only every record with probability FRAC (seeded), for a compact subset.
        #[arg(long)]
        sample: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// shared/data/routellm (prices from --catalog, e.g. deploy/catalogs/routellm.yaml).
    Routellm {
        /// The routellm folder.
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        catalog: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Parts to convert, comma-separated: mmlu, gsm8k, mt_bench.
        #[arg(long, default_value = "mmlu,gsm8k,mt_bench")]
        parts: String,
        /// Keep only every record with probability FRAC (seeded), for a compact subset.
        #[arg(long)]
        sample: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn sample(records: Vec<Record>, frac: Option<f64>, seed: u64) -> Result<Vec<Record>, String> {
    let Some(f) = frac else { return Ok(records) };
    if !(f > 0.0 && f <= 1.0) {
        return Err(format!("--sample {f}: expected a fraction in (0, 1]"));
    }
    let (keep, _) = estimator::split::train_test(records.len(), f, seed);
    let mut keep = keep;
    keep.sort_unstable();
    Ok(keep.into_iter().map(|i| records[i].clone()).collect())
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Convert { source } => convert(source),
        Cmd::Bench { records, n } => bench(records, n),
        Cmd::Eval {
            records,
            catalog,
            train_frac,
            seed,
            k,
            no_task_hint,
            max_df,
            max_query_terms,
            embedder,
            embedding_cache,
            json,
        } => {
            if !(max_df > 0.0 && max_df <= 1.0) {
                return Err(format!("--max-df {max_df}: expected a fraction in (0, 1]"));
            }
            let cfg =
                KnnConfig { k, use_task: !no_task_hint, max_df_frac: max_df, max_query_terms, ..KnnConfig::default() };
            let cache = (embedder == EmbedderKind::Minilm).then_some(embedding_cache);
            eval(records, catalog, train_frac, seed, cfg, cache, json)
        }
    }
}

fn convert(source: Source) -> Result<(), String> {
    let (records, report, out, seed, frac) = match source {
        Source::Dcrouter { input, out, catalog_out, output_tokens, sample, seed } => {
            let (records, report, catalog) = dcrouter::convert(&input, output_tokens).map_err(|e| e.to_string())?;
            if let Some(p) = catalog_out {
                let yaml = serde_yaml::to_string(&catalog).map_err(|e| e.to_string())?;
                std::fs::write(&p, yaml).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            (records, report, out, seed, sample)
        }
        Source::Routellm { input, catalog, out, parts, sample, seed } => {
            let catalog = Catalog::load(&catalog).map_err(|e| e.to_string())?;
            let mut p = routellm::Parts { mmlu: false, gsm8k: false, mt_bench: false };
            for part in parts.split(',').map(str::trim) {
                match part {
                    "mmlu" => p.mmlu = true,
                    "gsm8k" => p.gsm8k = true,
                    "mt_bench" => p.mt_bench = true,
                    other => return Err(format!("--parts: unknown part `{other}` (mmlu, gsm8k, mt_bench)")),
                }
            }
            let (records, report) = routellm::convert(&input, &catalog, p).map_err(|e| e.to_string())?;
            (records, report, out, seed, sample)
        }
    };
    let records = sample(records, frac, seed)?;
    write_records(&out, &records).map_err(|e| e.to_string())?;
    eprintln!(
        "read {} rows; wrote {} records to {} (duplicates dropped {}, contaminated dropped {})",
        report.rows_read,
        records.len(),
        out.display(),
        report.duplicates_dropped,
        report.contaminated_dropped
    );
    Ok(())
}

fn eval(
    path: PathBuf,
    catalog: Option<PathBuf>,
    train_frac: f64,
    seed: u64,
    cfg: KnnConfig,
    minilm_cache: Option<PathBuf>,
    json: bool,
) -> Result<(), String> {
    let (k, use_task) = (cfg.k, cfg.use_task);
    if !(train_frac > 0.0 && train_frac < 1.0) {
        return Err(format!("--train-frac {train_frac}: expected a fraction in (0, 1)"));
    }
    let catalog = catalog.map(|p| Catalog::load(&p)).transpose().map_err(|e| e.to_string())?;
    let records = read_records(&path).map_err(|e| e.to_string())?;
    let (models, partial) = common_models(&records);
    if models.is_empty() {
        return Err("no model has outcomes in every record".into());
    }
    let records: Vec<&Record> = records.iter().filter(|r| models.iter().all(|m| r.outcomes.contains_key(m))).collect();
    if partial > 0 {
        eprintln!("note: {partial} records lack some model; using the {} models every record has", models.len());
    }
    let (train_idx, test_idx) = estimator::split::train_test(records.len(), train_frac, seed);
    let train: Vec<&Record> = train_idx.iter().map(|&i| records[i]).collect();
    let test: Vec<&Record> = test_idx.iter().map(|&i| records[i]).collect();
    let t0 = std::time::Instant::now();
    let mut est = KnnEstimator::train(&train, &models, catalog.as_ref(), cfg.clone()).map_err(|e| e.to_string())?;
    let mut test_emb: Option<Vec<Vec<f32>>> = None;
    let mut chooser = serde_json::Value::Null;
    // (head μ per test record, use the head alone?) when the chooser picked the head or the mean.
    let mut head_mu: Option<(Vec<Vec<f64>>, bool)> = None;
    if let Some(cache_path) = &minilm_cache {
        let (train_emb, te) = embed_split(cache_path, &train, &test)?;
        let (choice, report) = choose_on_validation(&train, &train_emb, &models, catalog.as_ref(), &cfg)?;
        chooser = report;
        est = est.with_embeddings(&train_emb).map_err(|e| e.to_string())?;
        if choice != "knn" {
            let y: Vec<Vec<f64>> = train.iter().map(|r| models.iter().map(|m| r.outcomes[m].score).collect()).collect();
            let head = estimator::head::LogisticHead::train(&train_emb, &y, 1e-3, 200);
            head_mu = Some((te.iter().map(|e| head.predict(e)).collect(), choice == "head"));
        }
        test_emb = Some(te);
    }
    let t_train = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut preds: Vec<_> = match &test_emb {
        Some(te) => {
            test.iter().zip(te).map(|(r, e)| est.predict_embedded(&r.prompt, r.task.as_deref(), e, None)).collect()
        }
        None => test.iter().map(|r| est.predict(&r.prompt, r.task.as_deref())).collect(),
    };
    // The chosen combination: the head alone, or the mean of kNN and head (σ stays kNN's).
    if let Some((h, alone)) = &head_mu {
        for (p, hv) in preds.iter_mut().zip(h) {
            for (j, &x) in hv.iter().enumerate() {
                p.mu[j] = if *alone { x } else { 0.5 * (p.mu[j] + x) };
            }
        }
    }
    let t_pred = t1.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for (j, m) in models.iter().enumerate() {
        let y: Vec<f64> = test.iter().map(|r| r.outcomes[m].score).collect();
        let mu: Vec<f64> = preds.iter().map(|p| p.mu[j]).collect();
        let labels: Vec<bool> = y.iter().map(|s| *s >= 0.5).collect();
        let train_mean = train.iter().map(|r| r.outcomes[m].score).sum::<f64>() / train.len() as f64;
        let base = vec![train_mean; y.len()];
        rows.push(serde_json::json!({
            "model": m,
            "test_accuracy": y.iter().sum::<f64>() / y.len() as f64,
            "auc": estimator::metrics::auc(&labels, &mu),
            "brier": estimator::metrics::brier(&y, &mu),
            "brier_constant": estimator::metrics::brier(&y, &base),
            "mean_sigma": preds.iter().map(|p| p.sigma[j]).sum::<f64>() / preds.len() as f64,
            "ece": estimator::metrics::ece(&y, &mu, 10),
            "coverage": estimator::metrics::coverage(&y, &mu, &preds.iter().map(|p| p.sigma[j]).collect::<Vec<_>>(), 10),
        }));
    }
    let argmax_acc = test
        .iter()
        .zip(&preds)
        .map(|(r, p)| {
            let j = (0..models.len()).max_by(|&a, &b| p.mu[a].total_cmp(&p.mu[b])).unwrap_or(0);
            r.outcomes[&models[j]].score
        })
        .sum::<f64>()
        / test.len() as f64;
    let oracle = test.iter().map(|r| models.iter().map(|m| r.outcomes[m].score).fold(0.0, f64::max)).sum::<f64>()
        / test.len() as f64;
    let out = serde_json::json!({
        "records": records.len(), "n_train": train.len(), "n_test": test.len(), "k": k, "task_hint": use_task,
        "embedder": if minilm_cache.is_some() { "minilm" } else { "hashed" },
        "chooser": chooser,
        "models": rows, "argmax_mu_accuracy": argmax_acc, "oracle_accuracy": oracle,
        "train_s": t_train, "predict_per_s": test.len() as f64 / t_pred.max(1e-9),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("records {} (train {}, test {}), k = {k}, task hint {}", records.len(), train.len(), test.len(), use_task);
    if !chooser.is_null() {
        println!("validation chooser (MiniLM embeddings): {chooser}");
    }
    println!(
        "{:<36} {:>8} {:>7} {:>7} {:>9} {:>7} {:>6} {:>6}",
        "model", "test acc", "AUC", "Brier", "Brier(c)", "mean σ", "ECE", "cover"
    );
    for r in &rows {
        println!(
            "{:<36} {:>8.3} {:>7} {:>7.4} {:>9.4} {:>7.4} {:>6.3} {:>6.2}",
            r["model"].as_str().unwrap_or(""),
            r["test_accuracy"].as_f64().unwrap_or(0.0),
            r["auc"].as_f64().map_or("n/a".to_string(), |a| format!("{a:.3}")),
            r["brier"].as_f64().unwrap_or(0.0),
            r["brier_constant"].as_f64().unwrap_or(0.0),
            r["mean_sigma"].as_f64().unwrap_or(0.0),
            r["ece"].as_f64().unwrap_or(0.0),
            r["coverage"].as_f64().unwrap_or(0.0),
        );
    }
    println!(
        "argmax-μ accuracy {argmax_acc:.3} (oracle {oracle:.3}); train {t_train:.2} s, predict {:.0} prompts/s",
        test.len() as f64 / t_pred.max(1e-9)
    );
    Ok(())
}

/// Picks kNN, the logistic head or their mean by mean Brier on a validation fifth of the training
/// split (fitted on the other four fifths). Returns the choice and the validation figures.
fn choose_on_validation(
    train: &[&Record],
    emb: &[Vec<f32>],
    models: &[String],
    catalog: Option<&Catalog>,
    cfg: &KnnConfig,
) -> Result<(String, serde_json::Value), String> {
    let (fit, val): (Vec<usize>, Vec<usize>) = (0..train.len()).partition(|i| i % 5 != 0);
    let fit_recs: Vec<&Record> = fit.iter().map(|&i| train[i]).collect();
    let fit_emb: Vec<Vec<f32>> = fit.iter().map(|&i| emb[i].clone()).collect();
    let knn = KnnEstimator::train(&fit_recs, models, catalog, cfg.clone())
        .and_then(|k| k.with_embeddings(&fit_emb))
        .map_err(|e| e.to_string())?;
    let y: Vec<Vec<f64>> = fit_recs.iter().map(|r| models.iter().map(|m| r.outcomes[m].score).collect()).collect();
    let head = estimator::head::LogisticHead::train(&fit_emb, &y, 1e-3, 200);
    let mut brier = [0.0f64; 3];
    let mut count = 0.0;
    for &i in &val {
        let r = train[i];
        let k = knn.predict_embedded(&r.prompt, r.task.as_deref(), &emb[i], None).mu;
        let h = head.predict(&emb[i]);
        for (j, m) in models.iter().enumerate() {
            let yv = r.outcomes[m].score;
            let e = 0.5 * (k[j] + h[j]);
            brier[0] += (k[j] - yv).powi(2);
            brier[1] += (h[j] - yv).powi(2);
            brier[2] += (e - yv).powi(2);
            count += 1.0;
        }
    }
    let names = ["knn", "head", "mean"];
    let best = (0..3).min_by(|&a, &b| brier[a].total_cmp(&brier[b])).unwrap_or(0);
    let report = serde_json::json!({
        "validation_brier": {"knn": brier[0] / count, "head": brier[1] / count, "mean": brier[2] / count},
        "chosen": names[best],
    });
    Ok((names[best].to_string(), report))
}

/// Train and test embeddings.
type Split = (Vec<Vec<f32>>, Vec<Vec<f32>>);

#[cfg(feature = "minilm")]
fn embed_split(cache: &Path, train: &[&Record], test: &[&Record]) -> Result<Split, String> {
    use estimator::embed::{EmbeddingCache, MiniLm};
    let dir = MiniLm::locate().ok_or(estimator::embed::INSTALL_HINT)?;
    let model = MiniLm::load(&dir).map_err(|e| e.to_string())?;
    let mut c = EmbeddingCache::open(cache).map_err(|e| e.to_string())?;
    eprintln!("MiniLM embeddings ({} cached in {}) ...", c.len(), cache.display());
    let texts: Vec<&str> = train.iter().chain(test).map(|r| r.prompt.as_str()).collect();
    let mut all = c.embed_all(&model, &texts, 32, true).map_err(|e| e.to_string())?;
    let te = all.split_off(train.len());
    Ok((all, te))
}

#[cfg(not(feature = "minilm"))]
fn embed_split(_: &Path, _: &[&Record], _: &[&Record]) -> Result<Split, String> {
    Err("this build has no MiniLM (cargo feature `minilm`)".into())
}

fn bench(path: PathBuf, n: usize) -> Result<(), String> {
    let records = read_records(&path).map_err(|e| e.to_string())?;
    let (models, _) = common_models(&records);
    let refs: Vec<&Record> = records.iter().filter(|r| models.iter().all(|m| r.outcomes.contains_key(m))).collect();
    if refs.is_empty() {
        return Err("no record has outcomes for every model".into());
    }
    let flat = Catalog::flat(&models);
    println!(
        "{} prompts, mean {:.0} chars",
        refs.len(),
        refs.iter().map(|r| r.prompt.len()).sum::<usize>() as f64 / refs.len() as f64
    );
    for terms in [0usize, 32] {
        let cfg = KnnConfig { max_query_terms: terms, ..KnnConfig::default() };
        let est = KnnEstimator::train(&refs, &models, Some(&flat), cfg).map_err(|e| e.to_string())?;
        let t0 = std::time::Instant::now();
        let mut done = 0usize;
        while t0.elapsed().as_secs_f64() < 3.0 {
            for r in refs.iter().take(2000) {
                std::hint::black_box(est.predict(&r.prompt, r.task.as_deref()));
                done += 1;
            }
        }
        let label = if terms == 0 { "all features".to_string() } else { format!("{terms} heaviest features") };
        println!("hashed kNN predict ({label}): {:.0} prompts/s (1 thread)", done as f64 / t0.elapsed().as_secs_f64());
    }
    bench_minilm(&refs, n)
}

#[cfg(feature = "minilm")]
fn bench_minilm(refs: &[&Record], n: usize) -> Result<(), String> {
    use estimator::embed::MiniLm;
    let Some(dir) = MiniLm::locate() else {
        println!("MiniLM: skipped ({})", estimator::embed::INSTALL_HINT);
        return Ok(());
    };
    let model = MiniLm::load(&dir).map_err(|e| e.to_string())?;
    let texts: Vec<&str> = refs.iter().take(n.max(1)).map(|r| r.prompt.as_str()).collect();
    for batch in [1usize, 8, 32] {
        let t0 = std::time::Instant::now();
        for chunk in texts.chunks(batch) {
            std::hint::black_box(model.embed(chunk).map_err(|e| e.to_string())?);
        }
        println!(
            "MiniLM embed, batch {batch:>2}: {:.0} prompts/s ({} prompts, no cache)",
            texts.len() as f64 / t0.elapsed().as_secs_f64(),
            texts.len()
        );
    }
    Ok(())
}

#[cfg(not(feature = "minilm"))]
fn bench_minilm(_: &[&Record], _: usize) -> Result<(), String> {
    println!("MiniLM: not in this build (cargo feature `minilm`)");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
