"""`socialign recipe --out DIR`: base vs SFT vs SFT→SPIN vs SFT→DPO on simulation pairs, over seeds."""

from __future__ import annotations

from align import public_sets
from align.config import MAX_BATCH, MAX_LENGTH
from align.progress import set_quiet
from scenarios.schema import MAX_NEW_TOKENS
from socialign.arguments import at_least, output_dir, seed
from socialign.recipe import MODELS, Recipe, RecipeSettings

DEFAULTS = RecipeSettings()


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "recipe", help="the full recipe: what the simulation adds to SFT on references (resumable)",
        description="One simulation, then per seed SFT on the bank's references, SPIN and DPO on the "
                    "simulation's pairs from that SFT at an equal step budget; every model and the base "
                    "answer the same held-out questions; writes DIR/recipe.md and DIR/recipe.json. Run the "
                    "same command again to resume.")
    parser.add_argument("--out", required=True, type=output_dir, help="output directory (steps already there are kept)")
    parser.add_argument("--scenario", default=DEFAULTS.scenario, help="built-in scenario name or YAML path")
    parser.add_argument("--model", default=DEFAULTS.model, help="base model (alias, path or hub id)")
    parser.add_argument("--seeds", type=seed, nargs="+", default=list(DEFAULTS.seeds), help="training seeds")
    parser.add_argument("--heldout", type=at_least(2, int, 10_000), default=DEFAULTS.heldout,
                        help="held-out questions (half should-decline, half should-answer)")
    parser.add_argument("--methods", nargs="+", choices=MODELS, default=list(DEFAULTS.methods),
                        help="which trained models (SFT is always trained: the others start from it)")
    parser.add_argument("--sft-lr", type=at_least(1e-9, float, 1.0), default=DEFAULTS.sft_lr,
                        help="learning rate of SFT on the references")
    parser.add_argument("--sft-epochs", type=at_least(1, int, 100), default=DEFAULTS.sft_epochs,
                        help="SFT epochs")
    parser.add_argument("--pair-lr", type=at_least(1e-9, float, 1.0), default=DEFAULTS.pair_lr,
                        help="learning rate of SPIN and DPO")
    parser.add_argument("--beta", type=at_least(1e-6, float, 100.0), default=DEFAULTS.beta,
                        help="beta of SPIN and DPO (pull towards the SFT model)")
    parser.add_argument("--spin-temperature", type=at_least(0.0, float, 5.0), default=DEFAULTS.spin_temperature,
                        help="temperature of the SFT model's samples that SPIN trains against")
    parser.add_argument("--batch-size", type=at_least(1, int, MAX_BATCH), default=DEFAULTS.batch_size,
                        help="examples per optimizer step")
    parser.add_argument("--max-length", type=at_least(16, int, MAX_LENGTH), default=DEFAULTS.max_length,
                        help="tokens per training example")
    parser.add_argument("--max-new-tokens", type=at_least(1, int, MAX_NEW_TOKENS), default=DEFAULTS.max_new_tokens,
                        help="token budget of SPIN's samples and of every evaluation answer")
    parser.add_argument("--public", choices=public_sets.MODES, default=DEFAULTS.public,
                        help="score the public sets (AdvBench, XSTest) too: in full or a seeded sample")
    parser.add_argument("--evalsets", metavar="DIR", help=f"where the public sets lie (default: "
                        f"${public_sets.ENVIRONMENT}, else {public_sets.DEFAULT_DIR})")
    parser.add_argument("--extra-max-new-tokens", type=at_least(1, int, MAX_NEW_TOKENS),
                        default=DEFAULTS.public_max_new_tokens,
                        help="answer length on the public sets (whether the opening declines)")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters instead of full fine-tuning")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or step lines")
    parser.set_defaults(func=run)


def run(args) -> int:
    settings = RecipeSettings(
        scenario=args.scenario, model=args.model, seeds=tuple(args.seeds), heldout=args.heldout,
        sft_lr=args.sft_lr, sft_epochs=args.sft_epochs, pair_lr=args.pair_lr, beta=args.beta,
        spin_temperature=args.spin_temperature, batch_size=args.batch_size, max_length=args.max_length,
        max_new_tokens=args.max_new_tokens, lora=args.lora, methods=tuple(args.methods), public=args.public,
        evalsets=args.evalsets, public_max_new_tokens=args.extra_max_new_tokens)
    set_quiet(args.quiet)  # the trainer's and the samplers' bars
    Recipe(args.out, settings, quiet=args.quiet).run()
    print((Recipe.table_path(args.out)).read_text())
    print(f"recipe: {Recipe.table_path(args.out)}")
    return 0
