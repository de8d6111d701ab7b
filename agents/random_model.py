"""Random-weight Llama models with the real SmolLM2 tokenizer, built offline from a config.

Tests and benchmarks need a model that loads, generates and trains like the real one but in
milliseconds; sizes are parameters so a benchmark can pick something larger than a test.
"""

from __future__ import annotations

from pathlib import Path

from agents.registry import DEFAULT_CHAT_MODEL, resolve


def build_random_llama(
    path: str | Path,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 1024,
    seed: int = 0,
) -> str:
    """Save a random Llama and the default model's tokenizer (with its chat template) to ``path``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve(DEFAULT_CHAT_MODEL))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
