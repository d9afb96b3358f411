//! `llm-router`: the llmroute router's command line.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod client;
mod serving;

#[derive(Parser)]
#[command(name = "llm-router", version, about = "llmroute: batch LLM routing under a hard cost budget")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve gRPC (llmroute.v1.Router, Admin, reflection, health) and the OpenAI-compatible HTTP
    /// facade + /metrics. SIGHUP (or Admin/Reload, POST /admin/reload) reloads the config.
    Serve(serving::ServeArgs),
    /// Send one query to a running router and print the JSON reply.
    Route(serving::RouteArgs),
    /// Score an answered query by its reply's request_id (once, in [0, 1]); prints the model that
    /// answered and what was predicted for it.
    Feedback(serving::FeedbackArgs),
    /// Print the SHA-256 of an API key (read from stdin, one line), for a tenant's
    /// `api_key_sha256` in the config: the file then holds no key.
    HashKey,
    /// gRPC load at a fixed rate (or concurrency) for a duration; prints achieved QPS and latency
    /// percentiles. Works against the router and the bare echo server (examples/echo_server.rs).
    Loadgen(serving::LoadgenArgs),
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Serve(a) => serving::serve(a),
        Cmd::Route(a) => serving::route(a),
        Cmd::Feedback(a) => serving::feedback(a),
        Cmd::HashKey => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| format!("stdin: {e}"))?;
            let key = line.trim_end_matches(['\r', '\n']);
            if key.len() < 8 {
                return Err("the key on stdin is shorter than 8 characters".into());
            }
            println!("{}", router::config::key_hash(key));
            Ok(())
        }
        Cmd::Loadgen(a) => serving::loadgen(a),
    }
}

/// mimalloc instead of glibc's malloc: under load glibc's allocator took ~30 % of the router's CPU
/// samples (`_int_malloc`, `_int_free`, `malloc_consolidate`…, docs/results/serve-perf.txt).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
