"""The openai backend against a real `transformers serve` process and a real stdlib loopback server.

`transformers serve` (the tiny random Llama, offline) checks generation end to end and that its
missing log-prob support is reported honestly. A small ThreadingHTTPServer on 127.0.0.1 lets us
watch what the client sends: headers, retries, how many requests are in flight.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from agents.backends import BackendUnavailable, GenerationRequest, create_backend
from agents.backends.hf import HFBackend
from agents.backends.openai import OpenAIBackend, ServerError, candidate_logprobs
from agents.seeding import sample_seed


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- a real `transformers serve` -------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """`transformers serve` pinned to the tiny model dir; yields (base_url, model name)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).with_name("transformers")), "serve", tiny_model_dir]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"transformers serve exited with {process.returncode}:\n{log_path.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready after 180 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1", tiny_model_dir
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_eval_scores_a_served_model_against_a_local_baseline(served, tmp_path):
    """`eval --backend openai --base-url`: the server answers for --model; the same weights loaded
    here as the baseline give the same greedy answers, so every paired difference is zero."""
    from socialign.cli import main

    base_url, model = served
    out = tmp_path / "eval"
    assert main(["eval", "--model", model, "--backend", "openai", "--base-url", base_url, "--baseline", model,
                 "--no-judge", "--limit", "3", "--max-new-tokens", "4", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["settings"]["backend"] == "openai" and report["settings"]["backend_options"] == {"base_url": base_url}
    rows = report["per_question"]
    assert len(rows) == 3 and all(row["model"]["answer"] == row["baseline"]["answer"] for row in rows)


@pytest.fixture(scope="module")
def backend(served):
    base_url, model = served
    backend = create_backend("openai", model, base_url=base_url, concurrency=3, tokenizer=model)
    yield backend
    backend.close()


def test_batch_with_n_samples_has_right_shapes_and_exact_token_counts(backend):
    requests = [
        GenerationRequest(user("hello"), n=2, max_new_tokens=3, temperature=0.8, seed=7),
        GenerationRequest(user("a much longer prompt " * 8), n=1, max_new_tokens=2, temperature=0.0),
        GenerationRequest(user("third"), n=2, max_new_tokens=3, temperature=1.0, top_p=0.9),
    ]
    before = backend.stats.calls, backend.stats.requests, backend.stats.generated_tokens
    out = backend.generate(requests)
    assert [len(c) for c in out] == [2, 1, 2]
    for request, completions in zip(requests, out, strict=True):
        for completion in completions:
            assert 0 < completion.num_tokens <= request.max_new_tokens
            assert completion.finish_reason == "length"  # the random model never ends this early
    generated = sum(c.num_tokens for comps in out for c in comps)
    assert backend.stats.calls - before[0] == 5  # one HTTP request per sample
    assert backend.stats.requests - before[1] == 3
    assert backend.stats.generated_tokens - before[2] == generated
    assert backend.stats.seconds > 0


def test_many_requests_all_complete_in_request_order(backend):
    budgets = [1 + i % 4 for i in range(12)]
    requests = [
        GenerationRequest(user(f"question {i}"), max_new_tokens=b, temperature=0.0)
        for i, b in enumerate(budgets)
    ]
    out = backend.generate(requests)
    # Greedy decoding of this model never stops early, so each count identifies its request.
    assert [comps[0].num_tokens for comps in out] == budgets


def test_stop_strings_end_the_completion(backend, tiny_hf):
    # The random model emits newlines: stopping at one leaves no newline and a "stop" finish.
    [[completion]] = backend.generate(
        [GenerationRequest(user("hi"), max_new_tokens=8, temperature=0.0, stop=("\n",))]
    )
    assert "\n" not in completion.text
    assert (completion.finish_reason, completion.stop_string) == ("stop", "\n")
    assert completion.num_tokens < 8
    # transformers serve keeps the stop string in the text it returns, so the cut is exact here.
    assert tiny_hf.decode(list(completion.token_ids)) == completion.text + "\n"


def test_stop_strings_cut_locally_match_the_servers_cut(served):
    base_url, model = served
    request = GenerationRequest(user("hi"), max_new_tokens=8, temperature=0.0, stop=("\n",))
    local = OpenAIBackend(model, base_url, tokenizer=model, local_stop=True)
    try:
        [[cut_here]] = local.generate([request])
    finally:
        local.close()
    assert (cut_here.finish_reason, cut_here.stop_string) == ("stop", "\n")
    assert cut_here.num_tokens == 8  # the server did not know the stop string: it ran to the budget


@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir):
    return HFBackend(tiny_model_dir)


def test_a_prefix_continues_the_assistant_turn_as_the_hf_backend_does(backend, tiny_hf):
    # /v1/completions with the ChatRenderer's prompt text: the same greedy reply as in-process.
    messages, prefix = user("How do I apologise?"), "First, say"
    request = GenerationRequest(messages, prefix=prefix, max_new_tokens=6, temperature=0.0)
    [[served_reply]] = backend.generate([request])
    [[local_reply]] = tiny_hf.generate([request])
    assert served_reply.text == local_reply.text
    assert served_reply.finish_reason == local_reply.finish_reason == "length"
    plain = tiny_hf.generate([GenerationRequest(messages, max_new_tokens=6, temperature=0.0)])[0][0]
    assert served_reply.text != plain.text  # the prefix really changed the context


def test_a_prefix_without_a_local_tokenizer_is_a_clear_error(served):
    base_url, model = served
    bare = OpenAIBackend(model, base_url)
    try:
        with pytest.raises(BackendUnavailable, match="assistant prefix needs tokenizer="):
            bare.generate([GenerationRequest(user("x"), prefix="Sure")])
    finally:
        bare.close()


def test_transformers_serve_generation_logprobs_are_reported_unsupported(backend):
    with pytest.raises(BackendUnavailable, match="logprobs are not supported .*transformers serve ignores"):
        backend.generate([GenerationRequest(user("x"), max_new_tokens=2, logprobs=True)])


def test_transformers_serve_log_probs_are_reported_unsupported_not_faked(backend):
    prompts = [user("Rate this from 1 to 5.")]
    with pytest.raises(BackendUnavailable, match="no top_logprobs .*transformers serve ignores"):
        backend.next_token_logprobs(prompts, ["1", "5"])
    # A prefix goes to /v1/completions, whose answer from transformers serve has no logprobs.
    with pytest.raises(BackendUnavailable, match="prefix failed at .*no top_logprobs"):
        backend.next_token_logprobs(prompts, ["1", "5"], prefix="Rating:")
    with pytest.raises(
        BackendUnavailable, match="score failed at .*prompt must be a string.*vLLM serve does"
    ):
        backend.score(prompts, ["4"])


def test_completions_features_need_a_local_tokenizer(served):
    base_url, model = served
    backend = OpenAIBackend(model, base_url)
    try:
        with pytest.raises(BackendUnavailable, match="score needs tokenizer="):
            backend.score([user("x")], ["y"])
        with pytest.raises(BackendUnavailable, match="prefix needs tokenizer="):
            backend.next_token_logprobs([user("x")], ["1"], prefix="Rating:")
    finally:
        backend.close()


def test_candidates_merge_spellings_and_missing_ones_get_minus_infinity():
    top = [("5", -1.0), (" 5", -1.0), ("4", -2.0), ("Hello", -0.5)]
    found = candidate_logprobs(top, ["5", "4", "3"])
    assert found["5"] == pytest.approx(-1.0 + 0.6931471805599453)  # log(2 e^-1)
    assert found["4"] == -2.0
    assert found["3"] == float("-inf")


# -- a real loopback server that records what the client sends --------------------------------


class RecordingServer(ThreadingHTTPServer):
    """Answers chat completions ("echo: <last user message>") after an optional delay and scripted errors."""

    daemon_threads = True

    def __init__(
        self,
        statuses: tuple[int, ...] = (),
        delay: float = 0.0,
        choice_extra: dict | None = None,
        completions_choice: dict | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.statuses = list(statuses)  # answered first, in order; 200 after them
        self.delay = delay
        self.choice_extra = choice_extra or {}  # e.g. vLLM's stop_reason
        self.completions_choice = completions_choice  # the /v1/completions answer's one choice
        self.headers_seen: list[dict] = []
        self.bodies_seen: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class RecordingHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.headers_seen.append(dict(self.headers))
            server.bodies_seen.append(body)
            status = server.statuses.pop(0) if server.statuses else 200
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        time.sleep(server.delay * random.uniform(0.5, 1.5))  # overlapping, finishing out of order
        with server.lock:
            server.in_flight -= 1
        if status == 200 and self.path.endswith("/completions") and not self.path.endswith("/chat/completions"):
            answer = {
                "choices": [{"index": 0, **server.completions_choice}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            }
        elif status == 200:
            answer = {
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "echo: " + body["messages"][-1]["content"],
                        },
                        "finish_reason": "stop",
                        **server.choice_extra,
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        else:
            answer = {"error": f"scripted {status}"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recording():
    servers = []

    def start(**options) -> RecordingServer:
        server = RecordingServer(**options)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_concurrency_is_bounded_and_order_is_kept(recording):
    server = recording(delay=0.15)
    backend = OpenAIBackend("m", server.base_url, concurrency=3)
    try:
        out = backend.generate([GenerationRequest(user(f"q{i}")) for i in range(12)])
    finally:
        backend.close()
    assert [comps[0].text for comps in out] == [f"echo: q{i}" for i in range(12)]
    assert server.max_in_flight == 3


def test_api_key_comes_from_the_environment_is_sent_and_never_shown(recording, monkeypatch, caplog):
    secret = "sk-test-" + "x7" * 8
    monkeypatch.setenv("SOCIALIGN_TEST_KEY", secret)
    server = recording()
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBackend("m", server.base_url, api_key_env="SOCIALIGN_TEST_KEY")
    try:
        backend.generate([GenerationRequest(user("hi"))])
        shown = repr(backend) + str(backend) + repr(vars(backend))
    finally:
        backend.close()
    assert server.headers_seen[0]["Authorization"] == f"Bearer {secret}"
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request...
    assert secret not in shown + caplog.text  # ...but neither logs nor reprs show the key


def test_missing_api_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SOCIALIGN_MISSING_KEY", raising=False)
    with pytest.raises(BackendUnavailable, match="SOCIALIGN_MISSING_KEY, which is not set"):
        OpenAIBackend("m", "http://127.0.0.1:1/v1", api_key_env="SOCIALIGN_MISSING_KEY")


def test_server_errors_and_rate_limits_are_retried(recording):
    server = recording(statuses=(503, 429))
    backend = OpenAIBackend("m", server.base_url, max_retries=3)
    try:
        [[completion]] = backend.generate([GenerationRequest(user("again"))])
    finally:
        backend.close()
    assert completion.text == "echo: again"
    assert len(server.headers_seen) == 3


def test_other_client_errors_fail_fast(recording):
    server = recording(statuses=(404,))
    backend = OpenAIBackend("m", server.base_url, max_retries=3)
    try:
        with pytest.raises(ServerError, match="HTTP 404: .*scripted 404"):
            backend.generate([GenerationRequest(user("x"))])
    finally:
        backend.close()
    assert len(server.headers_seen) == 1


def test_unreachable_server_is_unavailable_after_bounded_retries():
    backend = OpenAIBackend("m", f"http://127.0.0.1:{free_port()}/v1", max_retries=2, timeout=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable, match="after 3 attempts") as caught:
            backend.generate([GenerationRequest(user("anyone there?"))])
    finally:
        backend.close()
    assert time.monotonic() - started < 10
    assert "\n" not in str(caught.value)


def test_closed_backend_refuses_work(recording):
    backend = OpenAIBackend("m", recording().base_url)
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([GenerationRequest(user("x"))])


def test_each_sample_sends_its_own_seed(recording):
    server = recording()
    backend = OpenAIBackend("m", server.base_url)
    try:
        backend.generate([GenerationRequest(user("a"), n=3, seed=5), GenerationRequest(user("b"), seed=6)])
    finally:
        backend.close()
    sent = sorted((body["messages"][-1]["content"], body["seed"]) for body in server.bodies_seen)
    assert sent == sorted([("a", sample_seed(5, k)) for k in range(3)] + [("b", sample_seed(6, 0))])
    # seed + sample sent request 5's second sample the seed of request 6's first; these never meet.
    assert len({seed for _, seed in sent}) == 4


def test_a_server_that_cannot_tell_eos_from_a_stop_string_is_a_clear_error(recording):
    backend = OpenAIBackend("m", recording().base_url)
    try:
        [[plain]] = backend.generate([GenerationRequest(user("q"))])
        assert (plain.finish_reason, plain.stop_string) == ("eos", None)  # no stop strings asked: EOS
        with pytest.raises(BackendUnavailable, match="did not say which .*local_stop=true"):
            backend.generate([GenerationRequest(user("q"), stop=("\n",))])
    finally:
        backend.close()


def test_vllms_stop_reason_tells_eos_from_a_stop_string(recording):
    for stop_reason, expected in ((None, ("eos", None)), ("\n", ("stop", "\n"))):
        backend = OpenAIBackend("m", recording(choice_extra={"stop_reason": stop_reason}).base_url)
        try:
            [[completion]] = backend.generate([GenerationRequest(user("q"), stop=("\n",))])
        finally:
            backend.close()
        assert (completion.finish_reason, completion.stop_string) == expected


def reported(tokenizer, text: str, style: str) -> dict:
    """A /v1/completions logprobs block for ``text`` as vLLM (token_id:N) or llama.cpp (token text) spell it."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    tokens = [f"token_id:{i}" for i in ids] if style == "vllm" else [tokenizer.decode([i]) for i in ids]
    return {"tokens": tokens, "token_logprobs": [-0.5 - k for k in range(len(ids))]}


def test_reported_tokens_become_ids_and_logprobs_cut_after_the_stop_string(recording, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ran_on = tokenizer.encode(" Step one\n\nStep two", add_special_tokens=False)
    through_stop = next(k for k in range(len(ran_on) + 1) if "\n\n" in tokenizer.decode(ran_on[:k]))
    request = GenerationRequest(user("q"), prefix="Plan:", stop=("\n\n",), logprobs=True)
    cases = [
        # vLLM: the stop string cut from the text, its tokens reported, stop_reason says which.
        ({"text": " Step one", "logprobs": reported(tokenizer, " Step one\n\n", "vllm"),
          "finish_reason": "stop", "stop_reason": "\n\n"}, False,
         tokenizer.encode(" Step one\n\n", add_special_tokens=False)),
        # Stop strings cut here (local_stop): the server ran on past the stop string.
        ({"text": " Step one\n\nStep two", "logprobs": reported(tokenizer, " Step one\n\nStep two", "llama.cpp"),
          "finish_reason": "length"}, True, ran_on[:through_stop]),
    ]
    for choice, local_stop, expected_ids in cases:
        server = recording(completions_choice=choice)
        backend = OpenAIBackend("m", server.base_url, tokenizer=tiny_model_dir, local_stop=local_stop)
        try:
            [[completion]] = backend.generate([request])
        finally:
            backend.close()
        assert (completion.text, completion.finish_reason, completion.stop_string) == (" Step one", "stop", "\n\n")
        assert completion.token_ids == tuple(expected_ids)
        assert completion.logprobs == tuple(-0.5 - k for k in range(len(expected_ids)))
        sent = server.bodies_seen[0]
        assert sent["prompt"].endswith("<|im_start|>assistant\nPlan:")  # the renderer's prompt, prefix last
        assert ("stop" in sent) is not local_stop
