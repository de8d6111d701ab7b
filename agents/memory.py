"""Embedding memory: sentence-transformers encoder + faiss, with per-agent namespaces.

Each namespace (an agent) has its own inner-product index over L2-normalised vectors, so a
score is a cosine similarity and a threshold means the same thing everywhere. The index kind
follows its size: exact (flat) up to ``flat_limit`` vectors, then HNSW (graph search, sublinear
in the namespace's size, recall ~0.99 at efSearch 64), switched automatically when a namespace
grows past the limit; ``index_kinds`` reports what is in use (the run manifest records it).
Batched calls encode every text of a phase in one encoder pass; faiss is then called once per
namespace present in the batch (microseconds each; the encoder pass is the real cost).
Persistence is a faiss index file plus JSONL — never pickle.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from agents.files import replacing, write_atomic
from agents.grouping import positions_by
from agents.registry import DEFAULT_EMBEDDER, resolve

INDEX_FILE = "memory.faiss"
ENTRIES_FILE = "memory.jsonl"


@dataclass(frozen=True)
class MemoryItem:
    namespace: str
    text: str  # what is embedded and matched against (e.g. the question)
    payload: dict = field(default_factory=dict)  # what is recalled (e.g. the answer given)


@dataclass(frozen=True)
class Hit:
    item: MemoryItem
    score: float  # cosine similarity in [-1, 1]


class MemoryFileError(ValueError):
    """A saved memory directory is missing files or its index and entries disagree."""


class Encoder:
    """A sentence-transformers model that returns L2-normalised float32 vectors."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model = SentenceTransformer(resolve(name), device=device or "cpu")
        self.dim = self.model.get_embedding_dimension()

    def encode(self, texts: list[str]) -> np.ndarray:
        """One vector per text; each distinct text is encoded once (agents asked the same question
        query memory with the same text, and many answers share a reference)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        unique = list(dict.fromkeys(texts))
        vectors = self.model.encode(
            unique, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(unique) == len(texts):
            return vectors
        row = {text: i for i, text in enumerate(unique)}
        return vectors[[row[text] for text in texts]]


FLAT_LIMIT = 4096  # vectors per namespace searched exactly; beyond it, HNSW
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 64


def _hnsw(dim: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


class EmbeddingMemory:
    def __init__(self, encoder: Encoder, flat_limit: int = FLAT_LIMIT) -> None:
        self.encoder = encoder
        self.flat_limit = flat_limit
        self._indexes: dict[str, faiss.Index] = {}
        self._items: dict[str, list[MemoryItem]] = defaultdict(list)
        self._order: list[tuple[str, int]] = []  # insertion order across namespaces, for saving

    def __len__(self) -> int:
        return len(self._order)

    def namespaces(self) -> list[str]:
        return list(self._indexes)

    def items(self, namespace: str) -> list[MemoryItem]:
        return list(self._items.get(namespace, []))

    def index_kinds(self) -> dict[str, int]:
        """How many namespaces use each index kind ("flat", "hnsw"), for the run manifest."""
        kinds: dict[str, int] = defaultdict(int)
        for index in self._indexes.values():
            kinds["flat" if isinstance(index, faiss.IndexFlat) else "hnsw"] += 1
        return dict(kinds)

    def add(self, items: list[MemoryItem]) -> None:
        """Store many items with one encoder pass."""
        self._add_vectors(items, self.encoder.encode([item.text for item in items]))

    def _add_vectors(self, items: list[MemoryItem], vectors: np.ndarray) -> None:
        for namespace, rows in positions_by([item.namespace for item in items]).items():
            index = self._indexes.get(namespace)
            if index is None:
                index = self._indexes[namespace] = faiss.IndexFlatIP(self.encoder.dim)
            if isinstance(index, faiss.IndexFlat) and index.ntotal + len(rows) > self.flat_limit:
                grown = _hnsw(self.encoder.dim)
                grown.add(index.reconstruct_n(0, index.ntotal))
                index = self._indexes[namespace] = grown
            index.add(vectors[rows])
            for row in rows:
                self._order.append((namespace, len(self._items[namespace])))
                self._items[namespace].append(items[row])

    def search(
        self, queries: list[tuple[str, str]], k: int = 1, threshold: float | None = None
    ) -> list[list[Hit]]:
        """For each (namespace, text), the top-k items of that namespace scoring >= threshold."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vectors = self.encoder.encode([text for _, text in queries])
        results: list[list[Hit]] = [[] for _ in queries]
        for namespace, rows in positions_by([namespace for namespace, _ in queries]).items():
            index = self._indexes.get(namespace)
            if index is None or index.ntotal == 0:
                continue
            scores, ids = index.search(vectors[rows], min(k, index.ntotal))
            for row, row_scores, row_ids in zip(rows, scores, ids):
                results[row] = [
                    Hit(self._items[namespace][i], float(s))
                    for s, i in zip(row_scores, row_ids)
                    if i >= 0 and (threshold is None or s >= threshold)
                ]
        return results

    # -- persistence ---------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write the index and entries atomically (temp file + rename for each)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        combined = faiss.IndexFlatIP(self.encoder.dim)
        for namespace, position in self._order:
            combined.add(self._indexes[namespace].reconstruct(position).reshape(1, -1))
        entries = "".join(
            json.dumps({"namespace": item.namespace, "text": item.text, "payload": item.payload}, ensure_ascii=False)
            + "\n"
            for item in (self._items[namespace][position] for namespace, position in self._order)
        )
        write_atomic(directory / ENTRIES_FILE, entries)
        with replacing(directory / INDEX_FILE) as staging:
            faiss.write_index(combined, str(staging))

    @classmethod
    def load(cls, directory: str | Path, encoder: Encoder, flat_limit: int = FLAT_LIMIT) -> EmbeddingMemory:
        directory = Path(directory)
        index_path, entries_path = directory / INDEX_FILE, directory / ENTRIES_FILE
        for path in (index_path, entries_path):
            if not path.exists():
                raise MemoryFileError(f"{path}: missing (expected a memory saved by EmbeddingMemory.save)")
        index = faiss.read_index(str(index_path))
        with entries_path.open(encoding="utf-8") as handle:
            items = [MemoryItem(**json.loads(line)) for line in handle if line.strip()]
        if index.ntotal != len(items) or (items and index.d != encoder.dim):
            raise MemoryFileError(
                f"{directory}: index holds {index.ntotal} vectors of dim {index.d}, entries file "
                f"{len(items)} items for an encoder of dim {encoder.dim}"
            )
        memory = cls(encoder, flat_limit)
        if items:
            memory._add_vectors(items, index.reconstruct_n(0, index.ntotal))
        return memory
