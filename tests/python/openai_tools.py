#!/usr/bin/env python3
"""A tool call through the router with the official `openai` Python client, against real llama.cpp
servers: `model="auto"` with `tools` is routed to the one model whose catalog entry declares
`tools`, the answer carries `tool_calls` (whole, then streamed as deltas), the tool's result goes
back in a `tool` message and the final answer comes back; a request with an image part is
refused with 400 naming `vision`, since no model declares it. Prints the transcript as JSON.

    python3 tests/python/openai_tools.py http://127.0.0.1:8080/v1 API_KEY TOOLS_MODEL
"""
import json
import sys

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def call(i, city):
    return {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}


# Two earlier turns show the 135M model the form of a call (it does not find it on its own).
HISTORY = [
    {"role": "system", "content": "You answer questions about the weather by calling get_weather."},
    {"role": "user", "content": "What is the weather in London?"},
    {"role": "assistant", "content": None, "tool_calls": [call(0, "London")]},
    {"role": "tool", "tool_call_id": "call_0", "content": "rain, 12 C"},
    {"role": "assistant", "content": "It is raining in London, 12 C."},
    {"role": "user", "content": "What is the weather in Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [call(1, "Rome")]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 25 C"},
    {"role": "assistant", "content": "It is sunny in Rome, 25 C."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


def main():
    base, key, tools_model = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
    transcript = []

    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=HISTORY, tools=TOOLS, tool_choice="auto", max_tokens=48, temperature=0
    )
    r = raw.parse()
    msg = r.choices[0].message
    transcript.append({"request": "tools offered, model=auto", "x-llmroute-model": raw.headers.get("x-llmroute-model"),
                       "finish_reason": r.choices[0].finish_reason, "message": msg.model_dump(exclude_none=True)})
    assert raw.headers.get("x-llmroute-model") == tools_model, raw.headers
    assert r.model == tools_model, r.model
    assert msg.tool_calls, f"no tool call: {msg}"
    tc = msg.tool_calls[0]
    assert tc.function.name == "get_weather", tc
    args = json.loads(tc.function.arguments)
    assert args.get("city") == "Paris", args
    assert r.choices[0].finish_reason == "tool_calls", r.choices[0].finish_reason

    # The same call streamed: the tool call arrives as deltas with an index.
    stream = client.chat.completions.create(
        model="auto", messages=HISTORY, tools=TOOLS, max_tokens=48, temperature=0, stream=True
    )
    calls, finish = {}, None
    for chunk in stream:
        for ch in chunk.choices:
            for d in ch.delta.tool_calls or []:
                c = calls.setdefault(d.index, {"name": "", "arguments": ""})
                if d.function and d.function.name:
                    c["name"] += d.function.name
                if d.function and d.function.arguments:
                    c["arguments"] += d.function.arguments
            finish = ch.finish_reason or finish
    transcript.append({"request": "the same, streamed", "tool_calls": calls, "finish_reason": finish})
    assert calls and calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]).get("city") == "Paris", calls

    # Second turn: the tool's result; the model answers in text.
    follow = HISTORY + [msg.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": tc.id, "content": "sunny, 21 C"}]
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=follow, tools=TOOLS, max_tokens=32, temperature=0
    )
    r = raw.parse()
    final = r.choices[0].message
    transcript.append({"request": "tool result sent back", "x-llmroute-model": raw.headers.get("x-llmroute-model"),
                       "message": final.model_dump(exclude_none=True)})
    assert raw.headers.get("x-llmroute-model") == tools_model, raw.headers
    assert final.content and not final.tool_calls, final
    assert "21" in final.content or "Paris" in final.content, final.content

    # An image part needs a vision model; none declares it.
    try:
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]}],
            max_tokens=16,
        )
        raise AssertionError("an image request was answered though no model declares vision")
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        text = json.dumps(body)
        transcript.append({"request": "image part, model=auto", "status": e.status_code, "error": body})
        assert "vision" in text, text
    print(json.dumps(transcript, indent=1))


if __name__ == "__main__":
    main()
