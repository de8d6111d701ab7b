"""Any OpenAI-compatible server (``vllm serve``, ``transformers serve``, llama.cpp) behind the batched API.

Each sample is its own chat request (n=1), so every completion gets its exact token count from
``usage``; a batch's requests run concurrently on a private event-loop thread, at most
``concurrency`` in flight, so callers keep a plain synchronous call that also works from inside
their own event loop.

Log-probs are only reported when the server really returns them. Scoring, and next-token
log-probs after a partial assistant reply, need ``/v1/completions`` with token-id prompts rendered
here by ``tokenizer`` (exactly as the hf backend renders them) plus ``echo``/``logprobs``: vLLM serve
honours those; ``transformers serve`` ignores them, and then we raise BackendUnavailable rather than
guess.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import threading
import time
from collections.abc import Iterable

import httpx

from agents.backends.base import (
    Backend,
    BackendUnavailable,
    Completion,
    GenerationRequest,
    Message,
    one_line,
    truncate_at_stop,
)
from agents.registry import resolve

TOP_LOGPROBS = 20  # the most the OpenAI API lets a request ask for
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 10.0
SCORING_SERVERS = (
    "vLLM serve does; llama-cpp-python's server takes text prompts only and transformers serve ignores "
    "echo/logprobs"
)


class ServerError(BackendUnavailable):
    """An answer that retrying cannot fix: a 4xx other than 429, or a response missing promised fields."""


def _auth_headers(api_key_env: str | None) -> dict[str, str]:
    """Read the key from the environment only; it then lives solely inside the HTTP client's headers."""
    if api_key_env is None:
        return {}
    key = os.environ.get(api_key_env)
    if not key:
        raise BackendUnavailable(
            f"api_key_env names the environment variable {api_key_env}, which is not set: export it "
            "(API keys are read from the environment only)"
        )
    return {"Authorization": f"Bearer {key}"}


