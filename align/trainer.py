"""The trainer skeleton every method shares: loop, accelerate, checkpoints and exact resume,
LoRA, precomputed reference log-probs, metrics and the plot. A method subclasses Trainer with
its data hooks (locate, load, tokenize, collate) and one `compute` (a loss from align.losses);
it never touches the loop. Methods register in align.methods.

Why our own loop instead of TRL's trainers: the methods here (SPIN, SPO, MCTS-DPO) need per-pair
weights and label smoothing, step-level completions without end-of-turn, and a reference that
changes between iterations; owning ~300 lines is simpler than overriding TRL's internals.
`accelerate` still gives DDP/FSDP under `accelerate launch` (or `torchrun` on CPUs).

One optimizer step = `grad_accum` micro-batches. Reference log-probs, for methods that have a
reference, are computed once before training with the frozen model (with LoRA: the same model,
adapter disabled) and cached in the output directory. Checkpoints hold model (or adapter),
optimizer, scheduler and RNG states; with the deterministic batch order (align.batching) a
resumed run ends on the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import SAFE_WEIGHTS_NAME, set_seed
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from align.batching import BatchPlan
from align.config import LoraSettings, TrainConfig
from align.logprobs import completion_logps, per_row, token_logps
from align.plots import plot_metrics
from align.processes import cpu_process_group
from align.progress import progress_bar
from align.rundir import RunDir


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    model_dir: Path  # loads with plain AutoModelForCausalLM: out_dir, or out_dir/merged with LoRA
    step: int
    history: list[dict] = field(default_factory=list)  # metrics.jsonl rows


@dataclass(frozen=True)
class StepOutput:
    """One micro-batch's loss (to back-propagate) and its metrics as (sum, count) pairs: the
    logged value is sum/count over the whole optimizer step and every process."""

    loss: torch.Tensor
    metrics: dict[str, tuple[torch.Tensor, torch.Tensor]]
    tokens: int  # non-padding tokens processed, for tokens/s


class Trainer:
    """Trains `model` on tokenized examples into a claimed RunDir (see RunDir.claim)."""

    panels: tuple[tuple[str, str], ...] = (("loss", "loss"),)  # metrics.png: (metric, title)

    # -- a method's data (classmethods: they run before the model loads) -------------------

    @classmethod
    def locate(cls, data: str | Path) -> Path:
        """The data file `data` names (a file, or a run directory's export)."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> list:
        """Validated rows; bad input raises align.errors.DataError naming file:line and field."""
        raise NotImplementedError

    @classmethod
    def tokenize(cls, rows: list, tokenizer, config: TrainConfig, path: Path) -> list:
        raise NotImplementedError

    # -- a method's step ------------------------------------------------------------------

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute(self, batch: dict[str, torch.Tensor], indices: list[int]) -> StepOutput:
        """The loss of one micro-batch (`indices` into the examples)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Runs once before the first step (and on resume before the checkpoint is loaded)."""

    def share(self, group: list[list[int]], position: int) -> float:
        """The weight of micro-batch `position` in its optimizer step's loss; equal by default."""
        return 1 / len(group)

    def lengths(self) -> Sequence[int] | None:
        """Per-example lengths to group batches by (align.batching), or None for a plain shuffle."""
        return None

    # -- setup ----------------------------------------------------------------------------

    def __init__(
        self,
        model,
        tokenizer,
        examples: Sequence,
        config: TrainConfig,
        run_dir: RunDir,
        callbacks: Sequence[Callable[[dict], None]] = (),
    ) -> None:
        if not examples:
            raise ValueError("no examples to train on")
        self.config, self.run_dir, self.examples, self.tokenizer = config, run_dir, list(examples), tokenizer
        self.callbacks = list(callbacks)
        # An earlier trainer in this process leaves its AcceleratorState behind (TRL's configs
        # default to bf16, even on CPU), and a new Accelerator would silently inherit it. Start
        # from this launch's own settings instead, as transformers' TrainingArguments does.
        AcceleratorState._reset_state()
        precision = None if config.mixed_precision == "auto" else config.mixed_precision
        self.accelerator = Accelerator(cpu=cpu_process_group(), mixed_precision=precision)
        set_seed(config.seed)
        if config.lora:
            model = _with_lora(model, config.lora)
            self.accelerator.register_save_state_pre_hook(_keep_trainable_weights)
            self.accelerator.register_load_state_pre_hook(_load_trainable_weights)
        world = self.accelerator.num_processes
        lengths = self.lengths()
        self.plan = BatchPlan(
            len(self.examples),
            config.batch_size,
            config.seed,
            self.accelerator.process_index,
            world,
            None if lengths is None else tuple(lengths),
        )
        self.steps_per_epoch = math.ceil(self.plan.batches_per_epoch / config.grad_accum)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )
        # accelerate steps a prepared scheduler once per process per optimizer step.
        scheduler = get_scheduler(
            "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * self.total_steps) * world,
            num_training_steps=self.total_steps * world,
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)

    # -- the loop -----------------------------------------------------------------------

    def train(self, resume: bool = False) -> TrainResult:
        self.prepare()
        step = self._restore() if resume else 0
        main = self.accelerator.is_main_process
        if main:
            self.run_dir.rewind_metrics(step)
        progress = progress_bar(total=self.total_steps, initial=step, desc="train", disable=not main)
        while step < self.total_steps:
            epoch, done = divmod(step, self.steps_per_epoch)
            batches = self.plan.epoch(epoch)
            accum = self.config.grad_accum
            for start in range(done * accum, len(batches), accum):
                row = self._optimizer_step(batches[start : start + accum])
                step += 1
                row = {"step": step, "epoch": round(step / self.steps_per_epoch, 4), **row}
                if main:
                    self.run_dir.append_metrics(row)
                progress.update()
                progress.set_postfix(loss=f"{row['loss']:.4f}")
                if step % self.config.save_steps == 0 or step == self.total_steps:
                    self._save_checkpoint(step)
                for callback in self.callbacks:
                    callback(row)
                if step == self.total_steps:
                    break
        progress.close()
        model_dir = self._save_model()
        history = self.run_dir.read_metrics()
        if main:
            plot_metrics(history, self.run_dir.plot_file, self.panels)
        return TrainResult(self.run_dir.path, model_dir, step, history)

    def _optimizer_step(self, group: list[list[int]]) -> dict:
        started = time.perf_counter()
        self.model.train()
        sums: dict[str, list[torch.Tensor]] = {}
        tokens = 0
        for position, indices in enumerate(group):
            batch = self._batch(indices)
            last = position == len(group) - 1
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.model):
                out = self.compute(batch, indices)
                self.accelerator.backward(out.loss * self.share(group, position))
            for name, (total, count) in out.metrics.items():
                pair = torch.stack([total.detach().float().sum(), torch.as_tensor(count).float().sum()])
                sums[name] = sums[name] + pair if name in sums else pair
            tokens += out.tokens
        grad_norm = None
        if self.config.max_grad_norm is not None:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        # One gather for every metric and the token count: (processes, metrics + 1, 2).
        local = torch.stack([*sums.values(), torch.tensor([float(tokens), 1.0])]).to(self.accelerator.device)
        totals = self.accelerator.gather(local[None]).sum(dim=0).cpu()
        row = {name: (totals[i, 0] / totals[i, 1]).item() for i, name in enumerate(sums)}
        row |= {"lr": lr, "tokens_per_second": totals[-1, 0].item() / seconds, "seconds": seconds}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        return row

    def token_logps(self, indices: list[int]) -> list[torch.Tensor]:
        """Per-token log-probs of the completion tokens of each collated row of these examples,
        under the current policy (no gradient): what step-level methods such as MCTS-DPO read."""
        batch = self._batch(indices)
        self.model.eval()
        with torch.no_grad():
            logps, rows = token_logps(self.model, batch)
        return [row.cpu() for row in per_row(logps, rows, batch["input_ids"].shape[0])]

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.collate([self.examples[i] for i in indices])
        return {name: tensor.to(self.accelerator.device) for name, tensor in batch.items()}

    # -- reference ----------------------------------------------------------------------

    def reference_logps(self) -> torch.Tensor:
        """(examples, rows per example) summed completion log-probs under the frozen reference.

        One no-grad pass in batches sorted by length (little padding), cached in the run
        directory: a resumed run reads it back instead of recomputing. A collated batch's rows
        come kind by kind (e.g. every chosen row, then every rejected row).
        """
        cache = self.run_dir.reference_cache
        if cache.is_file():
            return load_file(cache)["logps"]
        table: torch.Tensor | None = None
        by_length = sorted(range(len(self.examples)), key=lambda i: self.examples[i].length)
        self.model.eval()
        with torch.no_grad(), self._reference_model() as reference:
            for indices in progress_bar(
                self.plan.in_order(by_length),
                desc="reference log-probs",
                disable=not self.accelerator.is_main_process,
            ):
                logps, _ = completion_logps(reference, self._batch(indices))
                rows = logps.view(-1, len(indices)).T  # (examples, kinds)
                where = torch.tensor(indices, device=logps.device)
                where, rows = self.accelerator.gather((where, rows.contiguous()))
                if table is None:
                    table = torch.zeros(len(self.examples), rows.shape[1])
                table[where.cpu()] = rows.float().cpu()
        if self.accelerator.is_main_process:
            staging = cache.with_name(cache.name + ".tmp")
            save_file({"logps": table}, staging)
            os.replace(staging, cache)
        return table

    @contextlib.contextmanager
    def _reference_model(self):
        """The frozen reference: with LoRA the same weights with the adapter off; else the model as
        loaded; a method with another reference (MCTS-DPO's initial model) overrides this."""
        if self.config.lora:
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                yield self.model
        else:
            yield self.model

    # -- state --------------------------------------------------------------------------

    def _restore(self) -> int:
        """Load the latest checkpoint (after the reference pass, which needs the initial weights)."""
        found = self.run_dir.latest_checkpoint()
        if found is None:
            return 0
        path, step = found
        self.accelerator.load_state(str(path))
        return step

    def _save_checkpoint(self, step: int) -> None:
        self.accelerator.save_state(str(self.run_dir.staging_dir(step)))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.run_dir.commit_checkpoint(step)
        self.accelerator.wait_for_everyone()

    def _save_model(self) -> Path:
        """The final model in plain transformers format; with LoRA the adapter, plus a merged copy."""
        accelerator, out = self.accelerator, self.run_dir.path
        main = accelerator.is_main_process
        accelerator.wait_for_everyone()
        model = accelerator.unwrap_model(self.model)
        model.save_pretrained(out, state_dict=accelerator.get_state_dict(self.model), is_main_process=main)
        if main:
            self.tokenizer.save_pretrained(out)
        if not self.config.lora:
            return out
        merged_dir = out / "merged"
        merged = model.merge_and_unload()
        merged.save_pretrained(merged_dir, is_main_process=main)
        if main:
            self.tokenizer.save_pretrained(merged_dir)
        return merged_dir


def _with_lora(model, settings: LoraSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _keep_trainable_weights(models, weights, output_dir) -> None:
    """Checkpoint only the adapter: the frozen base is reloaded from --model, no need to copy it."""
    for model, state in zip(models, weights):
        trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        for name in [name for name in state if name not in trainable]:
            del state[name]


def _load_trainable_weights(models, input_dir) -> None:
    """Load an adapter-only checkpoint ourselves (accelerate would demand every base weight too).

    Taking the model out of `models` tells accelerate it is loaded. Under FSDP accelerate passes
    no models here and saves/loads the full sharded state itself.
    """
    if not models:
        return
    model = models.pop(0)  # the trainer prepares exactly one model: accelerate's model.safetensors
    missing, unexpected = model.load_state_dict(load_file(Path(input_dir) / SAFE_WEIGHTS_NAME), strict=False)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    if unexpected or trainable & set(missing):
        raise RuntimeError(f"{input_dir}: checkpoint does not match the adapter being trained")
