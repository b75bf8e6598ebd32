"""Adam with the paper's batch-size schedule and early stopping on a validation split."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .base import ModelError

logger = logging.getLogger(__name__)


def per_stage(value, n_stages: int, name: str, kind=float) -> list:
    """Broadcast a scalar, or check a per-stage sequence, for the batch-size schedule."""
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != n_stages:
            raise ModelError(f"{name} must be one value or one per batch-size stage ({n_stages}); got {len(value)}")
        vals = [kind(v) for v in value]
    else:
        vals = [kind(value)] * n_stages
    return vals


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into training and validation indices (no validation when too few)."""
    if not 0 <= fraction < 1:
        raise ModelError(f"validation_fraction must be in [0, 1); got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    if n - n_val < 1 or n < 5:
        n_val = 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class TrainingHistory:
    """Per-epoch record: stage, batch size, mean training loss, validation loss; the best epoch kept."""

    stage: list = field(default_factory=list)
    batch_size: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        return {
            "stage": list(self.stage),
            "batch_size": list(self.batch_size),
            "train_loss": [float(x) for x in self.train_loss],
            "val_loss": [None if x is None else float(x) for x in self.val_loss],
            "best_epoch": int(self.best_epoch),
            "best_val_loss": None if not math.isfinite(self.best_val_loss) else float(self.best_val_loss),
            "wall_time": float(self.wall_time),
            "epochs": len(self.train_loss),
        }


def adam_schedule(
    parameters,
    step_loss,
    val_loss,
    n_train: int,
    batch_sizes=(2, 10, 100, 1000),
    epochs=200,
    learning_rate=1e-3,
    patience: int | None = 50,
    seed: int = 0,
    get_state=None,
    set_state=None,
    progress: bool = False,
) -> TrainingHistory:
    """Minimise ``step_loss(batch_indices)`` with Adam through a schedule of batch sizes.

    ``val_loss()`` (or None) is evaluated after every epoch; the parameters of the best
    validation epoch (of the lowest epoch training loss without validation) are restored at the
    end of every stage. Within a
    stage, training stops after ``patience`` epochs without improvement. Batch sizes larger than
    the training set are clipped and repeated stages skipped. Shuffling uses its own seeded
    generator, so equal seeds give equal runs.
    """
    import torch

    params = [p for p in parameters if p.requires_grad]
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 1:
        raise ModelError(f"batch_sizes must be positive integers; got {batch_sizes}")
    n_stages = len(batch_sizes)
    epochs = per_stage(epochs, n_stages, "epochs", int)
    lrs = per_stage(learning_rate, n_stages, "learning_rate", float)
    if min(epochs) < 0 or min(lrs) <= 0:
        raise ModelError(f"epochs must be >= 0 and learning rates > 0; got {epochs} and {lrs}")
    if n_train < 1:
        raise ModelError("no training configurations left after the validation split")

    gen = torch.Generator().manual_seed(int(seed))
    hist = TrainingHistory()
    t0 = time.perf_counter()
    best_state = get_state()
    total = sum(e for b, e in zip(batch_sizes, epochs))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="training", unit="epoch", leave=False)
    previous = None
    epoch_no = 0
    try:
        for stage, (bs, n_ep, lr) in enumerate(zip(batch_sizes, epochs, lrs)):
            bs = min(bs, n_train)
            if bs == previous:
                if bar is not None:
                    bar.update(n_ep)
                continue
            previous = bs
            opt = torch.optim.Adam(params, lr=lr)
            since_best = 0
            for _ in range(n_ep):
                perm = torch.randperm(n_train, generator=gen)
                total_loss, n_seen = 0.0, 0
                for s in range(0, n_train, bs):
                    idx = perm[s : s + bs]
                    opt.zero_grad(set_to_none=True)
                    loss = step_loss(idx)
                    loss.backward()
                    opt.step()
                    total_loss += float(loss.detach()) * len(idx)
                    n_seen += len(idx)
                train = total_loss / max(n_seen, 1)
                val = val_loss() if val_loss is not None else None
                hist.stage.append(stage)
                hist.batch_size.append(bs)
                hist.train_loss.append(train)
                hist.val_loss.append(val)
                score = val if val is not None else train
                if not math.isfinite(score):
                    raise ModelError(f"training diverged (loss {score}) at epoch {epoch_no}; lower the learning rate")
                if score < hist.best_val_loss:
                    hist.best_val_loss = score
                    hist.best_epoch = epoch_no
                    best_state = get_state()
                    since_best = 0
                else:
                    since_best += 1
                epoch_no += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(batch=bs, loss=f"{train:.3g}", val="-" if val is None else f"{val:.3g}")
                if val is not None and patience is not None and since_best >= patience:
                    if bar is not None:
                        bar.update(n_ep - _ - 1)
                    break
            # continue the next stage from the best parameters found so far
            set_state(best_state)
            logger.debug(
                "stage %d (batch size %d): %d epochs, best loss %.4g at epoch %d",
                stage,
                bs,
                sum(1 for s in hist.stage if s == stage),
                hist.best_val_loss,
                hist.best_epoch,
            )
    finally:
        if bar is not None:
            bar.close()
    set_state(best_state)
    hist.wall_time = time.perf_counter() - t0
    logger.info(
        "Adam: %d epochs in %.1f s, best %s loss %.4g at epoch %d",
        len(hist.train_loss),
        hist.wall_time,
        "validation" if val_loss is not None else "training",
        hist.best_val_loss,
        hist.best_epoch,
    )
    return hist


