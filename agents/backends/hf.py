"""In-process transformers backend: left-padded batches, chunked by a token budget.

Requests are expanded to one row per sample, sorted by prompt length so chunks pad little,
and cut into chunks whose rows x (prompt + new tokens) stay under ``max_batch_tokens``. Rows
with different sampling settings share a call (see ``RowSampler``); rows with the same prompt
share one prompt pass (``_prefill_shared``). Prompts, prefixes and scored
continuations are rendered by ``agents.chat.ChatRenderer``, the renderer the trainer uses.
"""

from __future__ import annotations

import inspect
import time

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from agents.backends.base import Backend, Completion, GenerationRequest, Message, one_line, truncate_at_stop
from agents.chat import ChatRenderer
from agents.registry import ModelNotAvailable, check_model, resolve
from agents.seeding import sample_seed


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model_and_tokenizer(
    name: str, device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False
):
    """Load a causal LM and its tokenizer by alias, path or hub id (bf16 on GPU, fp32 on CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    check_model(name)
    path = resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # what transformers raises for a missing or malformed model
        raise ModelNotAvailable(f"cannot load model '{name}': {one_line(error) or type(error).__name__}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def sample_nucleus(logits: torch.Tensor, temperatures: torch.Tensor, top_ps: torch.Tensor,
                   generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row from softmax(logits / T) restricted to the row's top-p nucleus, vectorised.

    No per-row sort: draw by inverse CDF in vocabulary order, then reject a token outside the
    nucleus (token i is inside when the tokens more probable than i hold less than top_p of the
    mass, so the top token always is) and draw again. Accepted draws follow the renormalised
    nucleus distribution exactly; a draw is accepted with probability >= top_p. Each row takes
    its uniforms from its own generator, so its token does not depend on the rest of the batch.
    """
    probs = torch.softmax(logits / temperatures[:, None], dim=-1)
    cdf = probs.cumsum(-1)
    chosen = torch.empty(len(probs), dtype=torch.long)
    pending = torch.arange(len(probs))
    while len(pending):
        first = len(pending) == len(probs)  # the first draw of every row: no row copies needed
        rows_cdf, rows = (cdf, probs) if first else (cdf[pending], probs[pending])
        uniforms = torch.tensor([float(torch.rand((), dtype=torch.float64, generator=generators[row]))
                                 for row in pending.tolist()], dtype=torch.float32)
        draws = torch.searchsorted(rows_cdf, (uniforms * rows_cdf[:, -1])[:, None], right=True).squeeze(-1)
        draws = draws.clamp_(max=probs.shape[1] - 1)
        accepted = top_ps[pending] >= 1.0
        check = (~accepted).nonzero().squeeze(-1)
        if len(check):  # rows with top_p < 1: is the drawn token inside the nucleus?
            nucleus = rows if len(check) == len(rows) else rows[check]
            drawn = nucleus.gather(-1, draws[check, None])
            accepted[check] = torch.where(nucleus > drawn, nucleus, 0.0).sum(-1) < top_ps[pending[check]]
        chosen[pending[accepted]] = draws[accepted]
        pending = pending[~accepted]
    return chosen


