"""In-process vLLM engine (GPU, optional extra): a whole batch goes to the engine in one call.

vLLM batches and schedules internally (continuous batching, prefix caching), so unlike the hf
backend we never chunk: one ``LLM.chat`` call carries every request, each with its own
SamplingParams. The GenerationRequest -> SamplingParams translation is a pure function so that it
is tested on machines without vLLM.
"""

from __future__ import annotations

import gc
import time

from agents.backends.base import Backend, BackendUnavailable, Completion, GenerationRequest, Message
from agents.backends.openai import TOP_LOGPROBS, candidate_logprobs, chat_prompt_ids
from agents.registry import resolve

INSTALL_HINT = "the vllm backend needs the optional extra: pip install 'socialign[vllm]' (needs a GPU)"


def sampling_kwargs(request: GenerationRequest) -> dict:
    """Keyword arguments for ``vllm.SamplingParams`` that sample ``request`` as every backend does."""
    kwargs = {
        "n": request.n,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_new_tokens,
        "seed": request.seed,
    }
    if request.stop:
        kwargs["stop"] = list(request.stop)
    return kwargs


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

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        started = time.perf_counter()
        outputs = self.llm.chat(
            [list(r.messages) for r in requests],
            sampling_params=[self._sampling_params(**sampling_kwargs(r)) for r in requests],
            use_tqdm=False,
        )
        out = [[self._completion(sample) for sample in output.outputs] for output in outputs]
        self.stats.calls += 1
        self.stats.requests += len(requests)
        self.stats.generated_tokens += sum(c.num_tokens for comps in out for c in comps)
        self.stats.seconds += time.perf_counter() - started
        return out

    @staticmethod
    def _completion(sample) -> Completion:
        # vLLM leaves stop strings out of the text already; "stop" covers EOS and stop strings.
        finish = "length" if sample.finish_reason == "length" else "stop"
        return Completion(text=sample.text, token_ids=tuple(sample.token_ids), finish_reason=finish)

    def score(self, prompts: list[list[Message]], continuations: list[str]) -> list[list[float]]:
        pairs = [
            (
                chat_prompt_ids(self.tokenizer, messages),
                self.tokenizer(text, add_special_tokens=False)["input_ids"],
            )
            for messages, text in zip(prompts, continuations, strict=True)
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
        sequences = [chat_prompt_ids(self.tokenizer, messages, prefix) for messages in prompts]
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
