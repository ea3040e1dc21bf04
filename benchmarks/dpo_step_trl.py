"""TRL ``DPOTrainer`` variants for ``benchmarks/dpo_step.py`` (TRL is a benchmark-only extra:
``pip install '.[bench]'``).

Each variant runs the real ``trl.DPOTrainer.train()`` in a background thread held in lock-step with the benchmark's
other variants: a callback parks the trainer at every ``on_step_begin`` until :func:`measure` hands it its turn, so one
variant computes at a time and all of them share the same stretches of machine load. The step time is
``on_step_begin`` -> ``on_step_end`` (forward, loss, backward, clipping, AdamW, LR scheduler, ``zero_grad``: the work
the other variants' steps do on a batch already collated); the whole turn (adds TRL's logging bookkeeping and the
collation of its next batch) is reported apart as ``ms_per_call``.

Same tiny model (the saved policy), same pairs (chat prompt + assistant reply, tokenized by TRL; checked equal to the
benchmark's token ids), same batches (``train_sampling_strategy="sequential"``: step ``s`` sees pairs
``s*B .. s*B+B-1`` as the other variants do), fp32 on the CPU, AdamW (``adamw_torch``, no weight decay), constant LR,
clipping at 1.0, no gradient checkpointing, no logging, no saving.
"""

from __future__ import annotations

import threading
import time

TRL_MISSING = "TRL not installed (pip install '.[bench]')"

NOTES = {
    "trl": "trl.DPOTrainer.train() step (on_step_begin..on_step_end): policy forward of chosen+rejected through TRL's "
    "fused chunked LM-head log-probs (+ its entropy / top-1 metrics), sigmoid DPO loss, backward, clip, AdamW, "
    "LR scheduler, zero_grad. Reference log-probs precomputed by TRL before training "
    "(precompute_ref_log_probs=True, not timed) -- like for like with plain / ours.",
    "trl_ref_in_step": "the same with TRL's default precompute_ref_log_probs=False: every step also runs a no-grad "
    "forward of a reference model copy (not like for like: plain / ours use precomputed "
    "reference log-probs).",
}


def trl_version():
    """TRL's version, or None when it cannot be imported."""
    try:
        import trl
    except ImportError:
        return None
    return getattr(trl, "__version__", "?")


class LockstepTRL:
    """One ``DPOTrainer`` whose ``train()`` advances one optimizer step per call (``step_fn(batch)`` -> loss)."""

    def __init__(
        self,
        root: str,
        name: str,
        policy: str,
        tok,
        rows,
        batch: int,
        steps: int,
        max_length: int,
        lr: float,
        beta: float,
        precompute: bool,
    ):
        import datasets
        import torch
        from transformers import AutoModelForCausalLM, TrainerCallback
        from transformers.trainer_callback import PrinterCallback
        from trl import DPOConfig, DPOTrainer

        datasets.disable_progress_bars()
        lockstep = self
        self.name, self.error, self.thread = name, None, None
        self.step_seconds, self.tokens, self.losses = [], [], []
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)

        class Turns(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                lockstep._done.release()  # the previous turn ends here (or: ready for the first one)
                lockstep._go.acquire()
                lockstep._t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                lockstep.step_seconds.append(time.perf_counter() - lockstep._t0)

        class Trainer(DPOTrainer):
            def training_step(self, model, inputs, num_items_in_batch=None):
                loss = super().training_step(model, inputs, num_items_in_batch)
                lockstep.tokens.append(int(inputs["attention_mask"].sum()))
                lockstep.losses.append(float(loss))
                return loss

        config = DPOConfig(
            output_dir=f"{root}/{name}",
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=lr,
            beta=beta,
            loss_type=["sigmoid"],
            max_length=max_length,
            precompute_ref_log_probs=precompute,
            precompute_ref_batch_size=32,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            train_sampling_strategy="sequential",
            dataloader_num_workers=0,
            seed=0,
        )
        data = datasets.Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": r["prompt"]}],
                    "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}],
                }
                for r in rows
            ]
        )
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
        self.trainer = Trainer(model=model, args=config, train_dataset=data, processing_class=tok, callbacks=[Turns()])
        self.trainer.remove_callback(PrinterCallback)  # its end-of-train summary (runtime includes the waits)
        self.setup_seconds = time.perf_counter() - t0

    def check(self, feats, ref=None) -> dict:
        """Does TRL train on the benchmark's token ids (and, precomputed, the same reference log-probs)?"""
        ds = self.trainer.train_dataset
        same = len(ds) == len(feats) and all(
            list(ex["prompt_ids"]) + list(ex[f"{side}_ids"]) == list(f[f"{side}_input_ids"])
            for ex, f in zip(ds, feats)
            for side in ("chosen", "rejected")
        )
        out = {"same_token_ids": bool(same)}
        if ref is not None and "ref_chosen_logps" in ds.column_names:
            diffs = [
                abs(a - b)
                for col, ours in zip(("ref_chosen_logps", "ref_rejected_logps"), ref)
                for a, b in zip(ds[col], ours)
            ]
            out["ref_logps_max_abs_diff"] = float(f"{max(diffs):.3g}")
        return out

    def _run(self):
        try:
            self.trainer.train()
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread
            self.error = exc
        finally:
            self._done.release()

    def start(self):
        """Run ``train()`` up to the first step (set-up, first batch), and park there."""
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        self._wait()

    def _wait(self):
        self._done.acquire()
        if self.error is not None:
            raise RuntimeError(f"{self.name}: DPOTrainer.train() failed: {self.error!r}") from self.error

    def __call__(self, _batch) -> float:
        """One optimizer step (on TRL's own copy of the same batch); returns its loss."""
        self._go.release()
        self._wait()
        return self.losses[-1]

    def close(self):
        if self.thread is not None:
            self.thread.join(timeout=60)
