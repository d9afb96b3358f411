#!/usr/bin/env python3
"""The closed loop (issue 18): compress, serve, measure, allocate, route — then the same with the
pruned model left out, and both side by side in one report. Run through scripts/closed-loop.sh,
which builds the binaries first; this file does the rest:

 1. questions: seeded arithmetic (scripts/arith_questions.py) plus the vendored keyed MMLU-style
    questions of data/questions-gsm8k-mmlu.jsonl, split train / held-out (seeded);
 2. prune SmolLM2-135M-Instruct with the worker's chat-capable recipe (SparseGPT 2:4, chat
    calibration: docs/results/compress-chat.txt);
 3. start llama.cpp servers (xllamacpp, 1 thread each) for dense SmolLM2, the pruned model and
    Gemma-3-270M (a base model: served with scripts/templates/base-qa.jinja);
 4. `estimator collect` the train questions on each (graded; token counts from the servers);
 5. `estimator train` an artifact per catalog (with / without the pruned model);
 6. `allocator plan` for a CPU "fleet" written here (one slot per server thread, measured
    tokens/s, GGUF size as memory), with the router's per-query budget;
 7. `llm-router serve` with the plan, the artifact and the budget; the held-out questions through
    its OpenAI facade (`model: auto`, dispatch on) by `estimator collect`, which grades them and
    records the model the router chose (`served_by`) and the cost it reported;
 8. the report: routed accuracy, realized spend vs the budget, share per model, latency p50 / p99,
    each model's own accuracy on the train questions, and the plan the allocator chose.
"""
import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith_questions  # noqa: E402
import llama_server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/llmroute-target")), "release")
DENSE, PRUNED, GEMMA = "smollm2-135m", "smollm2-135m-pruned", "gemma3-270m"
# Self-hosted placeholder prices, USD per 1M tokens, in proportion to the parameters doing the work
# (deploy/catalogs/local-llama.yaml); the pruned model's are the dense model's × its density
# (`density`).
PRICES = {DENSE: (0.05, 0.1), GEMMA: (0.1, 0.2)}


def density(pattern: str) -> float:
    """The share of the linear layers' weights a pattern keeps: 2:4 → 0.5, unstructured:0.3 → 0.7."""
    if pattern.startswith("unstructured:"):
        return 1.0 - float(pattern.split(":", 1)[1])
    n, m = (int(x) for x in pattern.split(":"))
    return 1.0 - n / m


