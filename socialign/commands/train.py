"""`socialign train`: train a model on simulation data (DPO/IPO on preference pairs).

Flags and their defaults come from align.config.TrainConfig (cheap to import); the trainer,
torch and transformers load only when the command runs. For several GPUs:
`accelerate launch -m socialign.cli train ...` (add `--mixed_precision bf16` for bf16 autocast);
for several CPU processes: `torchrun --standalone --nproc_per_node N -m socialign.cli train ...`.
"""

from __future__ import annotations

from agents.registry import DEFAULT_CHAT_MODEL
from align.config import DEFAULT_LR, LOSSES, SCHEDULERS, LoraSettings, TrainConfig
from socialign.errors import UserError

METHODS = ("dpo",)


def register(subparsers) -> None:
    defaults, lora = TrainConfig(), LoraSettings()
    parser = subparsers.add_parser(
        "train",
        help="train a model on exported preference pairs",
        description="Train a model on preference pairs exported from a simulation run.",
    )
    parser.add_argument(
        "--method", choices=METHODS, default="dpo", help="training method (default: %(default)s)"
    )
    parser.add_argument(
        "--data", required=True, help="pairs JSONL, or a run directory (uses RUN/export/pairs.jsonl)"
    )
    parser.add_argument(
        "--model", default=DEFAULT_CHAT_MODEL, help="model alias, local path or hub id (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="output directory (model, metrics, checkpoints)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )

    loss = parser.add_argument_group("loss")
    loss.add_argument(
        "--beta", type=float, default=defaults.beta, help="pull towards the reference (default: %(default)s)"
    )
    loss.add_argument(
        "--loss", choices=LOSSES, default=defaults.loss, help="DPO sigmoid or IPO (default: %(default)s)"
    )
    loss.add_argument(
        "--label-smoothing",
        type=float,
        default=defaults.label_smoothing,
        help="cDPO flip probability, sigmoid only (default: %(default)s)",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"learning rate (default: {DEFAULT_LR['full']:g}; {DEFAULT_LR['lora']:g} with --lora)",
    )
    optim.add_argument(
        "--lr-scheduler", choices=SCHEDULERS, default=defaults.lr_scheduler, help="(default: %(default)s)"
    )
    optim.add_argument(
        "--warmup-ratio", type=float, default=defaults.warmup_ratio, help="(default: %(default)s)"
    )
    optim.add_argument("--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    optim.add_argument("--max-steps", type=int, default=None, help="optimizer steps; overrides --epochs")
    optim.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="pairs per device per micro-batch (default: %(default)s)",
    )
    optim.add_argument(
        "--grad-accum",
        type=int,
        default=defaults.grad_accum,
        help="micro-batches per step (default: %(default)s)",
    )
    optim.add_argument(
        "--max-length",
        type=int,
        default=defaults.max_length,
        help="tokens per prompt+reply (default: %(default)s)",
    )
    optim.add_argument(
        "--max-grad-norm", type=float, default=defaults.max_grad_norm, help="(default: %(default)s)"
    )
    optim.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    optim.add_argument(
        "--save-steps",
        type=int,
        default=defaults.save_steps,
        help="checkpoint every N steps, and at the end (default: %(default)s)",
    )

    adapter = parser.add_argument_group("LoRA")
    adapter.add_argument(
        "--lora", action="store_true", help="train a LoRA adapter (saved, plus a merged model)"
    )
    adapter.add_argument("--lora-r", type=int, default=lora.r, help="rank (default: %(default)s)")
    adapter.add_argument("--lora-alpha", type=int, default=lora.alpha, help="(default: %(default)s)")
    adapter.add_argument("--lora-dropout", type=float, default=lora.dropout, help="(default: %(default)s)")
    parser.set_defaults(func=run)


def run(args) -> int:
    try:
        config = TrainConfig(
            beta=args.beta,
            loss=args.loss,
            label_smoothing=args.label_smoothing,
            lr=args.lr,
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            max_length=args.max_length,
            warmup_ratio=args.warmup_ratio,
            lr_scheduler=args.lr_scheduler,
            max_grad_norm=args.max_grad_norm,
            seed=args.seed,
            save_steps=args.save_steps,
            lora=LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
            if args.lora
            else None,
        )
    except ValueError as error:
        raise UserError(f"invalid training options: {error}") from None

    from align.dpo import train_dpo  # torch, transformers, peft: only once we train
    from align.processes import process_state

    result = train_dpo(args.data, args.model, args.out, config, resume=args.resume)
    if not process_state().is_main_process:
        return 0  # one summary per launch, not one per process
    last = result.history[-1] if result.history else {}
    print(
        f"trained {result.step} steps (loss {last.get('loss', float('nan')):.4f}, "
        f"reward accuracy {last.get('rewards/accuracy', float('nan')):.2f}); model: {result.model_dir}"
    )
    return 0