def _logsumexp(values: list[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def candidate_logprobs(top: Iterable[tuple[str, float]], candidates: list[str]) -> dict[str, float]:
    """A candidate's log-prob among the reported top tokens, merging ``"5"`` and ``" 5"``; absent: -inf."""
    top = list(top)
    return {c: _logsumexp([lp for token, lp in top if token in (c, " " + c)]) for c in candidates}


def chat_prompt_ids(tokenizer, messages: list[Message], suffix: str = "") -> list[int]:
    """Token ids of the chat prompt (generation prompt added) then ``suffix``, as HFBackend builds them."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return tokenizer(text + suffix, add_special_tokens=False)["input_ids"]


class _LoopThread:
    """A private event loop on a daemon thread, so sync callers never fight over the caller's own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="openai-backend-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine):
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: stop the in-flight requests too
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class OpenAIBackend(Backend):
    """Chat generation against ``base_url`` (the API root, e.g. ``http://127.0.0.1:8000/v1``)."""

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        tokenizer: str | None = None,
    ) -> None:
        super().__init__()
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.tokenizer_name = tokenizer
        self._tokenizer = None
        self._client = httpx.AsyncClient(
            headers=_auth_headers(api_key_env),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency),
        )
        self._limit = asyncio.Semaphore(concurrency)  # shared by every call on this backend
        self._loop: _LoopThread | None = _LoopThread()

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_name!r}, base_url={self.base_url!r})"

    # -- HTTP ---------------------------------------------------------------------------

    def _run(self, calls: list[tuple[str, dict]]) -> list[dict]:
        """POST every (path, payload) concurrently; answers come back in call order."""
        if self._loop is None:
            raise RuntimeError(f"{self!r} is closed")
        return self._loop.run(self._gather(calls))

    async def _gather(self, calls: list[tuple[str, dict]]) -> list[dict]:
        tasks = [asyncio.ensure_future(self._post(path, payload)) for path, payload in calls]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one hopeless request ends the batch: stop the others' retries
                task.cancel()
            raise

    async def _post(self, path: str, payload: dict) -> dict:
        url = self.base_url + path
        async with self._limit:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter de-synchronises retries
                try:
                    response = await self._client.post(url, json=payload)
                except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
                    problem = one_line(f"{type(error).__name__}: {error}")
                    continue
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as error:
                        raise ServerError(
                            f"{url} answered with non-JSON: {one_line(response.text)}"
                        ) from error
                problem = f"HTTP {response.status_code}: {one_line(response.text)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise ServerError(f"{url} rejected the request with {problem}")
        raise BackendUnavailable(
            f"no usable answer from {url} after {self.max_retries + 1} attempts ({problem})"
        )

    # -- generation ---------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        started = time.perf_counter()
        rows = [(req, sample) for req in requests for sample in range(req.n)]
        answers = self._run([("/chat/completions", self._chat_payload(req, sample)) for req, sample in rows])
        completions = [
            self._completion(answer, req.stop) for (req, _), answer in zip(rows, answers, strict=True)
        ]
        flat = iter(completions)
        out = [[next(flat) for _ in range(req.n)] for req in requests]
        self.stats.calls += len(rows)  # one HTTP request per sample
        self.stats.requests += len(requests)
        self.stats.generated_tokens += sum(c.num_tokens for comps in out for c in comps)
        self.stats.seconds += time.perf_counter() - started
        return out

    def _chat_payload(self, req: GenerationRequest, sample: int) -> dict:
        payload = {
            "model": self.model_name,
            "messages": list(req.messages),
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
        }
        if req.stop:
            payload["stop"] = list(req.stop)
        if req.seed is not None:
            payload["seed"] = req.seed + sample  # distinct but reproducible samples
        return payload

    def _completion(self, answer: dict, stop: tuple[str, ...]) -> Completion:
        choice = answer["choices"][0]
        num_tokens = (answer.get("usage") or {}).get("completion_tokens")
        if num_tokens is None:
            raise ServerError(f"{self.base_url} sent a chat completion without usage.completion_tokens")
        text, stop_string = truncate_at_stop(choice["message"].get("content") or "", stop)
        finish = "stop" if stop_string else "length" if choice.get("finish_reason") == "length" else "eos"
        if finish == "eos" and stop:  # the server cut a stop string or met EOS: it did not say which
            finish = "stop"
        token_ids = tuple(self._tokenizer(text, add_special_tokens=False)["input_ids"]) if self._tokenizer else ()
        return Completion(text=text, token_ids=token_ids, finish_reason=finish, stop_string=stop_string,
                          generated=num_tokens)

    # -- log-probs ----------------------------------------------------------------------

    def next_token_logprobs(
        self, prompts: list[list[Message]], candidates: list[str], prefix: str = ""
    ) -> list[dict[str, float]]:
        if prefix:
            # Chat APIs cannot continue a partial assistant message portably: render it here instead.
            feature = "next_token_logprobs with a prefix"
            tokenizer = self._local_tokenizer(feature)
            ids = [chat_prompt_ids(tokenizer, messages, prefix) for messages in prompts]
            calls = [("/completions", self._completions_payload(seq, logprobs=TOP_LOGPROBS)) for seq in ids]
            answers = self._run_scoring(calls, feature)
            tops = [self._completions_top(answer) for answer in answers]
        else:
            calls = [("/chat/completions", self._chat_logprobs_payload(messages)) for messages in prompts]
            tops = [self._chat_top(answer) for answer in self._run(calls)]
        return [candidate_logprobs(top, candidates) for top in tops]

    def score(self, prompts: list[list[Message]], continuations: list[str]) -> list[list[float]]:
        tokenizer = self._local_tokenizer("score")
        pairs = [
            (
                chat_prompt_ids(tokenizer, messages),
                tokenizer(continuation, add_special_tokens=False)["input_ids"],
            )
            for messages, continuation in zip(prompts, continuations, strict=True)
        ]
        calls = [
            ("/completions", self._completions_payload(head + tail, logprobs=1, echo=True))
            for head, tail in pairs
        ]
        answers = self._run_scoring(calls, "score")
        return [
            self._echoed_logprobs(answer, len(head), len(tail))
            for answer, (head, tail) in zip(answers, pairs, strict=True)
        ]

    def _chat_logprobs_payload(self, messages: list[Message]) -> dict:
        return {
            "model": self.model_name,
            "messages": list(messages),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }

    def _completions_payload(self, token_ids: list[int], logprobs: int, echo: bool = False) -> dict:
        payload = {
            "model": self.model_name,
            "prompt": token_ids,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": logprobs,
        }
        if echo:
            payload["echo"] = True
        return payload

    def _run_scoring(self, calls: list[tuple[str, dict]], feature: str) -> list[dict]:
        """Completions with token-id prompts; a failure says which servers can do this at all."""
        try:
            return self._run(calls)
        except BackendUnavailable as error:  # ServerError included
            raise self._unsupported(feature, one_line(error)) from error

    def _unsupported(self, feature: str, reason: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"{feature} failed at {self.base_url} ({reason}); it needs /v1/completions to take token-id "
            f"prompts and return logprobs (with echo, for score): {SCORING_SERVERS}"
        )

    def _chat_top(self, answer: dict) -> list[tuple[str, float]]:
        content = (answer["choices"][0].get("logprobs") or {}).get("content") or []
        if not content or not content[0].get("top_logprobs"):
            raise BackendUnavailable(
                f"next_token_logprobs is not supported by the server at {self.base_url}: it returned no "
                "top_logprobs for a chat completion (vLLM serve and llama-cpp-python's server return them; "
                "transformers serve ignores the request for them)"
            )
        return [(entry["token"], entry["logprob"]) for entry in content[0]["top_logprobs"]]

    def _completions_top(self, answer: dict) -> list[tuple[str, float]]:
        tops = (answer["choices"][0].get("logprobs") or {}).get("top_logprobs") or []
        if not tops or not tops[0]:
            raise self._unsupported("next_token_logprobs with a prefix", "it returned no top_logprobs")
        return list(tops[0].items())

    def _echoed_logprobs(self, answer: dict, head: int, tail: int) -> list[float]:
        values = (answer["choices"][0].get("logprobs") or {}).get("token_logprobs") or []
        span = values[head : head + tail]
        if len(span) != tail or any(v is None for v in span):
            raise self._unsupported("score", "it did not echo the prompt's log-probs")
        return span

    # -- local prompt rendering ---------------------------------------------------------

    def _local_tokenizer(self, feature: str):
        if self._tokenizer is None:
            if self.tokenizer_name is None:
                raise BackendUnavailable(
                    f"{feature} needs tokenizer=<HF tokenizer name or path> on the openai backend, "
                    "to render the chat template locally for /v1/completions"
                )
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(resolve(self.tokenizer_name))
        return self._tokenizer

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.run(self._client.aclose())
        self._loop.stop()
        self._loop = None