def log(msg: str) -> None:
    print(f"closed-loop [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list, out: str | None = None) -> str:
    """Runs a command; its stdout is returned (and written to `out`); stderr goes to the log."""
    log("$ " + " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, text=True)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(p.stdout)
    if p.returncode != 0:
        sys.exit(f"closed-loop: `{cmd[0]} {cmd[1]}` failed (exit {p.returncode}); its output: {p.stdout[-2000:]}")
    return p.stdout


def write_yaml(path: str, obj) -> None:
    # JSON is YAML: the Rust side (serde_yaml) reads it as is.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def read_jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, rows: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def questions(a) -> tuple[list, list]:
    qs = arith_questions.questions(a.arith, a.seed)
    # The vendored MMLU-style questions' tasks are `mmlu/SUBJECT` (27 subjects, 1-5 questions each):
    # one task `mmlu` here, so the estimator's task prior and the allocator's classes are not 27
    # classes of a question or two.
    mmlu = [{**q, "task": "mmlu"} for q in read_jsonl(os.path.join(ROOT, "data/questions-gsm8k-mmlu.jsonl"))
            if (q.get("task") or "").startswith("mmlu")]
    if not mmlu:
        sys.exit("closed-loop: no MMLU-style question in data/questions-gsm8k-mmlu.jsonl")
    qs += mmlu
    random.Random(a.seed).shuffle(qs)
    n_train = round(len(qs) * a.train_frac)
    return qs[:n_train], qs[n_train:]


def prune(a, work: str) -> str:
    if a.pruned:
        return a.pruned
    dense = llama_server.model_path("smollm2")
    out = os.path.join(work, "pruned")
    run([os.path.join(BIN, "compression-worker"), "run", "--model", dense, "--method", "sparsegpt", "--pattern", a.pattern,
         "--calibration", "chat", "--calib-n", 32, "--calib-len", 256, "--out", out], os.path.join(work, "prune.txt"))
    ggufs = [f for f in os.listdir(out) if f.endswith(".gguf")]
    if len(ggufs) != 1:
        sys.exit(f"closed-loop: expected one .gguf in {out}, found {ggufs}")
    return os.path.join(out, ggufs[0])


def catalog(ports: dict, names: list) -> dict:
    models = []
    for n in names:
        pin, pout = PRICES[n]
        models.append({"name": n, "backend": f"http://127.0.0.1:{ports[n]}", "price_in_per_mtok": pin,
                       "price_out_per_mtok": pout, "price_source": "placeholder (self-hosted, closed-loop.py)",
                       "max_concurrency": 2, "default_output_tokens": 64})
    return {"name": "closed-loop", "note": "written by scripts/closed_loop.py", "models": models}


def fleet(work: str, tag: str, names: list, summary: dict, gguf: dict, records: list, a) -> dict:
    """Inventory, model profiles and traffic for the allocator: one 'cpu-thread' slot per server
    thread (the machine's llama.cpp servers run 1 thread each), tokens/s as collect measured."""
    inv = {"gpus": [{"type": "cpu-thread", "count": a.slots, "memory_gb": 2.0, "usd_per_hour": 0.02,
                     "node_label": "cpu"}]}
    profiles = {"prefill_cost": 0.1, "target_utilization": 0.8, "models": []}
    for n in names:
        s = summary[n]
        tps = s["mean_output_tokens"] / max(s["mean_latency_ms"] / 1e3, 1e-3)
        profiles["models"].append({
            "name": n, "served_model": n, "image": "xllamacpp", "max_concurrency": 2,
            "profiles": [{"gpu": "cpu-thread", "tensor_parallel": 1,
                          "weights_gb": round(os.path.getsize(gguf[n]) / 1e9, 3), "kv_gb": 0.1,
                          "tokens_per_s": round(tps, 1)}]})
    # One class per task: its share of the train questions, its measured tokens (mean over the
    # catalog's models).
    by_task: dict = {}
    for r in records:
        by_task.setdefault(r.get("task") or "none", []).append(r)
    classes = []
    for t, rs in sorted(by_task.items()):
        outs = [r["outcomes"][n] for r in rs for n in names]
        classes.append({"name": t, "rate_qps": round(a.rate_qps * len(rs) / len(records), 4),
                        "input_tokens": max(1, round(sum(o["input_tokens"] for o in outs) / len(outs))),
                        "output_tokens": max(1, round(sum(o["output_tokens"] for o in outs) / len(outs))),
                        "tasks": [t]})
    paths = {k: os.path.join(work, f"{k}-{tag}.yaml") for k in ("inventory", "models", "traffic")}
    write_yaml(paths["inventory"], inv)
    write_yaml(paths["models"], profiles)
    write_yaml(paths["traffic"], {"classes": classes})
    return paths


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return float("nan")


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))] if xs else float("nan")


