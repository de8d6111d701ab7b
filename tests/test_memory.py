"""Embedding memory with the real MiniLM encoder and faiss."""

from __future__ import annotations

import pytest

from agents.memory import EmbeddingMemory, Encoder, MemoryFileError, MemoryItem


@pytest.fixture(scope="module")
def encoder():
    return Encoder("minilm-l6")


QUESTIONS = [
    "How should I tell my roommate to clean up after themselves?",
    "Is it wrong to keep extra change a cashier gave me by mistake?",
    "What is a good way to help an elderly neighbour with groceries?",
    "Can I read my teenager's diary without asking?",
]


def filled(encoder) -> EmbeddingMemory:
    memory = EmbeddingMemory(encoder)
    memory.add([MemoryItem("alice", q, {"answer": f"alice-{i}"}) for i, q in enumerate(QUESTIONS)])
    memory.add([MemoryItem("bob", QUESTIONS[1], {"answer": "bob-1"})])
    return memory


def test_paraphrase_retrieves_its_stored_question_first(encoder):
    memory = filled(encoder)
    (hits,) = memory.search([("alice", "The cashier handed me too much change; may I keep it?")], k=3)
    assert hits[0].item.text == QUESTIONS[1]
    assert hits[0].score > hits[1].score


def test_namespaces_are_isolated_and_threshold_filters(encoder):
    memory = filled(encoder)
    bob, nobody, strict = memory.search(
        [("bob", QUESTIONS[3]), ("carol", QUESTIONS[0]), ("alice", "quantum chromodynamics lecture notes")],
        k=5,
        threshold=0.5,
    )
    assert [h.item.payload["answer"] for h in bob] == []  # bob's only memory is unrelated
    assert nobody == []
    assert strict == []
    (loose,) = memory.search([("bob", QUESTIONS[3])], k=5)
    assert [h.item.payload["answer"] for h in loose] == ["bob-1"]


def test_batched_search_equals_one_by_one(encoder):
    memory = filled(encoder)
    queries = [("alice", q) for q in QUESTIONS] + [("bob", "keeping change")]
    batched = memory.search(queries, k=2)
    single = [memory.search([q], k=2)[0] for q in queries]
    assert [[h.item for h in r] for r in batched] == [[h.item for h in r] for r in single]
    for b, s in zip(batched, single):
        assert [h.score for h in b] == pytest.approx([h.score for h in s], abs=1e-5)


def test_save_and_load_give_identical_results(encoder, tmp_path):
    memory = filled(encoder)
    memory.save(tmp_path / "mem")
    reloaded = EmbeddingMemory.load(tmp_path / "mem", encoder)
    queries = [("alice", "teen diary privacy"), ("bob", "extra change"), ("alice", "groceries for neighbour")]
    before, after = memory.search(queries, k=3), reloaded.search(queries, k=3)
    assert [[(h.item, h.score) for h in r] for r in before] == [[(h.item, h.score) for h in r] for r in after]
    assert len(reloaded) == len(memory) == 5


def test_load_rejects_a_mismatched_directory(encoder, tmp_path):
    with pytest.raises(MemoryFileError, match="missing"):
        EmbeddingMemory.load(tmp_path, encoder)
    memory = filled(encoder)
    memory.save(tmp_path)
    (tmp_path / "memory.jsonl").write_text('{"namespace": "x", "text": "y", "payload": {}}\n')
    with pytest.raises(MemoryFileError, match="index holds"):
        EmbeddingMemory.load(tmp_path, encoder)


def test_a_namespace_past_the_flat_limit_switches_to_hnsw_and_finds_the_same_items(encoder, tmp_path):
    texts = [f"Question number {i} about {topic}" for i, topic in enumerate(
        ["neighbours", "money", "honesty", "privacy", "work", "family", "school", "health"] * 6)]
    exact, graph = EmbeddingMemory(encoder), EmbeddingMemory(encoder, flat_limit=16)
    for memory in (exact, graph):
        memory.add([MemoryItem("alice", t, {"i": i}) for i, t in enumerate(texts[:10])])  # under the limit
        memory.add([MemoryItem("alice", t, {"i": i}) for i, t in enumerate(texts[10:], start=10)])
        memory.add([MemoryItem("bob", texts[0])])
    assert exact.index_kinds() == {"flat": 2} and graph.index_kinds() == {"flat": 1, "hnsw": 1}
    queries = [("alice", t) for t in texts[::5]] + [("bob", "neighbours")]
    assert [[h.item for h in r] for r in graph.search(queries, k=3)] == [[h.item for h in r] for r in exact.search(queries, k=3)]
    graph.save(tmp_path / "mem")
    reloaded = EmbeddingMemory.load(tmp_path / "mem", encoder, flat_limit=16)
    assert reloaded.index_kinds() == graph.index_kinds() and len(reloaded) == len(texts) + 1


def test_repeated_texts_are_encoded_once_and_keep_their_rows(encoder):
    texts = [QUESTIONS[0], QUESTIONS[1], QUESTIONS[0], QUESTIONS[2], QUESTIONS[1]]
    vectors = encoder.encode(texts)
    assert vectors.shape == (5, encoder.dim)
    assert (vectors[0] == vectors[2]).all() and (vectors[1] == vectors[4]).all()
    alone = encoder.encode([QUESTIONS[2]])
    assert abs(float(vectors[3] @ alone[0]) - 1.0) < 1e-5
