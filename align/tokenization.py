"""Chat-template tokenization of preference pairs, with truncation that keeps the completions' start.

The completion is whatever the template adds after the generation prompt, so a full reply
ends with the template's end-of-turn tokens (the model learns to stop). Step-level data (one
reasoning step, the reply goes on) must not end the turn: `end_of_turn=False` renders the last
message as an unfinished one instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from align.data import PreferencePair
from align.errors import DataError


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    weight: float = 1.0

    @property
    def length(self) -> int:
        """Tokens of the longer of the two sequences (prompt + completion)."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def tokenize_pairs(
    pairs: Iterable[PreferencePair], tokenizer, max_length: int, end_of_turn: bool = True
) -> list[TokenizedPair]:
    if not tokenizer.chat_template:
        raise DataError(
            f"{tokenizer.name_or_path}: the tokenizer has no chat template; "
            "conversational pairs need a chat (instruct) model"
        )
    return [
        tokenize_pair(
            pair.messages("prompt"),
            pair.messages("chosen"),
            pair.messages("rejected"),
            tokenizer,
            max_length,
            weight=pair.weight,
            end_of_turn=end_of_turn,
        )
        for pair in pairs
    ]


def tokenize_pair(
    prompt: list[dict],
    chosen: list[dict],
    rejected: list[dict],
    tokenizer,
    max_length: int,
    weight: float = 1.0,
    end_of_turn: bool = True,
) -> TokenizedPair:
    prompt_ids = _render(tokenizer, prompt, add_generation_prompt=True)
    chosen_full = _render(tokenizer, prompt + chosen, continue_final_message=not end_of_turn)
    rejected_full = _render(tokenizer, prompt + rejected, continue_final_message=not end_of_turn)
    # Tokens can merge across the prompt/reply boundary; the completion starts where they diverge.
    cut = min(_common_prefix(prompt_ids, chosen_full), _common_prefix(prompt_ids, rejected_full))
    return truncate(
        TokenizedPair(prompt_ids[:cut], chosen_full[cut:], rejected_full[cut:], weight), max_length
    )


def truncate(pair: TokenizedPair, max_length: int) -> TokenizedPair:
    """Cut the prompt from the left first, then the completions from the right.

    The prompt keeps at least half the budget (or all of itself, if shorter), so a long reply
    cannot erase the question it answers.
    """
    if pair.length <= max_length:
        return pair
    prompt = pair.prompt_ids
    longest = max(len(pair.chosen_ids), len(pair.rejected_ids))
    keep = min(len(prompt), max(max_length - longest, max_length // 2))
    room = max_length - keep
    return TokenizedPair(
        prompt[len(prompt) - keep :], pair.chosen_ids[:room], pair.rejected_ids[:room], pair.weight
    )


def _render(tokenizer, messages: list[dict], **template_options) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **template_options)
    return list(encoded["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length