class RowSampler(LogitsProcessor):
    """Per-row sampling inside one ``generate`` call.

    ``generate`` takes one temperature, top_p and budget per call, which would split a
    simulation phase (agents with different personas sample differently) into many small
    calls. This processor samples every row at once (``sample_nucleus``) — each with its own
    temperature, top_p, token budget, stop strings and seeded generator — and returns scores
    that make greedy decoding pick the sampled token. Because each row has its own generator,
    a seeded request gets the same tokens whatever else shares its batch. Rows that asked for
    log-probs get, per step, the sampled token's log-prob under the raw model logits it
    already holds (one log_softmax).
    """

    def __init__(self, rows: list[tuple[GenerationRequest, int]], prompt_width: int, eos_id: int, decode) -> None:
        self.prompt_width = prompt_width
        self.eos_id = eos_id
        self.decode = decode
        self.requests = [request for request, _ in rows]
        self.generators = []
        for request, sample in rows:
            seed = sample_seed(request.seed, sample)
            self.generators.append(torch.Generator().manual_seed(seed) if seed is not None else None)
        self.temperatures = torch.tensor([request.temperature for request in self.requests], dtype=torch.float32)
        self.top_ps = torch.tensor([request.top_p for request in self.requests], dtype=torch.float32)
        self.stopped_by_string: set[int] = set()
        self.logprob_rows = torch.tensor([row for row, request in enumerate(self.requests) if request.logprobs])
        self.logprobs: list[list[float]] = [[] for _ in rows]  # per row, one value per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_width
        chosen = torch.full((scores.shape[0],), self.eos_id, dtype=torch.long)
        logits = scores.float().cpu()
        live = [row for row, request in enumerate(self.requests)
                if step < request.max_new_tokens
                and not (request.stop and self._hit_stop(input_ids[row, self.prompt_width :], row))]
        greedy = [row for row in live if self.requests[row].temperature == 0]
        sampled = [row for row in live if self.requests[row].temperature > 0]
        if greedy:
            chosen[greedy] = logits[greedy].argmax(-1)
        if len(sampled) == len(self.requests):  # every row samples: no row copies
            chosen = sample_nucleus(logits, self.temperatures, self.top_ps, self.generators)
        elif sampled:
            chosen[sampled] = sample_nucleus(logits[sampled], self.temperatures[sampled], self.top_ps[sampled],
                                             [self.generators[row] for row in sampled])
        if len(self.logprob_rows):
            picked = chosen[self.logprob_rows, None]
            values = torch.log_softmax(logits[self.logprob_rows], dim=-1).gather(-1, picked).squeeze(-1)
            for row, value in zip(self.logprob_rows.tolist(), values.tolist()):
                self.logprobs[row].append(value)
        forced = torch.full_like(scores, float("-inf"))
        forced[torch.arange(scores.shape[0]), chosen.to(scores.device)] = 0.0
        return forced

    def _hit_stop(self, generated: torch.Tensor, row: int) -> bool:
        if row in self.stopped_by_string:
            return True
        window = max(len(s) for s in self.requests[row].stop) + 8
        tail = self.decode(generated[-window:].tolist())
        if any(s and s in tail for s in self.requests[row].stop):
            self.stopped_by_string.add(row)
            return True
        return False


class _StepProgress(BaseStreamer):
    """Advances a progress bar by one per decoding step (``generate`` puts the prompt first)."""

    def __init__(self, bar) -> None:
        self.bar, self.prompt_seen = bar, False

    def put(self, value) -> None:
        if self.prompt_seen:
            self.bar.update()
        self.prompt_seen = True

    def end(self) -> None:
        pass


