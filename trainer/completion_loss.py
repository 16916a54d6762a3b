"""The SFT loss where it counts: the LM head runs only at positions that have a label.

TRL's fused LM head scores only the labelled positions on Triton devices; elsewhere (every CPU) it projects
every position, prompt and padding included, through the whole vocabulary (262,144 words on Gemma 3) and then
masks them out. On the demo's records four positions in five are prompt or padding, so most of a training step
went into logits that were thrown away (`bench/train_overhead.py`). Here the model's own forward is asked for
the logits of the positions where any row of the batch has a next-token label (`logits_to_keep` as an index
tensor, which every causal LM of transformers 5 takes), and the loss is TRL's: the sum of those tokens'
negative log-likelihoods over the batch's label count (or `num_items_in_batch`). Exact, not an approximation:
`tests/trainer/test_completion_loss.py` checks loss and gradients against TRL's own path.

Used for plain SFT (TRL's `nll` loss without label smoothing, MoE auxiliary loss or a custom loss function);
anything else goes through TRL unchanged.
"""

from __future__ import annotations

from typing import Any


def labelled_positions(labels: Any) -> Any:
    """Indices p of the sequence whose logit predicts a labelled token p + 1 in at least one row."""
    return (labels[:, 1:] != -100).any(dim=0).nonzero().squeeze(1)


def completion_nll(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
) -> tuple[Any, dict[str, Any]]:
    """(loss, outputs): the summed next-token NLL of the labelled tokens over their count, the LM head run only at
    labelled positions. `outputs` carries per-token `log_probs`, `entropy` (no grad), `is_top1` and `label_mask`
    over the kept positions, as TRL's fused head returns them for its metrics."""
    import torch

    labels = inputs["labels"]
    keep = labelled_positions(labels)
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch")}
    logits = model(**forward, logits_to_keep=keep, use_cache=False).logits
    if logits.dtype in (torch.float16, torch.bfloat16):  # the softmax in float32, as TRL's head
        logits = logits.float()
    targets = labels[:, 1:][:, keep]
    mask = targets != -100
    log_probs_all = torch.log_softmax(logits, dim=-1)
    picked = log_probs_all.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    log_probs = picked.masked_fill(~mask, 0.0)
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    loss = -log_probs.sum() / count
    with torch.no_grad():
        entropy = -(log_probs_all.exp() * log_probs_all).sum(-1).masked_fill(~mask, 0.0)
        is_top1 = (logits.argmax(-1) == targets) & mask
    return loss, {"log_probs": log_probs, "entropy": entropy, "is_top1": is_top1, "label_mask": mask}


def completion_loss_trainer(base: type) -> type:
    """A subclass of TRL's `SFTTrainer` (passed in: TRL is imported by the caller) whose plain NLL loss runs the
    LM head only at labelled positions; every other loss goes to TRL's own `compute_loss`."""

    class CompletionLossSFTTrainer(base):  # type: ignore[misc,valid-type]
        def _plain_nll(self) -> bool:
            return (
                self.compute_loss_func is None
                and self.label_smoother is None
                and self.args.loss_type == "nll"
                and not self.aux_loss_enabled
                and self.accelerator.parallelism_config is None
            )

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            if not self._plain_nll() or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            loss, outputs = completion_nll(model, inputs, num_items_in_batch)
            # as TRL: the token count spans every rank, and DDP averages gradients across ranks
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            gather = self.accelerator.gather_for_metrics
            valid = gather(outputs["label_mask"].sum()).sum()
            entropy = gather(outputs["entropy"].sum()).sum()
            correct = gather(outputs["is_top1"].sum()).sum()
            self._metrics[mode]["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
            if mode == "train" and "attention_mask" in inputs:
                self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, outputs) if return_outputs else loss

    return CompletionLossSFTTrainer
