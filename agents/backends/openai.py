"""Any OpenAI-compatible server (``vllm serve``, ``transformers serve``, llama.cpp) behind the batched API.

Each sample is its own request (n=1, seeded ``sample_seed(seed, k)``), so every completion gets its
exact token count from ``usage``; a batch's requests run concurrently on a private event-loop
thread, at most ``concurrency`` in flight, so callers keep a plain synchronous call that also works
from inside their own event loop.

A plain request goes to ``/v1/chat/completions`` (the server renders the chat). A request with an
assistant prefix or ``logprobs`` goes to ``/v1/completions`` with a prompt rendered here by
``agents.chat.ChatRenderer`` over ``tokenizer`` — the renderer every backend uses — since chat
APIs cannot continue a partial assistant turn portably. Token ids are the server's when it
reports them (vLLM's ``token_id:N``), else the local tokenizer's ids of each reported token, else a
local encoding of the text. Finish reasons: servers say "stop" for EOS and stop strings alike;
vLLM's ``stop_reason`` or a stop string left in the text tells them apart, and a server that does
neither (llama-cpp-python) needs ``local_stop=True`` (stop strings are then cut here).

Log-probs are only reported when the server really returns them; ``score`` needs token-id prompts
with ``echo`` (vLLM serve). Where a server lacks a feature we raise BackendUnavailable, never guess.
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
from agents.chat import ChatRenderer
from agents.registry import resolve
from agents.seeding import sample_seed

TOP_LOGPROBS = 20  # the most the OpenAI API lets a request ask for
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 10.0
SCORING_SERVERS = (
    "vLLM serve does; llama-cpp-python's server takes text prompts only and transformers serve ignores "
    "echo/logprobs"
)
TOKEN_ID_MARK = "token_id:"  # vLLM's spelling of a token under --return-tokens-as-token-ids


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
        local_stop: bool = False,
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
        self.local_stop = local_stop
        self._tokenizer = None
        self._chat_renderer: ChatRenderer | None = None
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
        answers = self._run([self._generation_call(req, sample) for req, sample in rows])
        completions = [self._completion(answer, req) for (req, _), answer in zip(rows, answers, strict=True)]
        flat = iter(completions)
        out = [[next(flat) for _ in range(req.n)] for req in requests]
        self.stats.calls += len(rows)  # one HTTP request per sample
        self.stats.requests += len(requests)
        self.stats.generated_tokens += sum(c.num_tokens for comps in out for c in comps)
        self.stats.seconds += time.perf_counter() - started
        return out

    def _generation_call(self, req: GenerationRequest, sample: int) -> tuple[str, dict]:
        payload = {
            "model": self.model_name,
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
        }
        if req.stop and not self.local_stop:
            payload["stop"] = list(req.stop)
        seed = sample_seed(req.seed, sample)
        if seed is not None:
            payload["seed"] = seed
        if not (req.prefix or req.logprobs):
            return "/chat/completions", {**payload, "messages": list(req.messages)}
        feature = "a request with an assistant prefix" if req.prefix else "a request with logprobs"
        payload["prompt"] = self._renderer(feature).prompt_text(req.messages, req.prefix)
        if req.logprobs:
            payload["logprobs"] = 1  # the sampled token's own log-prob comes with any top-k
        return "/completions", payload

    def _completion(self, answer: dict, req: GenerationRequest) -> Completion:
        choice = answer["choices"][0]
        num_tokens = (answer.get("usage") or {}).get("completion_tokens")
        if num_tokens is None:
            raise ServerError(f"{self.base_url} sent a completion without usage.completion_tokens")
        raw = choice["text"] if "text" in choice else (choice.get("message") or {}).get("content") or ""
        text, stop_string = truncate_at_stop(raw, req.stop)
        finish = self._finish_reason(choice, req, stop_string)
        if finish == "stop" and stop_string is None:
            stop_string = choice["stop_reason"]  # the server cut it: vLLM says which
        ended = text + (stop_string or "")  # what the token ids spell: the text and the stop string
        pieces = self._reported_tokens(choice, req)
        if pieces is not None:
            token_ids, logprobs = self._through(pieces, len(ended))
        else:  # the server reported no tokens: the local tokenizer's encoding (empty without one)
            renderer = self._renderer("token ids") if self.tokenizer_name is not None else None
            token_ids, logprobs = (tuple(renderer.encode(ended)) if renderer else ()), None
        return Completion(text=text, token_ids=token_ids, finish_reason=finish, stop_string=stop_string,
                          logprobs=logprobs, generated=num_tokens)

    def _finish_reason(self, choice: dict, req: GenerationRequest, stop_string: str | None) -> str:
        if stop_string is not None:
            return "stop"
        reported = choice.get("stop_reason")
        if isinstance(reported, str) and reported in req.stop:
            return "stop"
        if choice.get("finish_reason") == "length":
            return "length"
        if req.stop and not self.local_stop and "stop_reason" not in choice:
            raise BackendUnavailable(
                f"the server at {self.base_url} cut a stop string or met EOS and did not say which (no stop_reason, "
                "stop string not kept in the text): set local_stop=true on the openai backend to cut stop "
                "strings here"
            )
        return "eos"

    def _reported_tokens(self, choice: dict, req: GenerationRequest) -> list[tuple[int, str, float]] | None:
        """(id, text, log-prob) of each token the server reports, or None when it was not asked to."""
        if not req.logprobs:
            return None
        reported = choice.get("logprobs") or {}
        strings, values = reported.get("tokens"), reported.get("token_logprobs")
        if not strings or values is None or len(values) != len(strings) or any(v is None for v in values):
            raise BackendUnavailable(
                f"logprobs are not supported by the server at {self.base_url}: its /v1/completions answer has no "
                "logprobs.tokens/token_logprobs (vLLM serve and llama-cpp-python's server return them; "
                "transformers serve ignores the request for them)"
            )
        return [(self._token_id(piece), self._piece_text(piece), value) for piece, value in zip(strings, values)]

    def _token_id(self, piece: str) -> int:
        if piece.startswith(TOKEN_ID_MARK) and piece[len(TOKEN_ID_MARK) :].isdigit():
            return int(piece[len(TOKEN_ID_MARK) :])
        ids = self._tokenizer.encode(piece, add_special_tokens=False)
        if len(ids) != 1:
            raise ServerError(
                f"the server at {self.base_url} reported the token {piece!r}, which the local tokenizer "
                f"{self.tokenizer_name} does not spell as one token: is it the served model's tokenizer?"
            )
        return ids[0]

    def _piece_text(self, piece: str) -> str:
        if piece.startswith(TOKEN_ID_MARK) and piece[len(TOKEN_ID_MARK) :].isdigit():
            return self._tokenizer.decode([int(piece[len(TOKEN_ID_MARK) :])])
        return piece

    @staticmethod
    def _through(pieces: list[tuple[int, str, float]], length: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The reported tokens up to the one that reaches ``length`` characters (text + stop string)."""
        covered, keep = 0, len(pieces)
        for k, (_, piece, _) in enumerate(pieces):
            if covered >= length:
                keep = k
                break
            covered += len(piece)
        return tuple(p[0] for p in pieces[:keep]), tuple(p[2] for p in pieces[:keep])

    # -- log-probs ----------------------------------------------------------------------

    def next_token_logprobs(
        self, prompts: list[list[Message]], candidates: list[str], prefix: str = ""
    ) -> list[dict[str, float]]:
        if prefix:
            # Chat APIs cannot continue a partial assistant message portably: render it here instead.
            feature = "next_token_logprobs with a prefix"
            renderer = self._renderer(feature)
            calls = [
                ("/completions", self._completions_payload(renderer.prompt_text(messages, prefix), TOP_LOGPROBS))
                for messages in prompts
            ]
            answers = self._run_scoring(calls, feature)
            tops = [self._completions_top(answer) for answer in answers]
        else:
            calls = [("/chat/completions", self._chat_logprobs_payload(messages)) for messages in prompts]
            tops = [self._chat_top(answer) for answer in self._run(calls)]
        return [candidate_logprobs(top, candidates) for top in tops]

    def score(
        self,
        prompts: list[list[Message]],
        continuations: list[str],
        prefixes: list[str] | None = None,
        end_of_turn: bool = True,
    ) -> list[list[float]]:
        renderer = self._renderer("score")
        prefixes = [""] * len(prompts) if prefixes is None else prefixes
        pairs = [
            renderer.split(messages, continuation, prefix, end_of_turn)
            for messages, continuation, prefix in zip(prompts, continuations, prefixes, strict=True)
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

    def _completions_payload(self, prompt: str | list[int], logprobs: int, echo: bool = False) -> dict:
        payload = {
            "model": self.model_name,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": logprobs,
        }
        if echo:
            payload["echo"] = True
        return payload

    def _run_scoring(self, calls: list[tuple[str, dict]], feature: str) -> list[dict]:
        """Completions that need log-probs; a failure says which servers can do this at all."""
        try:
            return self._run(calls)
        except BackendUnavailable as error:  # ServerError included
            raise self._unsupported(feature, one_line(error)) from error

    def _unsupported(self, feature: str, reason: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"{feature} failed at {self.base_url} ({reason}); it needs /v1/completions to return logprobs "
            f"(and, for score, to take token-id prompts with echo): {SCORING_SERVERS}"
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

    def _renderer(self, feature: str) -> ChatRenderer:
        if self._chat_renderer is None:
            if self.tokenizer_name is None:
                raise BackendUnavailable(
                    f"{feature} needs tokenizer=<HF tokenizer name or path> on the openai backend, "
                    "to render the chat template locally for /v1/completions"
                )
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(resolve(self.tokenizer_name))
            self._chat_renderer = ChatRenderer(self._tokenizer)
        return self._chat_renderer

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.run(self._client.aclose())
        self._loop.stop()
        self._loop = None
