//! `allocator`: plans model instances per GPU type, writes Kubernetes manifests, simulates plans.

use allocator::baseline::{self, Baseline};
use allocator::inputs::{Inventory, Models, Traffic};
use allocator::simulate::{self, SimOptions, Workload};
use allocator::solve::{self, Instance, Objective, SolveOptions, Spend};
use allocator::{report, AllocError, Result};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "allocator", version, about = "llmroute allocator: instances of each model per GPU type")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct InputArgs {
    /// GPU inventory YAML (types, counts, memory, $/hour, optional $/hour budget).
    #[arg(long)]
    inventory: PathBuf,
    /// Model profiles YAML (memory, tensor parallel, tokens/s per GPU type, max concurrency).
    #[arg(long)]
    models: PathBuf,
    /// Traffic classes YAML (rate, tokens, tasks or quality per model).
    #[arg(long)]
    traffic: PathBuf,
    /// Routing records: the estimator computes each class's quality per model from them.
    #[arg(long)]
    records: Option<PathBuf>,
    /// Records sampled per class for the quality estimate.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Solve the allocation MIP, print the plan as a table and write it (YAML).
    Plan {
        #[command(flatten)]
        inputs: InputArgs,
        #[arg(long)]
        out: PathBuf,
        /// Also print naive plans with the same GPUs: uniform, proportional (comma-separated).
        #[arg(long, value_delimiter = ',')]
        baseline: Vec<String>,
        /// Minimize $/hour at this mean quality instead of maximizing quality.
        #[arg(long)]
        quality_floor: Option<f64>,
        /// HiGHS time limit, seconds.
        #[arg(long, default_value_t = 60.0)]
        time_limit: f64,
        /// The router's USD budget per query: the plan's routing must fit it (needs --catalog).
        #[arg(long)]
        budget_per_query: Option<f64>,
        /// Catalog with token prices (for --budget-per-query).
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Kubernetes Deployments + Services for a plan's model servers.
    Manifests {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Replay recorded queries at a rate through the router's assigner with the plan's capacities,
    /// beside the uniform and proportional plans with the same GPUs.
    Simulate {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        records: PathBuf,
        /// Catalog with prices (for spend).
        #[arg(long)]
        catalog: PathBuf,
        /// Offered queries/s (default: the traffic file's total rate).
        #[arg(long)]
        qps: Option<f64>,
        #[arg(long, default_value_t = 120.0)]
        duration: f64,
        /// USD per query for each batch (default: the plan's budget, else none: capacity-only routing).
        #[arg(long)]
        budget_per_query: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Solve time on random instances (models × GPU types × classes).
    Bench {
        #[arg(long, default_value_t = 20)]
        models: usize,
        #[arg(long, default_value_t = 4)]
        gpus: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
}

struct Loaded {
    inv: Inventory,
    models: Models,
    traffic: Traffic,
}

fn load(a: &InputArgs) -> Result<Loaded> {
    let inv = Inventory::load(&a.inventory)?;
    let models = Models::load(&a.models, &inv)?;
    let mut traffic = Traffic::load(&a.traffic, &models)?;
    if traffic.classes.iter().any(|c| c.quality.is_none()) {
        let path = a.records.as_ref().ok_or_else(|| {
            AllocError::Invalid("some traffic classes have no `quality`: pass --records to estimate it".into())
        })?;
        eprintln!("estimating quality per class from {} ...", path.display());
        let records = estimator::records::read_records(path)?;
        allocator::quality::fill_from_records(&mut traffic, &models, &records, a.sample, a.seed)?;
    }
    Ok(Loaded { inv, models, traffic })
}

/// One of the input files a plan was made from.
fn plan_input(plan: &llmroute_core::plan::Plan, key: &str) -> Result<PathBuf> {
    plan.inputs.get(key).cloned().ok_or_else(|| AllocError::Invalid(format!("the plan names no `{key}` input file")))
}

fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Plan { inputs, out, baseline: baselines, quality_floor, time_limit, budget_per_query, catalog } => {
            let l = load(&inputs)?;
            let spend = match (&catalog, budget_per_query) {
                (Some(c), Some(b)) if b.is_finite() && b > 0.0 => {
                    Some(Spend::from_catalog(&estimator::Catalog::load(c)?, &l.models, &l.traffic, b)?)
                }
                (Some(_), Some(b)) => {
                    return Err(AllocError::Invalid(format!("--budget-per-query {b} is not positive")))
                }
                (None, None) => None,
                _ => return Err(AllocError::Invalid("--budget-per-query and --catalog go together".into())),
            };
            let inst = Instance { inv: &l.inv, models: &l.models, traffic: &l.traffic, spend: spend.as_ref() };
            let objective = match quality_floor {
                Some(q) if (0.0..=1.0).contains(&q) => Objective::Cost { quality_floor: q },
                Some(q) => return Err(AllocError::Invalid(format!("--quality-floor {q} is not in [0, 1]"))),
                None => Objective::Quality,
            };
            let kinds: Vec<Baseline> = baselines
                .iter()
                .map(|b| {
                    Baseline::parse(b).ok_or_else(|| {
                        AllocError::Invalid(format!("--baseline `{b}`: expected uniform or proportional"))
                    })
                })
                .collect::<Result<_>>()?;
            eprintln!(
                "solving: {} models x {} GPU types x {} classes (HiGHS, time limit {time_limit} s) ...",
                l.models.models.len(),
                l.inv.gpus.len(),
                l.traffic.classes.len()
            );
            let s = with_progress(|| {
                solve::solve(&inst, &SolveOptions { objective, time_limit_s: time_limit, rel_gap: 1e-6 })
            })?;
            eprintln!("solved in {:.1} ms (gap {:.2e})", s.solve_time.as_secs_f64() * 1e3, s.gap);
            print!("{}", report::table(&inst, &s, "optimized plan"));
            let used = report::gpus_used(&inst, &s.instances);
            for k in kinds {
                let inst_b = baseline::plan(&inst, k, &used);
                let sb = solve::route_fixed(&inst, &inst_b)?;
                print!("\n{}", report::table(&inst, &sb, &format!("{} plan, same GPUs", k.name())));
            }
            let mut files = BTreeMap::new();
            files.insert("inventory".into(), abs(&inputs.inventory));
            files.insert("models".into(), abs(&inputs.models));
            files.insert("traffic".into(), abs(&inputs.traffic));
            if let Some(r) = &inputs.records {
                files.insert("records".into(), abs(r));
            }
            if let Some(c) = &catalog {
                files.insert("catalog".into(), abs(c));
            }
            let mut plan = report::to_plan(&inst, &s, "optimized", files);
            plan.budget_per_query = budget_per_query;
            plan.save(&out)?;
            eprintln!("plan written to {}", out.display());
            Ok(())
        }
        Cmd::Manifests { plan, out } => {
            let p = llmroute_core::plan::Plan::load(&plan)?;
            let get = |k: &str| plan_input(&p, k);
            let inv = Inventory::load(&get("inventory")?)?;
            let models = Models::load(&get("models")?, &inv)?;
            let files = allocator::manifests::write(&p, &inv, &models, &out)?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Cmd::Simulate { plan, records, catalog, qps, duration, budget_per_query, seed, json } => {
            let p = llmroute_core::plan::Plan::load(&plan)?;
            let get = |k: &str| plan_input(&p, k);
            let inputs = InputArgs {
                inventory: get("inventory")?,
                models: get("models")?,
                traffic: get("traffic")?,
                records: Some(p.inputs.get("records").cloned().unwrap_or_else(|| records.clone())),
                sample: 200,
                seed,
            };
            let l = load(&inputs)?;
            let inst = Instance { inv: &l.inv, models: &l.models, traffic: &l.traffic, spend: None };
            let mut planned = vec![vec![0u32; l.inv.gpus.len()]; l.models.models.len()];
            for (name, per) in &p.instances {
                let m = l
                    .models
                    .models
                    .iter()
                    .position(|x| &x.name == name)
                    .ok_or_else(|| AllocError::Invalid(format!("plan model `{name}` is not in the models file")))?;
                for (gk, n) in per {
                    let g =
                        l.inv.gpus.iter().position(|x| &x.kind == gk).ok_or_else(|| {
                            AllocError::Invalid(format!("plan GPU type `{gk}` is not in the inventory"))
                        })?;
                    planned[m][g] = *n;
                }
            }
            let cat = estimator::Catalog::load(&catalog)?;
            eprintln!("training the estimator and predicting the replayed records ...");
            let w = Workload::new(&inst, estimator::records::read_records(&records)?, &cat, seed)?;
            let opts = SimOptions {
                qps: qps.unwrap_or_else(|| l.traffic.total_rate()),
                duration_s: duration,
                step_s: 0.05,
                max_wait_s: 2.0,
                budget_per_query: budget_per_query.or(p.budget_per_query).unwrap_or(f64::INFINITY),
                seed,
            };
            if !(opts.qps.is_finite() && opts.qps > 0.0) {
                return Err(AllocError::Invalid("--qps must be positive".into()));
            }
            let used = report::gpus_used(&inst, &planned);
            let mut reports = vec![simulate::run(&inst, &w, &planned, &p.kind, &opts)];
            for k in [Baseline::Uniform, Baseline::Proportional] {
                let b = baseline::plan(&inst, k, &used);
                reports.push(simulate::run(&inst, &w, &b, k.name(), &opts));
            }
            println!(
                "replay at {:.1} q/s for {:.0} s, same GPUs {:?}",
                opts.qps,
                opts.duration_s,
                l.inv.gpus.iter().zip(&used).map(|(g, u)| format!("{}={u}", g.kind)).collect::<Vec<_>>()
            );
            println!(
                "{:<14} {:>8} {:>8} {:>9} {:>10} {:>14} {:>12} {:>10}",
                "plan", "queries", "served", "accuracy", "served acc", "not preferred", "USD/query", "wait ms"
            );
            for r in &reports {
                println!(
                    "{:<14} {:>8} {:>8} {:>9.4} {:>10.4} {:>14} {:>12.3e} {:>10.1}",
                    r.plan,
                    r.queries,
                    r.served,
                    r.accuracy,
                    r.served_accuracy,
                    r.not_preferred,
                    r.spend_per_query,
                    r.mean_wait_ms
                );
            }
            if let Some(j) = json {
                let s = serde_json::to_string_pretty(&reports).map_err(|e| AllocError::Invalid(e.to_string()))?;
                std::fs::write(&j, s).map_err(|e| AllocError::Io { path: j.clone(), source: e })?;
            }
            Ok(())
        }
        Cmd::Bench { models, gpus, classes, reps } => {
            let mut times = Vec::new();
            for seed in 0..reps as u64 {
                let (inv, m, t) = allocator::bench::random_inputs(models, gpus, classes, seed);
                let inst = Instance { inv: &inv, models: &m, traffic: &t, spend: None };
                let t0 = Instant::now();
                let r = solve::solve(&inst, &SolveOptions { time_limit_s: 60.0, ..Default::default() });
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                let status = match &r {
                    Ok(s) => format!("ok gap {:.1e}", s.gap),
                    Err(AllocError::Infeasible(_)) => "infeasible (explained)".into(),
                    Err(e) => format!("error: {e}"),
                };
                println!(
                    "seed {seed}: {} models x {gpus} GPU types x {classes} classes: {ms:.1} ms, {status}",
                    m.models.len()
                );
                times.push(ms);
            }
            times.sort_by(f64::total_cmp);
            println!("solve ms over {reps}: p50 {:.1}  max {:.1}", times[times.len() / 2], times[times.len() - 1]);
            Ok(())
        }
    }
}

/// Runs `f`, printing the elapsed time to stderr every 2 s until it returns (HiGHS itself is silent).
fn with_progress<T>(f: impl FnOnce() -> T) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let t0 = Instant::now();
    let ticker = std::thread::spawn(move || {
        let mut next = 2;
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if t0.elapsed().as_secs() >= next {
                eprintln!("  still solving ... {} s", t0.elapsed().as_secs());
                next += 2;
            }
        }
    });
    let out = f();
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    out
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
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