def module_state(modules_and_params):
    """Closures that snapshot and restore the parameters of modules/tensors (deep copies)."""
    import torch

    def get_state():
        with torch.no_grad():
            return [copy.deepcopy(p.detach().clone()) for p in modules_and_params]

    def set_state(state):
        with torch.no_grad():
            for p, v in zip(modules_and_params, state):
                p.copy_(v)

    return get_state, set_state


def lbfgs_refine(
    parameters,
    full_loss,
    val_loss,
    iterations: int,
    history: TrainingHistory,
    get_state,
    set_state,
    chunk: int = 10,
    patience: int | None = 20,
    progress: bool = False,
) -> TrainingHistory:
    """Full-batch L-BFGS (strong Wolfe line search) after the Adam schedule (optional refinement).

    Runs ``iterations`` L-BFGS iterations in chunks of ``chunk``; after each chunk the validation
    loss (or the training loss without validation) decides which parameters are kept, and
    ``patience`` chunks without improvement stop the refinement. Chunks are recorded in
    ``history`` as stage ``"lbfgs"``.
    """
    import torch

    params = [p for p in parameters if p.requires_grad]
    if iterations <= 0 or not params:
        return history
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=chunk,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
    )

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = full_loss()
        loss.backward()
        return loss

    t0 = time.perf_counter()
    best_state = get_state()
    best = history.best_val_loss
    since = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc="L-BFGS", unit="it", leave=False)
    try:
        done = 0
        while done < iterations:
            loss = float(opt.step(closure).detach())
            done += chunk
            val = val_loss() if val_loss is not None else None
            score = val if val is not None else loss
            if not math.isfinite(score):
                break
            history.stage.append("lbfgs")
            history.batch_size.append(None)
            history.train_loss.append(loss)
            history.val_loss.append(val)
            if score < best:
                best, best_state, since = score, get_state(), 0
                history.best_val_loss = score
                history.best_epoch = len(history.train_loss) - 1
            else:
                since += 1
            if bar is not None:
                bar.update(chunk)
                bar.set_postfix(loss=f"{loss:.3g}", val="-" if val is None else f"{val:.3g}")
            if patience is not None and since >= patience:
                break
    finally:
        if bar is not None:
            bar.close()
    set_state(best_state)
    history.wall_time += time.perf_counter() - t0
    return history
