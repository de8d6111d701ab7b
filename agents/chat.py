"""The one chat renderer: messages (and an optional assistant prefix) to text and token ids.

Every backend, judge and trainer renders through this, so the same conversation becomes the
same tokens everywhere — which is what makes a log-prob the ``hf`` backend scores equal the
trainer's policy log-prob for the same pair.

Rules:
- a prompt is the chat template with the generation prompt opened, then the assistant
  ``prefix`` appended verbatim (continuing a partial assistant turn opens no new turn, and
  keeps the prefix's trailing whitespace, which transformers' ``continue_final_message`` trims);
- a completion is whatever the full conversation adds after the prompt: with
  ``end_of_turn=True`` the template closes the assistant turn (the model learns to stop), with
  ``end_of_turn=False`` the text simply goes on (a reasoning step, no end-of-turn token);
- tokens can merge across the prompt/completion boundary, so the completion starts where the
  prompt's ids and the full ids diverge.
"""

from __future__ import annotations

from collections.abc import Sequence

Message = dict[str, str]


class ChatRenderer:
    def __init__(self, tokenizer) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: the tokenizer has no chat template; "
                "chat prompts need a chat (instruct) model"
            )
        self.tokenizer = tokenizer

    # -- text -----------------------------------------------------------------------------

    def prompt_text(self, messages: Sequence[Message], prefix: str = "") -> str:
        """The text a reply is generated after: the generation prompt, then ``prefix`` verbatim."""
        rendered = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return rendered + prefix

    def full_text(self, messages: Sequence[Message], completion: str, prefix: str = "", end_of_turn: bool = True) -> str:
        """Prompt, prefix and completion; with ``end_of_turn`` the template closes the assistant turn."""
        if not end_of_turn:
            return self.prompt_text(messages, prefix) + completion
        turn = {"role": "assistant", "content": prefix + completion}
        return self.tokenizer.apply_chat_template([*messages, turn], add_generation_prompt=False, tokenize=False)

    # -- token ids ------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Sequence[Message], prefix: str = "") -> list[int]:
        return self.encode(self.prompt_text(messages, prefix))

    def prompt_ids_many(self, conversations: Sequence[tuple[Sequence[Message], str]]) -> list[list[int]]:
        """``prompt_ids`` of many (messages, prefix) pairs with one tokenizer call (a phase's prompts)."""
        if not conversations:
            return []
        texts = [self.prompt_text(messages, prefix) for messages, prefix in conversations]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def split(
        self, messages: Sequence[Message], completion: str, prefix: str = "", end_of_turn: bool = True
    ) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) of one conversation, cut where the two renderings diverge."""
        prompt = self.prompt_ids(messages, prefix)
        full = self.encode(self.full_text(messages, completion, prefix, end_of_turn))
        cut = common_prefix(prompt, full)
        return full[:cut], full[cut:]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length