@contextlib.contextmanager
def router(config: str, http_port: int, logfile: str):
    p = subprocess.Popen([os.path.join(BIN, "llm-router"), "serve", "--config", config],
                         stdout=open(logfile, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if p.poll() is not None:
                sys.exit(f"closed-loop: the router exited ({p.returncode}); see {logfile}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2):
                    break
            except Exception:
                time.sleep(0.3)
        else:
            sys.exit(f"closed-loop: the router did not answer /healthz in 120 s; see {logfile}")
        yield
    finally:
        p.terminate()
        p.wait(timeout=30)


def one_run(tag: str, names: list, ports: dict, gguf: dict, summary: dict, test_path: str,
            records_train: list, budget: float, work: str, a) -> dict:
    log(f"run `{tag}`: catalog {names}")
    cat = os.path.join(work, f"catalog-{tag}.yaml")
    write_yaml(cat, catalog(ports, names))
    recs = os.path.join(work, f"records-{tag}.jsonl")
    kept = [{**r, "outcomes": {m: o for m, o in r["outcomes"].items() if m in names}} for r in records_train
            if all(m in r["outcomes"] for m in names)]
    write_jsonl(recs, kept)
    artifact = os.path.join(work, f"estimator-{tag}.bin")
    run([os.path.join(BIN, "estimator"), "train", "--records", recs, "--catalog", cat, "--out", artifact])
    paths = fleet(work, tag, names, summary, gguf, kept, a)
    plan = os.path.join(work, f"plan-{tag}.yaml")
    plan_cmd = [os.path.join(BIN, "allocator"), "plan", "--inventory", paths["inventory"], "--models", paths["models"],
                "--traffic", paths["traffic"], "--records", recs, "--out", plan]
    budgeted = subprocess.run([str(c) for c in plan_cmd + ["--catalog", cat, "--budget-per-query", budget]],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if budgeted.returncode == 0:
        plan_text = budgeted.stdout
    else:
        # No plan holds the budget (e.g. every model left costs more): say so, plan for quality
        # alone, and let the router show what the budget then does.
        log(f"allocator: no plan within the budget for `{tag}`; planning without it")
        plan_text = ("with --budget-per-query: " + budgeted.stdout.strip().splitlines()[-1].strip()
                     + "\nwithout the budget:\n" + run(plan_cmd))
    with open(os.path.join(work, f"plan-{tag}.txt"), "w", encoding="utf-8") as f:
        f.write(plan_text)
    grpc_port, http_port = llama_server.free_port(), llama_server.free_port()
    cfg = os.path.join(work, f"router-{tag}.yaml")
    write_yaml(cfg, {
        "listen": {"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
        "catalog": cat, "plan": plan,
        "estimator": {"records": recs, "artifact": artifact},
        "batch": {"window_ms": 20, "max_batch": 16},
        "limits": {"default_output_tokens": 64},
        "budget": {"per_query_usd": budget},
        "backends": {"timeout_ms": 120000},
        "admission": {"request_timeout_ms": 300000},
        "tenants": [{"name": "default", "budget_usd": 100, "window_s": 3600}],
    })
    answers = os.path.join(work, f"answers-{tag}.jsonl")
    facade = os.path.join(work, f"facade-{tag}.yaml")
    write_yaml(facade, {"name": "router", "models": [{"name": "auto", "backend": f"http://127.0.0.1:{http_port}",
                                                        "price_in_per_mtok": 0, "price_out_per_mtok": 0,
                                                        "max_concurrency": a.concurrency}]})
    with router(cfg, http_port, os.path.join(work, f"router-{tag}.log")):
        run([os.path.join(BIN, "estimator"), "collect", "--catalog", facade, "--questions", test_path,
             "--out", os.path.join(work, f"routed-{tag}.jsonl"), "--answers", answers, "--max-tokens", a.max_tokens,
             "--concurrency", a.concurrency, "--timeout-s", 300])
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    rows = read_jsonl(answers)
    # The router's batch price λ (state.rs logs it when it calibrates on the records).
    price = "?"
    with open(os.path.join(work, f"router-{tag}.log"), encoding="utf-8", errors="replace") as f:
        for line in f:
            if "batch price calibrated" in line:
                plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
                price = " ".join(re.findall(r"(?:price|headroom)=\S+", plain))
    share: dict = {}
    for r in rows:
        share.setdefault(r.get("served_by", "?"), []).append(r["score"])
    lat = [r["latency_ms"] for r in rows]
    return {
        "tag": tag, "models": names, "answered": len(rows),
        "accuracy": sum(r["score"] for r in rows) / max(1, len(rows)),
        "spend_usd": metric(metrics, "llmroute_spend_usd"),
        "allowed_usd": metric(metrics, "llmroute_budget_allowed_usd"),
        "share": {m: (len(v), sum(v) / len(v)) for m, v in sorted(share.items())},
        "price": price, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "plan": plan_text.strip(), "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arith", type=int, default=401, help="arithmetic questions (plus the 49 vendored MMLU-style)")
    ap.add_argument("--train-frac", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=64, help="answer length cap, collect and routed")
    ap.add_argument("--budget-frac", type=float, default=0.5,
                    help="the router's per-query budget as a share of the way from the cheapest model's mean cost "
                         "to the dense SmolLM2's (measured on the train questions)")
    ap.add_argument("--slots", type=int, default=2, help="cpu-thread slots in the allocator's inventory")
    ap.add_argument("--rate-qps", type=float, default=0.5, help="the traffic forecast the allocator plans for")
    ap.add_argument("--concurrency", type=int, default=2, help="held-out questions in flight through the router")
    ap.add_argument("--pattern", default="unstructured:0.3",
                    help="the worker's sparsity pattern (SparseGPT, chat calibration 32 × 256). Default: the mildest "
                         "measured; on 48 arithmetic questions dense SmolLM2 answered 0.229, unstructured:0.3 0.104, "
                         "unstructured:0.5 0.062, 4:8 0.042, 2:4 0.000 (docs/results/closed-loop-recipes.txt)")
    ap.add_argument("--pruned", help="an already pruned GGUF (skips step 2; --pattern still sets its price)")
    ap.add_argument("--work", help="working folder (default: a new one under /tmp)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/results/closed-loop.md"))
    a = ap.parse_args()
    try:
        PRICES[PRUNED] = tuple(round(p * density(a.pattern), 6) for p in PRICES[DENSE])
    except ValueError:
        ap.error(f"--pattern {a.pattern}: expected N:M or unstructured:FRACTION")
    t_start = time.time()
    work = a.work or __import__("tempfile").mkdtemp(prefix="llmroute-closed-loop.")
    os.makedirs(work, exist_ok=True)
    log(f"working folder {work}")
    train, test = questions(a)
    write_jsonl(os.path.join(work, "questions-train.jsonl"), train)
    test_path = os.path.join(work, "questions-heldout.jsonl")
    write_jsonl(test_path, test)
    log(f"{len(train)} train questions, {len(test)} held out")
    t0 = time.time()
    pruned = prune(a, work)
    prune_s = time.time() - t0
    gguf = {DENSE: llama_server.model_path("smollm2"), PRUNED: pruned, GEMMA: llama_server.model_path("gemma3")}
    base_qa = os.path.join(ROOT, "scripts/templates/base-qa.jinja")
    with contextlib.ExitStack() as stack:
        ports = {
            DENSE: stack.enter_context(llama_server.serving("smollm2")),
            PRUNED: stack.enter_context(llama_server.serving(pruned)),
            GEMMA: stack.enter_context(llama_server.serving("gemma3", "--chat-template", base_qa)),
        }
        log(f"llama.cpp servers: {ports}")
        names = [DENSE, PRUNED, GEMMA]
        cat = os.path.join(work, "catalog-collect.yaml")
        write_yaml(cat, catalog(ports, names))
        t0 = time.time()
        collect_text = run([os.path.join(BIN, "estimator"), "collect", "--catalog", cat, "--questions",
                            os.path.join(work, "questions-train.jsonl"), "--out", os.path.join(work, "records-train.jsonl"),
                            "--answers", os.path.join(work, "answers-train.jsonl"), "--max-tokens", a.max_tokens,
                            "--concurrency", 1, "--timeout-s", 300], os.path.join(work, "collect.txt"))
        collect_s = time.time() - t0
        records = read_jsonl(os.path.join(work, "records-train.jsonl"))
        summary = {}
        for n in names:
            outs = [r["outcomes"][n] for r in records if n in r["outcomes"]]
            if not outs:
                sys.exit(f"closed-loop: {n} answered no question; see {work}/collect.txt")
            summary[n] = {
                "answered": len(outs), "accuracy": sum(o["score"] for o in outs) / len(outs),
                "mean_output_tokens": sum(o["output_tokens"] for o in outs) / len(outs),
                "mean_latency_ms": sum(o["latency_ms"] for o in outs) / len(outs),
                "mean_cost_usd": sum(o["cost_usd"] for o in outs) / len(outs),
            }
        cheapest = min(s["mean_cost_usd"] for s in summary.values())
        budget = cheapest + a.budget_frac * (summary[DENSE]["mean_cost_usd"] - cheapest)
        log(f"per-query budget {budget:.3g} USD (cheapest mean {cheapest:.3g}, dense {summary[DENSE]['mean_cost_usd']:.3g})")
        runs = [one_run(tag, ns, ports, gguf, summary, test_path, records, budget, work, a)
                for tag, ns in (("with-pruned", names), ("without-pruned", [DENSE, GEMMA]))]
        # Each model alone on the same held-out questions: what the routed runs compare with.
        run([os.path.join(BIN, "estimator"), "collect", "--catalog", cat, "--questions", test_path,
             "--out", os.path.join(work, "records-heldout.jsonl"), "--max-tokens", a.max_tokens,
             "--concurrency", 1, "--timeout-s", 300])
        alone = {n: [r["outcomes"][n] for r in read_jsonl(os.path.join(work, "records-heldout.jsonl"))
                     if n in r["outcomes"]] for n in names}
    report(a, work, train, test, summary, alone, budget, runs, prune_s, collect_s, collect_text, time.time() - t_start)
    log(f"wrote {a.out} ({(time.time() - t_start) / 60:.1f} min)")


def ci95(scores: list) -> str:
    """Mean ± the normal-approximation 95 % half-width, as `0.222 ± 0.070`."""
    n = len(scores)
    if n == 0:
        return "-"
    p = sum(scores) / n
    return f"{p:.3f} ± {1.96 * (p * (1 - p) / n) ** 0.5:.3f}"


def paired_diff(a_rows: list, b_rows: list) -> str:
    """Mean difference of two runs' scores on the same questions, ± its paired 95 % half-width."""
    b = {r["id"]: r["score"] for r in b_rows}
    d = [r["score"] - b[r["id"]] for r in a_rows if r["id"] in b]
    if len(d) < 2:
        return "-"
    m = sum(d) / len(d)
    var = sum((x - m) ** 2 for x in d) / (len(d) - 1)
    return f"{m:+.3f} ± {1.96 * (var / len(d)) ** 0.5:.3f} (n = {len(d)})"


def report(a, work, train, test, summary, alone, budget, runs, prune_s, collect_s, collect_text, total_s) -> None:
    L = []
    L.append("# The closed loop: compress, serve, measure, allocate, route (issue 18)")
    L.append("")
    L.append(f"`bash scripts/closed-loop.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs; {total_s / 60:.1f} minutes in all (prune {prune_s:.0f} s, collect {collect_s:.0f} s). "
             f"Working files: `{work}`.")
    L.append("")
    L.append(f"Pruned model: SmolLM2-135M-Instruct, SparseGPT `{a.pattern}`, chat calibration 32 × 256 tokens "
             f"({'given: ' + a.pruned if a.pruned else 'pruned by this run'}); priced at the dense model's prices × "
             f"{density(a.pattern):.2f} (its density).")
    L.append("")
    L.append(f"Questions: {len(train) + len(test)} graded ({a.arith} seeded arithmetic of "
             "`scripts/arith_questions.py` + the vendored keyed MMLU-style questions), "
             f"{len(train)} to train on, {len(test)} held out (seed {a.seed}). Answers capped at {a.max_tokens} tokens, greedy.")
    L.append("")
    L.append("## Each model on the train questions (`estimator collect`, llama.cpp, 1 thread per server)")
    L.append("")
    L.append("| model | answered | accuracy | mean out tokens | mean latency ms | tokens/s | mean cost USD |")
    L.append("|---|---|---|---|---|---|---|")
    for n, s in summary.items():
        tps = s["mean_output_tokens"] / max(s["mean_latency_ms"] / 1e3, 1e-3)
        L.append(f"| {n} | {s['answered']} | {s['accuracy']:.3f} | {s['mean_output_tokens']:.1f} | "
                 f"{s['mean_latency_ms']:.0f} | {tps:.1f} | {s['mean_cost_usd']:.3g} |")
    L.append("")
    L.append(f"Router budget: {budget:.3g} USD per query (`--budget-frac {a.budget_frac}` of the way from the cheapest "
             "model's mean cost to the dense SmolLM2's); same budget, same held-out questions in both runs.")
    L.append("")
    L.append("## Routed, held-out questions (the router's OpenAI facade, `model: auto`, dispatch on)")
    L.append("")
    L.append("| catalog | answered | routed accuracy (95 % CI) | realized spend USD | allowed USD | spend / allowed | p50 ms | p99 ms | share per model (n, accuracy) |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        share = "; ".join(f"{m}: {n} ({acc:.2f})" for m, (n, acc) in r["share"].items())
        L.append(f"| {r['tag']} ({', '.join(r['models'])}) | {r['answered']} | {ci95([x['score'] for x in r['rows']])} | "
                 f"{r['spend_usd']:.3g} | {r['allowed_usd']:.3g} | {r['spend_usd'] / max(r['allowed_usd'], 1e-30):.2f} | "
                 f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {share} |")
    L.append("")
    for r in runs:
        L.append(f"- {r['tag']}: the router's batch price (`batch price calibrated` in its log): {r['price']}")
    L.append("")
    if len(runs) == 2:
        L.append(f"Routed accuracy, {runs[0]['tag']} − {runs[1]['tag']} on the same questions (paired): "
                 f"{paired_diff(runs[0]['rows'], runs[1]['rows'])}.")
        L.append("")
    L.append("Each model alone on the same held-out questions (`estimator collect`, no router):")
    L.append("")
    L.append("| model | accuracy (95 % CI) | mean cost USD | total cost USD |")
    L.append("|---|---|---|---|")
    for n, outs in alone.items():
        cost = sum(o["cost_usd"] for o in outs)
        L.append(f"| {n} | {ci95([o['score'] for o in outs])} | {cost / max(1, len(outs)):.3g} | {cost:.3g} |")
    L.append("")
    for r in runs:
        L.append(f"### The allocator's plan, {r['tag']}")
        L.append("")
        L.append("```")
        L.append(r["plan"])
        L.append("```")
        L.append("")
    L.append("## `estimator collect` on the train questions")
    L.append("")
    L.append("```")
    L.append(collect_text.strip())
    L.append("```")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
