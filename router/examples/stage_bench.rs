//! Per-stage cost of a decision-only Route call (`router::stagebench`): decode, input, validate,
//! estimate (cache miss), decide for batches of 1 / 8 / 64, reply, encode — mean, p50 and p99 µs.
//!
//! `cargo run --release -p router --example stage_bench -- [--config deploy/local/router.yaml]
//!  [--records data/dcrouter.jsonl.gz] [--calls 20000] [--batches 8,64] [--window-ms W]`

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "Where a decision-only Route call's time goes, stage by stage (router::stagebench)")]
struct Args {
    /// Router config (its catalog and estimator; the listeners are not opened).
    #[arg(long, default_value = "deploy/local/router.yaml")]
    config: PathBuf,
    /// Routing records whose prompts are the calls.
    #[arg(long, default_value = "data/dcrouter.jsonl.gz")]
    records: PathBuf,
    /// Calls timed per stage.
    #[arg(long, default_value_t = 20000)]
    calls: usize,
    /// Batch sizes `decide` is also timed at (per query).
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    batches: Vec<usize>,
    /// Override `batch.window_ms` for the whole-call stage (default: the config's).
    #[arg(long)]
    window_ms: Option<f64>,
}

async fn run(a: Args) -> Result<(), String> {
    let mut config = router::config::Config::load(&a.config).map_err(|e| e.to_string())?;
    if let Some(w) = a.window_ms {
        if !(w.is_finite() && w >= 0.0) {
            return Err(format!("--window-ms {w}: expected a non-negative number"));
        }
        config.batch.window_ms = w;
    }
    let t0 = std::time::Instant::now();
    let shared_cache = config.estimator.cache_entries;
    let shared = Arc::new(router::state::Shared::new(config, None).map_err(|e| e.to_string())?);
    eprintln!("router state built in {:.1} s", t0.elapsed().as_secs_f64());
    let records = estimator::records::read_records(&a.records).map_err(|e| e.to_string())?;
    let prompts: Vec<String> = records.into_iter().map(|r| r.prompt).collect();
    let stages = router::stagebench::run(shared, &prompts, a.calls, &a.batches).await.map_err(|e| e.to_string())?;
    println!(
        "# Decision-only Route, stage by stage: {} calls cycling through the first {} prompts of {} (what the prediction cache keeps), 1 thread, µs per call",
        a.calls,
        prompts.len().min(shared_cache / 2).max(1),
        a.records.display()
    );
    println!("{:<32} {:>9} {:>9} {:>9}", "stage", "mean", "p50", "p99");
    let mut path_sum = 0.0;
    for s in &stages {
        let (mean, p50, p99) = s.summary();
        println!("{:<32} {mean:>9.2} {p50:>9.2} {p99:>9.2}", s.name);
        if (!s.name.starts_with("decide ×") || s.name == "decide ×1") && !s.name.starts_with("whole call") {
            path_sum += mean;
        }
    }
    println!("{:<32} {path_sum:>9.2}   (every stage of one call, batch of 1, cache miss)", "sum");
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
