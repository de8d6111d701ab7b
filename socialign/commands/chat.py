"""`socialign chat`: send a batch of prompts to a model in one backend call and print replies."""

from __future__ import annotations

from agents.backends import GenerationRequest, create_backend
from agents.registry import DEFAULT_CHAT_MODEL
from scenarios.schema import MAX_NEW_TOKENS
from socialign.arguments import at_least, seed
from socialign.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="answer a batch of prompts with one batched backend call")
    parser.add_argument("prompts", nargs="+", help="user messages, one request each")
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="alias, local path or hub id")
    parser.add_argument("--backend", default="hf", choices=["hf", "openai", "vllm"], help="generation backend")
    parser.add_argument("--base-url", help="server URL for the openai backend")
    parser.add_argument("--max-new-tokens", type=at_least(1, int, MAX_NEW_TOKENS), default=96, help="token budget of each reply")
    parser.add_argument("--temperature", type=at_least(0.0, float, 100.0), default=0.3, help="sampling temperature (0: greedy)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the samples")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.backend == "openai" and not args.base_url:
        raise UserError("--backend openai needs --base-url (the server's API root, e.g. http://127.0.0.1:8000/v1)")
    options = {"base_url": args.base_url} if args.backend == "openai" else {}
    backend = create_backend(args.backend, args.model, **options)
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": prompt}],
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
        for prompt in args.prompts
    ]
    for prompt, (completion,) in zip(args.prompts, backend.generate(requests)):
        print(f"> {prompt}\n{completion.text.strip()}\n")
    stats = backend.stats
    print(f"[{len(requests)} prompts, {stats.generated_tokens} tokens in {stats.seconds:.1f} s "
          f"= {stats.tokens_per_second:.0f} tokens/s, {stats.calls} generate call(s)]")
    backend.close()
    return 0