class HFBackend(Backend):
    steps_progress = True

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_tokens: int = 16384,
        trust_remote_code: bool = False,
        share_prompts: bool = True,
    ) -> None:
        super().__init__()
        self.model_name = model
        self.model, self.tokenizer = load_model_and_tokenizer(model, device, dtype, trust_remote_code)
        try:
            self.renderer = ChatRenderer(self.tokenizer)
        except ValueError as error:
            raise ModelNotAvailable(f"model '{model}': {error}") from error
        self.model.eval()
        self.device = self.model.device
        # transformers 5.x renamed the forward's ``past_key_values`` to ``cache``.
        self.cache_argument = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.max_batch_tokens = max_batch_tokens
        self.share_prompts = share_prompts

    # -- tokens -------------------------------------------------------------------------

    def decode(self, token_ids: list[int]) -> str:
        """Raw text of ``token_ids``: special tokens and spacing kept, so text and ids agree."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _chunks(self, items: list, cost) -> list[list]:
        """Split items (already sorted by length) so each chunk's padded cost fits the budget."""
        chunks, current, widest = [], [], 0
        for item in items:
            widest_if_added = max(widest, cost(item))
            if current and widest_if_added * (len(current) + 1) > self.max_batch_tokens:
                chunks.append(current)
                current, widest_if_added = [], cost(item)
            current.append(item)
            widest = widest_if_added
        if current:
            chunks.append(current)
        return chunks

    # -- generation ---------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest], progress=None) -> list[list[Completion]]:
        """All requests, whatever their sampling settings, in as few calls as the budget allows.

        ``progress``: a tqdm bar to advance by one per decoding step of the whole call (its total
        is set here), for callers whose one call runs for minutes."""
        started = time.perf_counter()
        prompt_ids = self.renderer.prompt_ids_many([(r.messages, r.prefix) for r in requests])
        rows = sorted(
            ((i, sample) for i, request in enumerate(requests) for sample in range(request.n)),
            key=lambda row: len(prompt_ids[row[0]]),
        )
        results: dict[int, list[Completion | None]] = {i: [None] * r.n for i, r in enumerate(requests)}
        chunks = self._chunks(rows, lambda row: len(prompt_ids[row[0]]) + requests[row[0]].max_new_tokens)
        steps = [max(requests[i].max_new_tokens for i, _ in chunk) + 1 for chunk in chunks]  # as _generate_chunk
        if progress is not None:
            progress.reset(total=sum(steps))
        for done, chunk in enumerate(chunks):
            completions = self._generate_chunk([(requests[i], s) for i, s in chunk], [prompt_ids[i] for i, _ in chunk],
                                               _StepProgress(progress) if progress is not None else None)
            for (i, sample), completion in zip(chunk, completions):
                results[i][sample] = completion
            if progress is not None:  # a chunk whose rows all ended early skips its remaining steps
                progress.update(sum(steps[: done + 1]) - progress.n)
        out = [list(results[i]) for i in range(len(requests))]
        self.stats.calls += len(chunks)
        self.stats.requests += len(requests)
        self.stats.generated_tokens += sum(c.num_tokens for comps in out for c in comps)
        self.stats.seconds += time.perf_counter() - started
        return out

    def _prefill_shared(self, ids: torch.Tensor, mask: torch.Tensor) -> dict:
        """A KV cache of every prompt but its last token, computed once per distinct row.

        Rows with the same prompt (the n samples of a request, replicas asking the same thing)
        would each run the whole prompt through the model, and on CPU the prompt pass is about
        half of a generate call. Here each distinct prompt runs once, its cache is copied to the
        rows that share it, and ``generate`` (given the cache) only runs the last prompt token
        per row. Nothing to share: no cache, ``generate`` prefills as usual.
        """
        if not self.share_prompts or len(ids) < 2 or ids.shape[1] < 2:
            return {}
        distinct, row_of = torch.unique(torch.cat([ids, mask], dim=1), dim=0, return_inverse=True)
        if len(distinct) == len(ids):
            return {}
        width = ids.shape[1]
        distinct_ids, distinct_mask = distinct[:, :width], distinct[:, width:]
        positions = (distinct_mask.cumsum(-1) - 1).clamp_(min=0)
        cache = DynamicCache(config=self.model.config)
        self.model(input_ids=distinct_ids[:, :-1], attention_mask=distinct_mask[:, :-1],
                   position_ids=positions[:, :-1], use_cache=True, logits_to_keep=1, **{self.cache_argument: cache})
        cache.batch_select_indices(row_of.to(self.device))
        return {self.cache_argument: cache}

    @torch.inference_mode()
    def _generate_chunk(self, rows: list[tuple[GenerationRequest, int]], prompts: list[list[int]],
                        streamer: BaseStreamer | None = None) -> list[Completion]:
        ids, mask = self._left_pad(prompts)
        eos_id = self.tokenizer.eos_token_id
        sampler = RowSampler(rows, ids.shape[1], eos_id, self.decode)
        output = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            **self._prefill_shared(ids, mask),
            max_new_tokens=max(request.max_new_tokens for request, _ in rows) + 1,  # +1: room for a forced EOS
            streamer=streamer,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=LogitsProcessorList([sampler]),
            eos_token_id=eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = output[:, ids.shape[1] :].tolist()
        return [
            self._completion(tokens, request, sampler.logprobs[row] if request.logprobs else None)
            for row, (tokens, (request, _)) in enumerate(zip(new_tokens, rows))
        ]

    def _completion(self, tokens: list[int], request: GenerationRequest, logprobs: list[float] | None) -> Completion:
        """Tokens up to EOS (or the budget); the sampler forces EOS right after a stop string's last
        token, so the kept ids end with the stop string's tokens."""
        eos_ids = self._eos_ids()
        end = next((k for k, t in enumerate(tokens) if t in eos_ids), len(tokens))
        kept = tokens[: min(end, request.max_new_tokens)]
        text, stop_string = truncate_at_stop(self.decode(kept), request.stop)
        if stop_string is not None:
            finish = "stop"
        elif end < request.max_new_tokens:
            finish = "eos"
        else:
            finish = "length"
        return Completion(
            text=text,
            token_ids=tuple(kept),
            finish_reason=finish,
            stop_string=stop_string,
            logprobs=None if logprobs is None else tuple(logprobs[: len(kept)]),
        )

    def _eos_ids(self) -> set[int]:
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        ids.add(self.tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    # -- scoring ------------------------------------------------------------------------

    @torch.inference_mode()
    def score(
        self,
        prompts: list[list[Message]],
        continuations: list[str],
        prefixes: list[str] | None = None,
        end_of_turn: bool = True,
    ) -> list[list[float]]:
        prefixes = [""] * len(prompts) if prefixes is None else prefixes
        pairs = []
        for index, (messages, continuation, prefix) in enumerate(zip(prompts, continuations, prefixes, strict=True)):
            head, tail = self.renderer.split(messages, continuation, prefix, end_of_turn)
            pairs.append((index, head, tail))
        scores: dict[int, list[float]] = {}
        ordered = sorted(pairs, key=lambda p: len(p[1]) + len(p[2]))
        for chunk in self._chunks(ordered, lambda p: len(p[1]) + len(p[2])):
            for (index, _, _), values in zip(chunk, self._score_chunk(chunk)):
                scores[index] = values
        return [scores[i] for i in range(len(prompts))]

    def _score_chunk(self, chunk) -> list[list[float]]:
        sequences = [head + tail for _, head, tail in chunk]
        ids, mask = self._left_pad(sequences)
        logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        values = []
        for row, (_, _, tail) in enumerate(chunk):
            values.append(logprobs[row, logprobs.shape[1] - len(tail) :].tolist() if tail else [])
        return values

    @torch.inference_mode()
    def next_token_logprobs(
        self, prompts: list[list[Message]], candidates: list[str], prefix: str = ""
    ) -> list[dict[str, float]]:
        candidate_ids = {c: self._first_token_ids(c) for c in candidates}
        encoded = list(enumerate(self.renderer.prompt_ids_many([(m, prefix) for m in prompts])))
        found: dict[int, dict[str, float]] = {}
        for chunk in self._chunks(sorted(encoded, key=lambda e: len(e[1])), lambda e: len(e[1])):
            ids, mask = self._left_pad([seq for _, seq in chunk])
            # logits_to_keep=1: the LM head (vocab-sized) runs on the last position only.
            logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
            last = torch.log_softmax(logits.float(), dim=-1)
            per_candidate = {c: torch.logsumexp(last[:, token_ids], dim=1).tolist() for c, token_ids in candidate_ids.items()}
            for row, (index, _) in enumerate(chunk):
                found[index] = {c: values[row] for c, values in per_candidate.items()}
        return [found[i] for i in range(len(prompts))]

    def _first_token_ids(self, candidate: str) -> list[int]:
        """Token ids that start ``candidate`` with or without a leading space (deduplicated)."""
        ids = set()
        for variant in (candidate, " " + candidate):
            tokens = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
            if tokens:
                ids.add(tokens[0])
        return sorted(ids)
