"""Generation backends behind one batched interface; agents sharing a model share one backend."""

from __future__ import annotations

import importlib
import inspect
import json

from agents.backends.base import (
    Backend,
    BackendStats,
    BackendUnavailable,
    Completion,
    GenerationRequest,
    Message,
    expected_rating,
    truncate_at_stop,
)

# kind -> (module, class); modules import lazily so optional extras stay optional.
BACKEND_KINDS = {
    "hf": ("agents.backends.hf", "HFBackend"),
    "openai": ("agents.backends.openai", "OpenAIBackend"),
    "vllm": ("agents.backends.vllm", "VLLMBackend"),
}


def _backend_class(kind: str) -> type[Backend]:
    if kind not in BACKEND_KINDS:
        raise BackendUnavailable(f"unknown backend '{kind}' (expected one of: {', '.join(BACKEND_KINDS)})")
    module, name = BACKEND_KINDS[kind]
    return getattr(importlib.import_module(module), name)


def option_problem(kind: str, options: dict) -> str | None:
    """What is wrong with ``options`` for a backend's constructor, or None (checked before loading)."""
    parameters = list(inspect.signature(_backend_class(kind).__init__).parameters.values())[2:]  # self, model
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None  # e.g. vllm: engine arguments pass straight through
    accepted = {p.name for p in parameters}
    unknown = sorted(set(options) - accepted)
    if unknown:
        return f"unknown option(s) {', '.join(unknown)} for the {kind} backend (accepted: {', '.join(sorted(accepted))})"
    missing = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.name not in options]
    if missing:
        return f"the {kind} backend needs the option(s) {', '.join(missing)}"
    return None


def create_backend(kind: str, model: str, **options) -> Backend:
    problem = option_problem(kind, options)
    if problem:
        raise BackendUnavailable(problem)
    return _backend_class(kind)(model, **options)


class BackendPool:
    """Loads each (kind, model, options) once, so agents sharing a model share its weights."""

    def __init__(self) -> None:
        self._loaded: dict[str, Backend] = {}

    def get(self, kind: str, model: str, **options) -> Backend:
        key = json.dumps([kind, model, options], sort_keys=True, default=str)
        if key not in self._loaded:
            self._loaded[key] = create_backend(kind, model, **options)
        return self._loaded[key]

    def backends(self) -> list[Backend]:
        return list(self._loaded.values())

    def close(self) -> None:
        for backend in self._loaded.values():
            backend.close()
        self._loaded.clear()


__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "BackendPool",
    "BackendStats",
    "BackendUnavailable",
    "Completion",
    "GenerationRequest",
    "Message",
    "create_backend",
    "expected_rating",
    "option_problem",
    "truncate_at_stop",
]
