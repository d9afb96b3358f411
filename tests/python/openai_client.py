#!/usr/bin/env python3
"""Calls the router's OpenAI-compatible facade with the official `openai` Python client: routed
(`model="auto"`) and pinned chat completions, streaming, the legacy completions and the responses
API (whole and streamed), the x-llmroute-* reply headers, `models.list()`, and a bad request.

    python3 tests/python/openai_client.py http://127.0.0.1:8080/v1 API_KEY [--ca CA.pem]

With --ca (and an https:// base URL) the server's certificate is verified against that CA.
"""
import json
import sys

import openai


def main():
    base, key = sys.argv[1], sys.argv[2]
    kw = {}
    if "--ca" in sys.argv:
        import ssl

        ctx = ssl.create_default_context(cafile=sys.argv[sys.argv.index("--ca") + 1])
        # openai 3.x ships its own HTTP client (httpx2); 1.x used httpx.
        factory = getattr(openai, "DefaultHttpx2Client", None) or openai.DefaultHttpxClient
        kw["http_client"] = factory(verify=ctx, timeout=30)
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30, **kw)
    out = {}
    models = [m.id for m in client.models.list().data]
    assert "auto" in models and len(models) > 1, models
    out["models"] = models

    r = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "What is the boiling point of water in Celsius?"}],
        max_tokens=32,
    )
    assert r.choices[0].message.content, r
    assert r.model in models and r.model != "auto", r.model
    assert r.usage.completion_tokens > 0, r.usage
    out["auto"] = {"model": r.model, "content": r.choices[0].message.content, "usage": r.usage.model_dump()}

    pinned = models[0]
    r = client.chat.completions.create(
        model=pinned, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    assert r.model == pinned, (r.model, pinned)
    out["pinned"] = r.model

    pieces, model, finish = [], None, None
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Count from one to five."}], max_tokens=32, stream=True
    )
    for chunk in stream:
        model = chunk.model or model
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
    assert pieces and finish, (pieces, finish)
    out["stream"] = {"model": model, "chunks": len(pieces), "finish_reason": finish}

    # The reply headers: request id, the model that answered, its cost.
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Name a primary colour."}], max_tokens=16
    )
    r = raw.parse()
    assert len(raw.headers["x-llmroute-request-id"]) == 32, dict(raw.headers)
    assert raw.headers["x-llmroute-model"] == r.model, (dict(raw.headers), r.model)
    assert float(raw.headers["x-llmroute-cost-usd"]) >= 0.0
    out["headers"] = {k: raw.headers[k] for k in ("x-llmroute-model", "x-llmroute-cost-usd")}

    # Legacy completions, whole and streamed.
    c = client.completions.create(model="auto", prompt="The capital of Italy is", max_tokens=16)
    assert c.choices[0].text and c.model in models and c.usage.completion_tokens > 0, c
    pieces = [ch.choices[0].text for ch in client.completions.create(
        model="auto", prompt="Count to three:", max_tokens=16, stream=True) if ch.choices and ch.choices[0].text]
    assert pieces, "no streamed completion text"
    out["completions"] = {"model": c.model, "stream_chunks": len(pieces)}

    # The responses API, whole and streamed.
    resp = client.responses.create(model="auto", input="What is two plus two?", max_output_tokens=16)
    assert resp.output_text and resp.model in models and resp.usage.output_tokens > 0, resp
    kinds, deltas = [], []
    for ev in client.responses.create(model="auto", input="Say something short.", max_output_tokens=16, stream=True):
        kinds.append(ev.type)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed" and deltas, kinds
    out["responses"] = {"model": resp.model, "text": resp.output_text[:40], "events": len(kinds)}

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise SystemExit("an unknown model was accepted")
    except openai.BadRequestError as e:
        assert "model" in str(e), str(e)
        out["unknown_model"] = e.status_code
    print(json.dumps(out))


if __name__ == "__main__":
    main()
