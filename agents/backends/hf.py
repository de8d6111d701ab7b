"""In-process transformers backend: left-padded batches, chunked by a token budget.

Requests are expanded to one row per sample, grouped by sampling settings (``generate``
takes one temperature per call), sorted by prompt length so chunks pad little, and cut into
chunks whose rows x (prompt + new tokens) stay under ``max_batch_tokens``.
"""

from __future__ import annotations

import hashlib
import time
from itertools import groupby

import torch

from agents.backends.base import Backend, Completion, GenerationRequest, Message, truncate_at_stop
from agents.registry import resolve


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model_and_tokenizer(
    name: str, device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False
):
    """Load a causal LM and its tokenizer by alias, path or hub id (bf16 on GPU, fp32 on CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    path = resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    return model.to(device), tokenizer


def _chunk_seed(rows: list[tuple[int, int, GenerationRequest]]) -> int:
    """A deterministic seed for one generate call from its rows' seeds and sample indices."""
    material = ",".join(f"{req.seed}:{sample}" for _, sample, req in rows)
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "little") & (2**63 - 1)


class HFBackend(Backend):
    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_tokens: int = 16384,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.model_name = model
        self.model, self.tokenizer = load_model_and_tokenizer(model, device, dtype, trust_remote_code)
        self.model.eval()
        self.device = self.model.device
        self.max_batch_tokens = max_batch_tokens

    # -- prompt rendering ---------------------------------------------------------------

    def render(self, messages: list[Message] | tuple[Message, ...]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def _prompt_ids(self, messages) -> list[int]:
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

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

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        started = time.perf_counter()
        prompt_ids = [self._prompt_ids(r.messages) for r in requests]
        rows = [(i, sample, req) for i, req in enumerate(requests) for sample in range(req.n)]
        results: dict[int, list[Completion | None]] = {i: [None] * r.n for i, r in enumerate(requests)}

        def settings(row):
            req = row[2]
            return (req.temperature, req.top_p, req.max_new_tokens, tuple(req.stop))

        calls = 0
        for key, group in groupby(sorted(rows, key=settings), key=settings):
            group_rows = sorted(group, key=lambda row: len(prompt_ids[row[0]]))
            max_new = key[2]
            for chunk in self._chunks(group_rows, lambda row: len(prompt_ids[row[0]]) + max_new):
                for (i, sample, _), completion in zip(chunk, self._generate_chunk(chunk, prompt_ids, key)):
                    results[i][sample] = completion
                calls += 1

        out = [list(results[i]) for i in range(len(requests))]
        self.stats.calls += calls
        self.stats.requests += len(requests)
        self.stats.generated_tokens += sum(c.num_tokens for comps in out for c in comps)
        self.stats.seconds += time.perf_counter() - started
        return out

    @torch.inference_mode()
    def _generate_chunk(self, chunk, prompt_ids, key) -> list[Completion]:
        temperature, top_p, max_new_tokens, stop = key
        ids, mask = self._left_pad([prompt_ids[i] for i, _, _ in chunk])
        kwargs = dict(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(_chunk_seed(chunk))
            output = self.model.generate(**kwargs)
        new_tokens = output[:, ids.shape[1] :].tolist()
        return [self._completion(tokens, stop) for tokens in new_tokens]

    def _completion(self, tokens: list[int], stop: tuple[str, ...]) -> Completion:
        eos_ids = self._eos_ids()
        length = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
        ended = length is not None
        kept = tokens[:length] if ended else tokens
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, hit_stop = truncate_at_stop(text, stop)
        count = len(kept) + (1 if ended else 0)
        return Completion(text=text.strip(), num_tokens=count, finish_reason="stop" if ended or hit_stop else "length")

    def _eos_ids(self) -> set[int]:
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        ids.add(self.tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    # -- scoring ------------------------------------------------------------------------

    @torch.inference_mode()
    def score(self, prompts: list[list[Message]], continuations: list[str]) -> list[list[float]]:
        pairs = []
        for index, (messages, continuation) in enumerate(zip(prompts, continuations, strict=True)):
            head = self._prompt_ids(messages)
            tail = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
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
        encoded = [
            (i, self.tokenizer(self.render(m) + prefix, add_special_tokens=False)["input_ids"])
            for i, m in enumerate(prompts)
        ]
        found: dict[int, dict[str, float]] = {}
        for chunk in self._chunks(sorted(encoded, key=lambda e: len(e[1])), lambda e: len(e[1])):
            ids, mask = self._left_pad([seq for _, seq in chunk])
            last = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits[:, -1].float(), dim=-1)
            for row, (index, _) in enumerate(chunk):
                found[index] = {
                    c: torch.logsumexp(last[row, token_ids], dim=0).item() for c, token_ids in candidate_ids.items()
                }
        return [found[i] for i in range(len(prompts))]

    def _first_token_ids(self, candidate: str) -> list[int]:
        """Token ids that start ``candidate`` with or without a leading space (deduplicated)."""
        ids = set()
        for variant in (candidate, " " + candidate):
            tokens = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
            if tokens:
                ids.add(tokens[0])
        return sorted(ids)
