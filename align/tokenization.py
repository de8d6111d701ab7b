"""Pairs and SFT examples to token ids through the one chat renderer, with truncation that keeps
the completions' start.

Everything renders through `agents.chat.ChatRenderer`, exactly as the backends do, so a
completion's tokens here are the tokens a backend scores (`Backend.score` sums to the trainer's
policy log-prob). A completion is whatever the template adds after the generation prompt (and
an optional assistant `prefix`): a full reply ends with the template's end-of-turn tokens (the
model learns to stop); step-level data (one reasoning step, the reply goes on) passes
`end_of_turn=False` and the text simply continues the partial assistant turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agents.chat import ChatRenderer
from align.errors import DataError
from formats.rows import PreferencePair, SFTConversation, SFTExample


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    weight: float = 1.0
    label_smoothing: float | None = None  # None: the config's
    # Tokens can merge across the prompt/reply boundary differently for the two replies (a
    # prefix ending mid-word): then the rejected row has its own prompt ids. None: the same.
    rejected_prompt_ids: list[int] | None = None

    def rows(self) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
        """(prompt ids, completion ids) of the chosen row, then of the rejected row."""
        rejected_prompt = self.prompt_ids if self.rejected_prompt_ids is None else self.rejected_prompt_ids
        return (self.prompt_ids, self.chosen_ids), (rejected_prompt, self.rejected_ids)

    @property
    def length(self) -> int:
        """Tokens of the longer of the two sequences (prompt + completion)."""
        return max(len(prompt) + len(completion) for prompt, completion in self.rows())


@dataclass(frozen=True)
class TokenizedExample:
    """One SFT sequence: ids, and 1 where a token is learned (assistant tokens), 0 elsewhere."""

    input_ids: list[int]
    loss_mask: list[int]

    @property
    def length(self) -> int:
        return len(self.input_ids)


def renderer_for(tokenizer) -> ChatRenderer:
    try:
        return ChatRenderer(tokenizer)
    except ValueError as error:  # no chat template: the user chose a base model
        raise DataError(str(error)) from None


# -- preference pairs -----------------------------------------------------------------------


def tokenize_pairs(
    pairs: Iterable[PreferencePair], tokenizer, max_length: int, end_of_turn: bool = True
) -> list[TokenizedPair]:
    renderer = renderer_for(tokenizer)
    return [
        tokenize_pair(
            pair.messages("prompt"),
            pair.chosen[0].content,
            pair.rejected[0].content,
            renderer,
            max_length,
            weight=pair.weight,
            label_smoothing=pair.label_smoothing,
            end_of_turn=end_of_turn,
        )
        for pair in pairs
    ]


def tokenize_pair(
    prompt: list[dict],
    chosen: str,
    rejected: str,
    renderer: ChatRenderer,
    max_length: int,
    weight: float = 1.0,
    end_of_turn: bool = True,
    prefix: str = "",
    label_smoothing: float | None = None,
) -> TokenizedPair:
    """`chosen` and `rejected` continue `prompt` (+ the assistant `prefix`), each split as a backend would."""
    chosen_prompt, chosen_ids = renderer.split(prompt, chosen, prefix, end_of_turn)
    rejected_prompt, rejected_ids = renderer.split(prompt, rejected, prefix, end_of_turn)
    own_prompt = None if rejected_prompt == chosen_prompt else rejected_prompt
    pair = TokenizedPair(chosen_prompt, chosen_ids, rejected_ids, weight, label_smoothing, own_prompt)
    return truncate(pair, max_length)


def truncate(pair: TokenizedPair, max_length: int) -> TokenizedPair:
    """Cut the prompt from the left first, then the completions from the right.

    The prompt keeps at least half the budget (or all of itself, if shorter), so a long reply
    cannot erase the question it answers.
    """
    if pair.length <= max_length:
        return pair
    longest = max(len(pair.chosen_ids), len(pair.rejected_ids))
    (prompt, chosen), (rejected_prompt, rejected) = [
        _cut(prompt, completion, longest, max_length) for prompt, completion in pair.rows()
    ]
    return TokenizedPair(
        prompt,
        chosen,
        rejected,
        pair.weight,
        pair.label_smoothing,
        None if pair.rejected_prompt_ids is None else rejected_prompt,
    )


# -- SFT --------------------------------------------------------------------------------------


def tokenize_sft(
    examples: Iterable[SFTExample | SFTConversation], tokenizer, max_length: int
) -> list[TokenizedExample]:
    renderer = renderer_for(tokenizer)
    tokenized = []
    for number, example in enumerate(examples, start=1):
        messages, trained = example.conversation()
        try:
            tokenized.append(tokenize_conversation(messages, trained, renderer, max_length))
        except ValueError as error:
            raise DataError(f"example {number}: {error}") from None
    return tokenized


def tokenize_conversation(
    messages: Sequence[dict], trained: Sequence[bool], renderer: ChatRenderer, max_length: int
) -> TokenizedExample:
    """The whole conversation's ids, with the loss on the tokens of each trained (assistant) message.

    Each trained message is split from the conversation before it exactly like a prompt and its
    completion (so a one-turn example tokenizes as a pair's chosen row does); the conversation
    up to a turn must render as a prefix of the conversation that goes on after it.
    """
    last = max(i for i, learn in enumerate(trained) if learn)  # later messages carry no loss: dropped
    prompt, completion = renderer.split(messages[:last], messages[last]["content"])
    input_ids = prompt + completion
    loss_mask = [0] * len(prompt) + [1] * len(completion)
    for i in (i for i in range(last) if trained[i]):
        before, turn = renderer.split(messages[:i], messages[i]["content"])
        end = len(before) + len(turn)
        if input_ids[:end] != before + turn:
            raise ValueError(
                "the chat template renders an earlier turn differently once the conversation goes on; "
                "give this example as prompt/completion"
            )
        loss_mask[len(before) : end] = [1] * len(turn)
    return truncate_example(TokenizedExample(input_ids, loss_mask), max_length)


def truncate_example(example: TokenizedExample, max_length: int) -> TokenizedExample:
    """As for pairs: the tokens before the first learned one are the prompt, cut from the left first."""
    if example.length <= max_length:
        return example
    start = example.loss_mask.index(1)
    keep = _prompt_budget(start, example.length - start, max_length)
    window = slice(start - keep, start + max_length - keep)
    return TokenizedExample(example.input_ids[window], example.loss_mask[window])


def _cut(
    prompt: list[int], completion: list[int], longest: int, max_length: int
) -> tuple[list[int], list[int]]:
    keep = _prompt_budget(len(prompt), longest, max_length)
    return prompt[len(prompt) - keep :], completion[: max_length - keep]


def _prompt_budget(prompt_length: int, longest_completion: int, max_length: int) -> int:
    """Prompt tokens kept: what the longest completion leaves, but at least half the budget."""
    return min(prompt_length, max(max_length - longest_completion, max_length // 2))
