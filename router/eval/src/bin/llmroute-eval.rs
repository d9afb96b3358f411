//! `llmroute-eval`: the eval harness and the solver benchmark. Both run offline on recorded
//! outcomes or random instances; neither needs the server.

use clap::{Parser, Subcommand};
use llmroute_eval::batching::Batching;
use llmroute_eval::{report, run_eval, EvalConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "llmroute-eval",
    version,
    about = "llmroute: offline evaluation of batch routing and the solver benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Evaluate assigners on recorded outcomes at equal realized spend, with bootstrap intervals.
    ///
    /// The estimator is trained on the train split and predicts the test split; each assigner's
    /// knob (budget per query, λ, or threshold) is calibrated on the train split so its realized
    /// mean cost hits c_min + F·(c_max − c_min) for each --spend F, then run on test batches.
    Eval(EvalArgs),
    /// Benchmark `fast` against HiGHS (time percentiles, objective gap) on random instances.
    BenchSolver {
        /// Batch sizes.
        #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
        n: Vec<usize>,
        /// Model counts.
        #[arg(long, value_delimiter = ',', default_value = "2,9,11")]
        m: Vec<usize>,
        /// Timed `fast` solves per cell.
        #[arg(long, default_value_t = 200)]
        reps: usize,
        /// HiGHS time limit per solve, seconds.
        #[arg(long, default_value_t = 60.0)]
        highs_time_limit: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the rows as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EstimatorChoice {
    Default,
    PlainKnn,
}

/// `--headroom auto | H`.
#[derive(Debug, Clone, Copy)]
struct Headroom(Option<f64>);

fn parse_headroom(s: &str) -> Result<Headroom, String> {
    if s == "auto" {
        return Ok(Headroom(None));
    }
    let x: f64 = s.parse().map_err(|_| format!("`{s}`: expected auto or a number in [0, 1]"))?;
    if !(x.is_finite() && (0.0..=1.0).contains(&x)) {
        return Err(format!("`{s}`: expected auto or a number in [0, 1]"));
    }
    Ok(Headroom(Some(x)))
}

fn parse_cost_noise(s: &str) -> Result<f64, String> {
    let v = s.strip_prefix("lognormal:").ok_or_else(|| format!("`{s}`: expected lognormal:S (e.g. lognormal:0.5)"))?;
    let x: f64 = v.parse().map_err(|_| format!("`{s}`: S = `{v}` is not a number"))?;
    if !(x.is_finite() && x >= 0.0) {
        return Err(format!("`{s}`: S must be ≥ 0"));
    }
    Ok(x)
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Routing records (.jsonl or .jsonl.gz).
    #[arg(long)]
    records: PathBuf,
    /// Catalog YAML; optional when every outcome carries cost_usd.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Assigners: fast, mip, oracle, per-query-price, per-query-threshold, single:MODEL, random;
    /// NAME@plain-knn runs NAME on the plain TF-IDF kNN reference estimator in the same run.
    #[arg(long, value_delimiter = ',', default_value = "fast,mip,per-query-price,per-query-threshold,oracle")]
    assigners: Vec<String>,
    /// Target spends F in [0, 1]: mean cost c_min + F·(c_max − c_min).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2,0.5")]
    spend: Vec<f64>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, value_enum, default_value = "random")]
    batching: Batching,
    /// Limit every model to ⌈F·batch⌉ queries per batch.
    #[arg(long)]
    capacity_frac: Option<f64>,
    /// Bertsimas–Sim Γ for the batch assigners (0 = nominal).
    #[arg(long, default_value_t = 0.0)]
    gamma: f64,
    /// Add N(0, S) to the predicted μ of test queries.
    #[arg(long, default_value_t = 0.0)]
    estimator_noise: f64,
    #[arg(long, default_value_t = 0.7)]
    train_frac: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bootstrap resamples for the accuracy intervals.
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    /// Turn the budget ledger off (each batch gets budget × n, no carry-over, no margin).
    #[arg(long)]
    no_ledger: bool,
    /// Batch assigners without the calibrated price: maximize Σ μ·x and spend each batch's
    /// budget (budget per query × n, overspend carried) instead of Σ (μ − λ·ĉ)·x under the
    /// ledger's rolling budget.
    #[arg(long)]
    no_dual_price: bool,
    /// Carry unspent budget into later batches (a rolling budget), not only overspend.
    #[arg(long)]
    carry_unspent: bool,
    /// Multiply every recorded cost by an independent mean-one log-normal factor
    /// exp(S·Z − S²/2), seeded: `lognormal:S` (a stress test of cost uncertainty).
    #[arg(long, value_parser = parse_cost_noise)]
    cost_noise: Option<f64>,
    /// The estimator behind every assigner: `default` (kNN + task priors, or the artifact) or
    /// `plain-knn` (TF-IDF word 1–2-grams, cosine, k neighbours, their mean: the reference).
    #[arg(long, value_enum, default_value = "default")]
    estimator: EstimatorChoice,
    /// Allowed probability that a batch's realized cost exceeds its grant (κ of the chance
    /// constraint; the ledger margin's quantile level).
    #[arg(long, default_value_t = 0.05)]
    max_over_probability: f64,
    /// Plan on point costs (κ = 0) instead of the chance constraint.
    #[arg(long)]
    no_chance: bool,
    /// Step size of the priced batch assigners' price pacing: after each batch
    /// λ ← λ·exp(η·(realized − allowance)/allowance), within [λ₀/4, 4λ₀]; 0 keeps λ fixed.
    #[arg(long, default_value_t = 0.0)]
    pacing: f64,
    /// The ledger's adaptive-conformal step γ: after each batch the margin's miscoverage level α
    /// moves by γ·(ε − 1[batch over its grant]); 0 keeps the level at ε.
    #[arg(long, default_value_t = llmroute_core::ledger::DEFAULT_ADAPT_RATE)]
    adapt_rate: f64,
    /// Priced fast / mip set their price λ to spend target / (1 + H) on train traffic and keep
    /// the rest of the allowance in the balance as headroom for cost surprises (so the chance row
    /// binds, and rations by spread, less often). `auto`: the (1 − ε)-quantile overrun of
    /// calibration batches over their predicted cost, within [0, 0.2] — 0 where costs are known
    /// exactly, 0.2 on heavy-tailed real costs (docs/results/real-cost.md).
    #[arg(long, default_value = "auto", value_parser = parse_headroom)]
    headroom: Headroom,
    /// How priced fast / mip ration a batch whose priced answer does not fit its grant: `price`
    /// raises the batch's price, the same for every query, to the least that fits (answers stay
    /// on the per-query-price family); `solver` solves the budgeted problem (its chance row
    /// rations by cost spread as well as by expected cost). Over 6 splits per dataset neither
    /// is better on every dataset (docs/results/real-cost-seeds.txt).
    #[arg(long, value_enum, default_value = "solver")]
    ration: Ration,
    /// Knob values per assigner in the test sweep (matched costs, AIQ, plot).
    #[arg(long, default_value_t = 20)]
    sweep_points: usize,
    /// kNN neighbours.
    #[arg(long, default_value_t = 25)]
    k: usize,
    /// Ignore the records' task labels.
    #[arg(long)]
    no_task_hint: bool,
    /// Use a trained estimator (`estimator train --records R --train-frac F --seed S --out FILE`,
    /// same records, fraction and seed as this run) instead of the plain kNN.
    #[arg(long)]
    estimator_artifact: Option<PathBuf>,
    /// MiniLM embedding cache (for a MiniLM artifact).
    #[arg(long, default_value = "out/embeddings-minilm.bin")]
    embedding_cache: PathBuf,
    /// HiGHS time limit per batch for `mip`, seconds.
    #[arg(long, default_value_t = 10.0)]
    mip_time_limit: f64,
    /// HiGHS relative gap for `mip`.
    #[arg(long, default_value_t = 1e-4)]
    mip_gap: f64,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the cost–accuracy plot (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also write the JSON report here (whatever --format says).
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Ration {
    Price,
    Solver,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
    Table,
}

fn eval(a: EvalArgs) -> Result<(), String> {
    let cfg = EvalConfig {
        records: a.records,
        catalog: a.catalog,
        assigners: a.assigners,
        spend: a.spend,
        batch_size: a.batch_size,
        batching: a.batching,
        capacity_frac: a.capacity_frac,
        gamma: a.gamma,
        estimator_noise: a.estimator_noise,
        train_frac: a.train_frac,
        seed: a.seed,
        bootstrap: a.bootstrap,
        ledger: !a.no_ledger,
        sweep_points: a.sweep_points,
        knn: estimator::KnnConfig { k: a.k, use_task: !a.no_task_hint, ..Default::default() },
        estimator_artifact: a.estimator_artifact,
        embedding_cache: a.embedding_cache,
        mip_time_limit_s: a.mip_time_limit,
        mip_rel_gap: a.mip_gap,
        carry_unspent: a.carry_unspent,
        dual_price: !a.no_dual_price,
        cost_noise: a.cost_noise,
        plain_estimator: a.estimator == EstimatorChoice::PlainKnn,
        max_over_probability: a.max_over_probability,
        no_chance: a.no_chance,
        pacing: a.pacing,
        adapt_rate: a.adapt_rate,
        headroom: a.headroom.0,
        ration_by_price: a.ration == Ration::Price,
    };
    let r = run_eval(&cfg).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
    if let Some(p) = &a.json_out {
        std::fs::write(p, &json).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &a.plot {
        report::plot(&r, p).map_err(|e| e.to_string())?;
        eprintln!("plot written to {}", p.display());
    }
    match a.format {
        Format::Json => println!("{json}"),
        Format::Table => print!("{}", report::table(&r)),
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Eval(a) => eval(a),
        Cmd::BenchSolver { n, m, reps, highs_time_limit, seed, json } => {
            if n.iter().chain(&m).any(|&x| x == 0) {
                return Err("--n and --m must be positive".into());
            }
            let rows =
                llmroute_eval::bench::bench_solver(&n, &m, reps, highs_time_limit, seed).map_err(|e| e.to_string())?;
            println!(
                "{:>5} {:>3} {:<8} {:>12} {:>12} {:>11} {:<11} {:>10} {:>12}",
                "n", "m", "mode", "fast p50 ms", "fast p99 ms", "HiGHS ms", "HiGHS", "gap %", "gap bound %"
            );
            for r in &rows {
                println!(
                    "{:>5} {:>3} {:<8} {:>12.4} {:>12.4} {:>11.1} {:<11} {:>10.4} {:>12}",
                    r.n,
                    r.m,
                    r.mode,
                    r.fast_p50_ms,
                    r.fast_p99_ms,
                    r.highs_ms,
                    r.highs_status,
                    r.gap_pct,
                    r.gap_to_bound_pct.map_or("-".into(), |g| format!("{g:.4}"))
                );
            }
            if let Some(p) = json {
                let s = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
                std::fs::write(&p, s).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
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
