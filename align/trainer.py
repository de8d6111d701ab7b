"""A small preference trainer on `accelerate`, shared by DPO and the methods built on it.

Why our own loop instead of TRL's DPOTrainer: the methods that follow (SPIN, SPO, MCTS-DPO)
need per-pair weights and label smoothing, step-level completions without end-of-turn, and a
reference that changes between iterations; owning ~300 lines is simpler than overriding TRL's
internals. `accelerate` still gives DDP/FSDP under `accelerate launch`.

One optimizer step = `grad_accum` micro-batches; each micro-batch is ONE forward over the
chosen and rejected rows together. Reference log-probs are computed once, before training,
with the frozen model (with LoRA: the same model, adapter disabled) and cached in the output
directory. Checkpoints hold model (or adapter), optimizer, scheduler and RNG states; with the
deterministic batch order (align.batching) a resumed run ends on the same weights as an
uninterrupted one.
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
from tqdm.auto import tqdm
from transformers import get_scheduler

from align.batching import BatchPlan, collate
from align.config import LoraSettings, TrainConfig
from align.logprobs import completion_logps
from align.losses import PreferenceLoss, dpo_loss, ipo_loss
from align.plots import plot_metrics
from align.processes import cpu_process_group
from align.rundir import RunDir
from align.tokenization import TokenizedPair


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    model_dir: Path  # loads with plain AutoModelForCausalLM: out_dir, or out_dir/merged with LoRA
    step: int
    history: list[dict] = field(default_factory=list)  # metrics.jsonl rows


class PreferenceTrainer:
    """Trains `model` on tokenized pairs into a claimed RunDir (see RunDir.claim)."""

    def __init__(
        self,
        model,
        tokenizer,
        pairs: Sequence[TokenizedPair],
        config: TrainConfig,
        run_dir: RunDir,
        callbacks: Sequence[Callable[[dict], None]] = (),
    ) -> None:
        if not pairs:
            raise ValueError("no pairs to train on")
        self.config, self.run_dir, self.pairs, self.tokenizer = config, run_dir, list(pairs), tokenizer
        self.callbacks = list(callbacks)
        # An earlier trainer in this process leaves its AcceleratorState behind (TRL's DPOConfig
        # defaults to bf16, even on CPU), and a new Accelerator would silently inherit it. Start
        # from this launch's own settings instead, as transformers' TrainingArguments does.
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(cpu=cpu_process_group())
        set_seed(config.seed)
        if config.lora:
            model = _with_lora(model, config.lora)
            self.accelerator.register_save_state_pre_hook(_keep_trainable_weights)
            self.accelerator.register_load_state_pre_hook(_load_trainable_weights)
        world = self.accelerator.num_processes
        self.plan = BatchPlan(
            len(self.pairs), config.batch_size, config.seed, self.accelerator.process_index, world
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
        self.ref_chosen, self.ref_rejected = self._reference_logps()
        step = self._restore() if resume else 0
        main = self.accelerator.is_main_process
        if main:
            self.run_dir.rewind_metrics(step)
        progress = tqdm(total=self.total_steps, initial=step, desc="train", disable=not main)
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
                progress.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['rewards/accuracy']:.2f}")
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
            plot_metrics(history, self.run_dir.plot_file)
        return TrainResult(self.run_dir.path, model_dir, step, history)

    def _optimizer_step(self, group: list[list[int]]) -> dict:
        started = time.perf_counter()
        self.model.train()
        outputs, tokens = [], 0
        for position, indices in enumerate(group):
            batch = self._batch(indices)
            last = position == len(group) - 1
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.model):
                out = self._loss_on(batch, indices)
                self.accelerator.backward(out.loss / len(group))
            outputs.append(out)
            tokens += int(batch["attention_mask"].sum())
        grad_norm = None
        if self.config.max_grad_norm is not None:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self._metrics(outputs, tokens, grad_norm, lr, time.perf_counter() - started)

    def _loss_on(self, batch: dict[str, torch.Tensor], indices: list[int]) -> PreferenceLoss:
        logps, lengths = completion_logps(self.model, batch)
        policy_chosen, policy_rejected = logps.chunk(2)
        chosen_lengths, rejected_lengths = lengths.chunk(2)
        ref = torch.tensor(indices)
        return self.loss(
            policy_chosen,
            policy_rejected,
            self.ref_chosen[ref].to(logps.device),
            self.ref_rejected[ref].to(logps.device),
            chosen_lengths,
            rejected_lengths,
            batch["weights"],
        )

    def loss(
        self,
        policy_chosen: torch.Tensor,
        policy_rejected: torch.Tensor,
        ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor,
        chosen_lengths: torch.Tensor,
        rejected_lengths: torch.Tensor,
        weights: torch.Tensor,
    ) -> PreferenceLoss:
        """The configured preference loss; methods with another objective override this."""
        logps = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
        if self.config.loss == "ipo":
            return ipo_loss(*logps, self.config.beta, chosen_lengths, rejected_lengths, weights=weights)
        return dpo_loss(
            *logps, self.config.beta, weights=weights, label_smoothing=self.config.label_smoothing
        )

    def _metrics(
        self, outputs: list[PreferenceLoss], tokens: int, grad_norm, lr: float, seconds: float
    ) -> dict:
        def gathered(name: str) -> torch.Tensor:
            return self.accelerator.gather(
                torch.cat([getattr(out, name).detach() for out in outputs])
            ).float()

        losses, chosen, rejected = (
            gathered("losses"),
            gathered("chosen_rewards"),
            gathered("rejected_rewards"),
        )
        total_tokens = int(
            self.accelerator.gather(torch.tensor([tokens], device=self.accelerator.device)).sum()
        )
        row = {
            "loss": losses.mean().item(),
            "rewards/chosen": chosen.mean().item(),
            "rewards/rejected": rejected.mean().item(),
            "rewards/margin": (chosen - rejected).mean().item(),
            "rewards/accuracy": (chosen > rejected).float().mean().item(),
            "lr": lr,
            "tokens_per_second": total_tokens / seconds,
            "seconds": seconds,
        }
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        return row

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = collate([self.pairs[i] for i in indices], self.tokenizer.pad_token_id)
        return {name: tensor.to(self.accelerator.device) for name, tensor in batch.items()}

    # -- reference ----------------------------------------------------------------------

    def _reference_logps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs of every pair: one no-grad pass, batches sorted by length to pad little."""
        cache = self.run_dir.reference_cache
        if cache.is_file():
            tensors = load_file(cache)
            return tensors["chosen"], tensors["rejected"]
        chosen, rejected = torch.zeros(len(self.pairs)), torch.zeros(len(self.pairs))
        by_length = sorted(range(len(self.pairs)), key=lambda i: self.pairs[i].length)
        self.model.eval()
        with torch.no_grad(), self._reference_model():
            for indices in tqdm(
                self.plan.in_order(by_length),
                desc="reference log-probs",
                disable=not self.accelerator.is_main_process,
            ):
                logps, _ = completion_logps(self.model, self._batch(indices))
                where = torch.tensor(indices, device=logps.device)
                where, chosen_logps, rejected_logps = self.accelerator.gather((where, *logps.chunk(2)))
                chosen[where.cpu()] = chosen_logps.float().cpu()
                rejected[where.cpu()] = rejected_logps.float().cpu()
        if self.accelerator.is_main_process:
            staging = cache.with_name(cache.name + ".tmp")
            save_file({"chosen": chosen, "rejected": rejected}, staging)
            os.replace(staging, cache)
        return chosen, rejected

    def _reference_model(self):
        """The frozen reference: with LoRA the same weights with the adapter off; else the model as loaded."""
        if self.config.lora:
            return self.accelerator.unwrap_model(self.model).disable_adapter()
        return contextlib.nullcontext()

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
