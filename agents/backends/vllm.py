"""In-process vLLM engine (GPU, optional extra): a whole batch goes to the engine in one call.

vLLM batches and schedules internally (continuous batching, prefix caching), so unlike the hf
backend we never chunk: one ``LLM.generate`` call carries every sample of every request. Prompts
are token ids rendered by ``agents.chat.ChatRenderer`` (so a prefix continues the open assistant
turn, exactly as the hf backend and the trainer render it), and each sample is its own n=1 prompt
seeded ``sample_seed(seed, k)`` — prefix caching makes the repeated prompt cheap. The translations
GenerationRequest -> SamplingParams and vLLM's output fields -> Completion are pure functions, so
they are tested on machines without vLLM.
"""

from __future__ import annotations

import gc
import time

from agents.backends.base import Backend, BackendUnavailable, Completion, GenerationRequest, Message
from agents.backends.openai import TOP_LOGPROBS, candidate_logprobs
from agents.chat import ChatRenderer
from agents.registry import resolve
from agents.seeding import sample_seed

INSTALL_HINT = "the vllm backend needs the optional extra: pip install 'socialign[vllm]' (needs a GPU)"


def sampling_kwargs(request: GenerationRequest, sample: int = 0) -> dict:
    """Keyword arguments for ``vllm.SamplingParams`` for sample ``sample`` of ``request``.

    ``logprobs=0`` asks for the sampled token's own log-prob only; vLLM reports it from the raw
    model logits (its default ``logprobs_mode``), before temperature, as the contract wants.
    ``skip_special_tokens=False`` keeps the text raw, as the other backends return it.
    """
    kwargs = {
        "n": 1,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_new_tokens,
        "seed": sample_seed(request.seed, sample),
        "skip_special_tokens": False,
    }
    if request.stop:
        kwargs["stop"] = list(request.stop)
    if request.logprobs:
        kwargs["logprobs"] = 0
    return kwargs


def completion_from_output(
    text: str,
    token_ids: list[int],
    finish_reason: str | None,
    stop_reason: str | int | None,
    logprobs: list[float] | None,
    eos_id: int | None,
) -> Completion:
    """A Completion from a ``vllm.CompletionOutput``'s fields.

    vLLM already cuts the stop string out of ``text`` and keeps the tokens that spelled it;
    ``stop_reason`` is the stop string, None at the tokenizer's EOS, or the id of another end
    token (the generation config's extra EOS ids, which vLLM stops on as stop tokens). It leaves
    that end token in ``token_ids``; the contract excludes it.
    """
    ids = list(token_ids)
    if finish_reason == "length":
        finish, stop_string = "length", None
    elif isinstance(stop_reason, str):
        finish, stop_string = "stop", stop_reason
    else:
        finish, stop_string = "eos", None
        if ids and ids[-1] == (eos_id if stop_reason is None else stop_reason):
            ids.pop()
    kept = None if logprobs is None else tuple(logprobs[: len(ids)])
    return Completion(text=text, token_ids=tuple(ids), finish_reason=finish, stop_string=stop_string, logprobs=kept)


class VLLMBackend(Backend):
    def __init__(self, model: str, **engine_kwargs) -> None:
        super().__init__()
        try:
            import vllm
        except ImportError as missing:
            raise BackendUnavailable(INSTALL_HINT) from missing
        self.model_name = model
        self._sampling_params = vllm.SamplingParams
        self.llm = vllm.LLM(model=resolve(model), **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.renderer = ChatRenderer(self.tokenizer)

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        started = time.perf_counter()
        rows = [(request, sample) for request in requests for sample in range(request.n)]
        outputs = self.llm.generate(
            [{"prompt_token_ids": self.renderer.prompt_ids(r.messages, r.prefix)} for r, _ in rows],
            sampling_params=[self._sampling_params(**sampling_kwargs(r, k)) for r, k in rows],
            use_tqdm=False,
        )
        flat = iter(self._completion(output.outputs[0], request) for output, (request, _) in zip(outputs, rows))
        out = [[next(flat) for _ in range(request.n)] for request in requests]
        self.stats.calls += 1
        self.stats.requests += len(requests)
        self.stats.generated_tokens += sum(c.num_tokens for comps in out for c in comps)
        self.stats.seconds += time.perf_counter() - started
        return out

    def _completion(self, sample, request: GenerationRequest) -> Completion:
        chosen = None
        if request.logprobs:  # one {token id: Logprob} per generated token, the sampled id among them
            chosen = [step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)]
        return completion_from_output(
            sample.text, list(sample.token_ids), sample.finish_reason, sample.stop_reason, chosen, self.tokenizer.eos_token_id
        )

    def score(
        self,
        prompts: list[list[Message]],
        continuations: list[str],
        prefixes: list[str] | None = None,
        end_of_turn: bool = True,
    ) -> list[list[float]]:
        prefixes = [""] * len(prompts) if prefixes is None else prefixes
        pairs = [
            self.renderer.split(messages, text, prefix, end_of_turn)
            for messages, text, prefix in zip(prompts, continuations, prefixes, strict=True)
        ]
        sequences = [head + tail for head, tail in pairs]
        # prompt_logprobs always include each prompt token's own log-prob, whatever the top-k.
        params = self._sampling_params(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate([{"prompt_token_ids": seq} for seq in sequences], params, use_tqdm=False)
        return [
            [output.prompt_logprobs[k][seq[k]].logprob for k in range(len(head), len(seq))]
            for output, seq, (head, _) in zip(outputs, sequences, pairs, strict=True)
        ]

    def next_token_logprobs(
        self, prompts: list[list[Message]], candidates: list[str], prefix: str = ""
    ) -> list[dict[str, float]]:
        sequences = [self.renderer.prompt_ids(messages, prefix) for messages in prompts]
        params = self._sampling_params(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        outputs = self.llm.generate([{"prompt_token_ids": seq} for seq in sequences], params, use_tqdm=False)
        return [
            candidate_logprobs(
                [(lp.decoded_token, lp.logprob) for lp in output.outputs[0].logprobs[0].values()], candidates
            )
            for output in outputs
        ]

    def close(self) -> None:
        # vLLM frees the engine's GPU memory once the last reference is gone.
        self.llm = None
        gc.collect()
