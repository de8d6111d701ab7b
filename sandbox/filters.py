"""The meta-talk filter: answers that talk ABOUT an answer are not answers.

A small model asked to improve its answer often writes "Here's a revised answer: Dear Sarah,
..." or "This answer to your personal question is helpful, honest and harmless." Trained on,
such text teaches a model to comment on itself. `clean_answer` strips a leading wrapper when
the rest is the answer, drops sentences that only comment on the answer or the feedback, and
drops the answer when nothing of it is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER = r"(?:answer|response|reply|version|advice)"
_REVISED = r"(?:revised|improved|new|updated|better|rewritten|final|edited|corrected|modified|amended)"

# A wrapper that introduces the answer, ending in a colon or a line break: stripped.
LEADING_WRAPPERS = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"^(?:sure|certainly|of course|okay|ok)[,.!]?\s*(?=here)",
    rf"^(?:here(?:'s| is)|below is|this is)\s+(?:my|a|an|the)?\s*(?:{_REVISED}\s+)*(?:and\s+{_REVISED}\s+)?{_ANSWER}\b[^:\n]{{0,80}}[:\n]\s*",
    rf"^(?:my\s+|the\s+)?(?:{_REVISED}\s+)+{_ANSWER}\b[^:\n]{{0,40}}[:\n]\s*",
    rf"^(?:{_ANSWER}|question)\s*\d*\s*:\s*",
    r"^i would (?:say|answer|respond|reply)(?:\s+that)?[,:]?\s*",
    r"^(?:as|in) (?:my|an?) (?:answer|response)[^,:]{0,40}[,:]\s*",
))

# A sentence that comments on an answer, a rating or the feedback instead of answering: dropped.
_GOOD = (r"(?:helpful|honest|harmless|good|great|clear|concise|appropriate|respectful|thoughtful|accurate|kind|"
         r"better|improved|well[- ]\w+|informative|empathetic|considerate|ethical|balanced|direct|specific)")
_ABOUT = (r"(?:addresses|provides|offers|gives|shows|meets|captures|reflects|focuses|avoids|acknowledges|"
          r"maintains|considers|covers|responds to|takes into account|incorporates)")

# A sentence that comments on an answer, a rating or the feedback instead of answering: dropped.
META_SENTENCES = tuple(re.compile(p, re.IGNORECASE) for p in (
    (rf"\b(?:this|that|the|my|your|our|above|previous|original)\s+(?:{_REVISED}\s+|previous\s+|original\s+)*{_ANSWER}\b"
    rf"[^.!?]{{0,60}}\b(?:(?:is|was|seems|sounds|would be|remains|has been)\s+(?:\w+\s+){{0,3}}{_GOOD}|{_ABOUT})\b"),
    (rf"^\s*(?:it|this)\s+(?:also\s+)?{_ABOUT}\s+(?:the|your|their|all|every|each)?\s*"
    r"(?:concerns?|feedback|comments?|question|points?|issues?|criticism)"),
    rf"\b(?:{_REVISED})\s+{_ANSWER}\b",
    rf"\b(?:your|my|the|our)\s+(?:previous|original|earlier|last|first)\s+{_ANSWER}\b",
    r"\b(?:their|the neighbou?rs'?|the peers'?)\s+(?:comments?|feedback|ratings?|criticism)\b",
    r"\b(?:neighbou?rs?|peers?|reviewers?|raters?)\b[^.!?]{0,60}\b(?:rated|comments?|feedback|said|suggested|pointed)\b",
    r"\b(?:thank you|thanks)\s+for\s+(?:the|your)\s+(?:feedback|comments?|rating|review|input)\b",
    (r"\b(?:based on|addressing|taking into account|in response to|incorporating)\s+(?:the|your|their)\s+"
    r"(?:feedback|comments?|ratings?|suggestions?)\b"),
    r"\brated (?:it|my answer|the answer)\b",
    r"^\s*(?:your|this|the|that)\s+(?:\w+\s+){0,2}question\s+(?:is|seems|sounds|contains|was|that|which|raises)\b",
    r"^\s*this is (?:a|an) (?:\w+\s+){0,2}(?:example|case|instance) of\b",
    rf"\b(?:rest of|remove|delete|end) (?:the|this|my) {_ANSWER}\b",
    r"^\s*(?:i hope|hope) (?:this|that|my)\b[^.!?]{0,40}\b(?:helps|addresses|answer|response|is helpful)",
    r"\bhelpful,? honest,? and harmless\b",
))

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+[\"')\]]*|\n+|$)")
MIN_CHARS = 12  # what is left after cleaning must at least be a short sentence
_QUOTES = "\"'“”‘’ \n\t"


@dataclass(frozen=True)
class Cleaned:
    """An answer after the filter: its text (None when dropped) and what was done."""

    text: str | None
    action: str  # "kept" | "cleaned" | "dropped"

    @property
    def kept(self) -> bool:
        return self.text is not None


def _strip_wrappers(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for pattern in LEADING_WRAPPERS:
            stripped = pattern.sub("", text, count=1).lstrip(_QUOTES)
            if stripped != text:
                text, changed = stripped, True
    return text


def is_meta_sentence(sentence: str) -> bool:
    return any(p.search(sentence) for p in META_SENTENCES)


def _strip_echo(text: str, question: str | None) -> str:
    """Drop a leading repeat of the question (or of its last sentence): small models echo it."""
    if not question:
        return text
    for echo in dict.fromkeys([question.strip(), _SENTENCE.findall(question.strip())[-1].strip()]):
        if echo and text.lower().startswith(echo.lower()):
            return text[len(echo):].lstrip(_QUOTES)
    return text


def clean_answer(text: str, question: str | None = None) -> Cleaned:
    """Strip a leading wrapper, an echo of the question and sentences that talk about the answer;
    drop the answer if nothing is left."""
    original = text.strip()
    body = _strip_wrappers(_strip_echo(original.lstrip(_QUOTES), question))
    sentences = [m.group(0) for m in _SENTENCE.finditer(body) if m.group(0).strip()]
    kept = [s for s in sentences if not is_meta_sentence(s)]
    result = "".join(kept).strip().strip(_QUOTES).strip()
    if len(result) < MIN_CHARS or not re.search(r"[a-zA-Z]", result):
        return Cleaned(None, "dropped")
    if result == original.strip(_QUOTES).strip():
        return Cleaned(original, "kept")
    return Cleaned(result[0].upper() + result[1:], "cleaned")
