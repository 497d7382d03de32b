"""Stage 3, train: fit LeNet-5 with PyTorch Lightning and record every epoch in MLflow.

Outputs that DVC hashes are deterministic (weights, per-epoch history); timings, which
are not, go only to MLflow and to a timings file that no stage declares.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F  # noqa: N812
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Checkpoint, RichProgressBar
from pytorch_lightning.loggers import MLFlowLogger
from safetensors.torch import save_file

from lenet_mnist import model, params, prepare, tracking
from lenet_mnist.batches import Grouped, TensorBatches
from lenet_mnist.stage import replacing, run_stage

# Messages every run would print that concern Lightning itself, not this run: its own
# upgrades, an ad, and the step-metrics interval this stage sets high on purpose.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
PROGRESS_REFRESH_STEPS = 25
# Metrics are epoch-level; a large interval spares Lightning a per-step look for step metrics.
LOG_EVERY_N_STEPS = 1_000_000
HISTORY_FIELDS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc")


class Classifier(pl.LightningModule):
    """Wraps a plain network with the loss, the metrics and the optimizer recipe.

    Loss and accuracy are summed on the device and reduced once per epoch, so a step
    never waits for the host; Lightning's per-step `self.log` costs more than LeNet-5.
    """

    def __init__(
        self, net: torch.nn.Module, optimizer: DictConfig, total_updates: int, compile: bool
    ) -> None:
        super().__init__()
        self.net, self.optimizer_cfg, self.total_updates = net, optimizer, total_updates
        self.forward_loss = torch.compile(forward_loss) if compile else forward_loss
        self.automatic_optimization = False
        self.sums: dict[str, torch.Tensor] = {}  # split -> [loss * n, correct]
        self.counts: dict[str, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):  # noqa: ANN001, ANN201
        return batch  # TensorBatches already slices on the training device

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        loss, stats = self.forward_loss(self.net, x, y)
        if split in self.sums:
            self.sums[split] += stats
        else:
            self.sums[split] = stats
        self.counts[split] = self.counts.get(split, 0) + len(y)
        return loss

    def training_step(self, group: list[tuple[torch.Tensor, torch.Tensor]], _: int) -> None:
        """One optimizer update per batch of the group (see `trainer.batch_group`)."""
        # Manual optimization: the same zero_grad/backward/step as a hand-written loop,
        # without automatic optimization's closure machinery (measured: 100 us per step).
        opt, scheduler = self.optimizers(), self.lr_schedulers()
        for batch in group:
            opt.zero_grad(set_to_none=True)
            self.manual_backward(self._step(batch, "train"))
            opt.step()
            if scheduler is not None:
                scheduler.step()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._step(batch, "val")

    def _log_epoch(self, split: str) -> None:
        """The epoch's mean loss and accuracy over all devices: the one sync per epoch."""
        if split not in self.sums:
            return
        count = torch.tensor(float(self.counts.pop(split)), device=self.device)
        sums = self.trainer.strategy.reduce(self.sums.pop(split), reduce_op="sum")
        count = self.trainer.strategy.reduce(count, reduce_op="sum")
        self.log_dict({f"{split}_loss": sums[0] / count, f"{split}_acc": sums[1] / count})

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_optimizers(self):  # noqa: ANN201 - Lightning accepts several shapes
        opt, sched = make_optimizer(self.optimizer_cfg, self.net.parameters(), self.total_updates)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}


def forward_loss(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of a step that torch.compile fuses: forward, loss and the epoch-sum stats."""
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    # [loss summed over the batch, correct predictions], for the on-device epoch sums.
    return loss, torch.stack((loss.detach() * len(y), (logits.argmax(1) == y).sum()))


def train_batches(
    x: torch.Tensor, y: torch.Tensor, t: DictConfig, rank: int = 0, world_size: int = 1
) -> TensorBatches:
    """This rank's shuffled training batches as the `train` group sets them."""
    return TensorBatches(
        x,
        y,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        drop_last=t.drop_last,
        rank=rank,
        world_size=world_size,
    )


def lightning_batches(
    x: torch.Tensor, y: torch.Tensor, cfg: DictConfig, trainer: pl.Trainer
) -> Grouped:
    """The trainer's rank's training batches, in the groups each training_step receives."""
    batches = train_batches(x, y, cfg.train, trainer.global_rank, trainer.world_size)
    return Grouped(batches, cfg.trainer.batch_group)


def clock(device: torch.device) -> float:
    """Wall time once the device has finished its queued work, so intervals are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def effective_lr(cfg: DictConfig) -> float:
    """`optimizer.lr`, times batch_size / lr_batch_size when `scale_lr_with_batch` is on.

    The linear scaling rule (Goyal et al. 2017): k times the batch gives k times fewer
    updates per epoch, so each update takes a k times larger step.
    """
    o = cfg.optimizer
    return o.lr * cfg.train.batch_size / o.lr_batch_size if o.scale_lr_with_batch else o.lr


def optimizer_config(cfg: DictConfig) -> DictConfig:
    """The `optimizer` group with the learning rate actually used (see effective_lr)."""
    return OmegaConf.merge(cfg.optimizer, {"lr": effective_lr(cfg)})


def make_optimizer(
    cfg: DictConfig, parameters: Iterable[torch.nn.Parameter], total_updates: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer recipe, shared by the pipeline and the benchmark's plain loop."""
    # fused: one kernel per parameter instead of ~10 small ops, which is what a step of a
    # model this small is made of (SGD takes `fused` too).
    opt = OPTIMIZERS[cfg.name](
        parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused
    )
    if cfg.scheduler == "none":
        return opt, None
    if cfg.scheduler == "onecycle":  # warm up to lr, then anneal: fast convergence, big batches
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=total_updates)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_updates)


class EpochRecorder(Checkpoint):
    """Per-epoch timing, the deterministic history for DVC plots, and the best weights.

    A Checkpoint subclass because it keeps the best weights, and so that Lightning calls
    its on_train_epoch_end after the module's, when the epoch's metrics are logged.
    """

    def __init__(self, train_size: int) -> None:
        self.train_size = train_size
        self.history: list[dict[str, float]] = []
        self.timings: list[dict[str, float]] = []
        self.best_acc, self.best_epoch, self.best_state = -1.0, -1, None

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_start = clock(module.device)

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_val = clock(module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        now = clock(module.device)
        train_s = self.t_val - self.t_start
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        timing = {
            "epoch_time_s": train_s,
            "samples_per_s": self.train_size / train_s,
            "val_time_s": now - self.t_val,
        }
        module.log_dict({**timing, "lr": lr, "global_step": float(trainer.global_step)})
        epoch = trainer.current_epoch + 1
        self.timings.append({"epoch": epoch, **timing})
        self.history.append(
            {
                "epoch": epoch,
                "step": trainer.global_step,
                "lr": lr,
                **{k: metrics[k] for k in HISTORY_FIELDS[3:]},
            }
        )
        if metrics["val_acc"] > self.best_acc:
            self.best_acc, self.best_epoch = metrics["val_acc"], epoch
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()
            }


def to_tensors(prepared: Path, split: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    x, y = prepare.load(prepared, split)
    return torch.from_numpy(x.copy()).to(device), torch.from_numpy(y.copy()).to(device)


def write_history(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(
            {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows
        )


def make_trainer(cfg: DictConfig, logger: MLFlowLogger | bool, callbacks: list) -> pl.Trainer:
    """A Trainer from the `trainer` group; epochs come from `train`, the one place they live."""
    if cfg.trainer.enable_progress_bar:
        # Redrawing on every one of ~900 steps per epoch costs more than the bar is worth.
        refresh = max(1, PROGRESS_REFRESH_STEPS // cfg.trainer.batch_group)
        callbacks = [*callbacks, RichProgressBar(refresh_rate=refresh)]
    return pl.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=cfg.trainer.precision,
        deterministic=cfg.trainer.deterministic,
        enable_progress_bar=cfg.trainer.enable_progress_bar,
        logger=logger,
        callbacks=callbacks,
        # EpochRecorder is the only checkpoint: it keeps the best weights in memory.
        enable_checkpointing=any(isinstance(cb, Checkpoint) for cb in callbacks),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=LOG_EVERY_N_STEPS,
    )


def apply_threads(trainer: DictConfig) -> None:
    """`trainer.threads`: PyTorch's intra-op threads; null keeps its default, one per core."""
    if trainer.threads is not None:
        torch.set_num_threads(trainer.threads)


def save_weights(net: torch.nn.Module, out: Path, model_name: str, epoch: int) -> Path:
    with replacing(out) as staging:
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        # One metadata key: safetensors writes a map's keys in no fixed order.
        info = json.dumps({"model": model_name, "epoch": epoch}, sort_keys=True)
        save_file(state, staging / "weights.safetensors", metadata={"lenet_mnist": info})
    return out / "weights.safetensors"


def train(
    cfg: DictConfig,
    prepared: Path,
    out: Path,
    history: Path,
    timings: Path,
    tags: dict[str, str] | None = None,
) -> dict:
    """Fit, keep the chosen weights, write outputs; return a summary for the console.

    `tags` go onto the MLflow run, such as a sweep's parent run id and the config hash.
    """
    # cuBLAS needs this before CUDA starts to run its matmuls deterministically.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    net = model.build(cfg.model.name)  # first draw from the seeded generator: the init
    train_size = json.loads((prepared / "stats.json").read_text())["sizes"]["train"]
    lr = effective_lr(cfg)
    uri = tracking.tracking_uri(cfg)
    tracking.experiment_id(MlflowClient(uri), cfg.logger.experiment_name)  # sets its artifacts
    logger = MLFlowLogger(
        experiment_name=cfg.logger.experiment_name,
        tracking_uri=uri,
        run_name=f"bs{cfg.train.batch_size}-ep{cfg.train.epochs}",
        tags={**tracking.run_tags(prepared), **(tags or {})},
    )
    recorder = EpochRecorder(train_size)
    trainer = make_trainer(cfg, logger, [recorder])
    shard = {"rank": trainer.global_rank, "world_size": trainer.world_size}
    x, y = to_tensors(prepared, "train", trainer.strategy.root_device)
    vx, vy = to_tensors(prepared, "val", trainer.strategy.root_device)
    batches = lightning_batches(x, y, cfg, trainer)
    steps = len(batches.batches)  # this rank's updates per epoch: its shard's batches
    tracking.retry_locked(
        lambda: logger.log_hyperparams(
            {
                **tracking.flat_params(cfg),
                "derived.train_size": train_size,
                "derived.iterations_per_epoch": steps,
                "derived.total_updates": steps * cfg.train.epochs,
                "derived.lr": lr,
            }
        )
    )
    t = cfg.train
    val = TensorBatches(vx, vy, 1024, shuffle=False, **shard)
    apply_threads(cfg.trainer)
    classifier = Classifier(net, optimizer_config(cfg), steps * t.epochs, cfg.trainer.compile)
    started = time.perf_counter()
    trainer.fit(classifier, batches, val)
    wall_s = time.perf_counter() - started

    kept_epoch = recorder.best_epoch if t.keep_best else t.epochs
    if t.keep_best:
        net.load_state_dict(recorder.best_state)
    weights = save_weights(net, out, cfg.model.name, kept_epoch)
    write_history(recorder.history, history)
    timings.parent.mkdir(parents=True, exist_ok=True)
    record = {"train_wall_s": wall_s, "epochs": recorder.timings}
    timings.write_text(json.dumps(record, indent=2) + "\n")

    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, tracking.WEIGHTS_TAG, tracking.sha256(weights))
    client.log_metric(run_id, "kept_epoch", kept_epoch)
    # Compilation, validation and Lightning included: the time a user waits for the fit.
    client.log_metric(run_id, "train_wall_s", wall_s)
    for artifact in (weights, history):
        client.log_artifact(run_id, str(artifact))
    return {
        "run_id": run_id,
        "weights": weights,
        "kept_epoch": kept_epoch,
        "best_val_acc": recorder.best_acc,
    }


def stage_main() -> None:
    """The DVC stage: paths from the command line, every value from params.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("out", type=Path, help="folder for weights.safetensors")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV (DVC plots)")
    parser.add_argument("--timings", type=Path, required=True, help="per-epoch timings JSON")
    parser.add_argument("--params", required=True, help="the composed config, params.yaml")
    args = parser.parse_args()
    cfg = params.load(args.params)
    summary = train(cfg, args.prepared, args.out, args.history, args.timings)
    print(
        f"train: kept epoch {summary['kept_epoch']} (val acc {summary['best_val_acc']:.4f}), "
        f"MLflow run {summary['run_id']}"
    )


def main() -> None:
    """Two front doors to the same `train`: the DVC stage, and Hydra for runs and sweeps.

    dvc.yaml calls the stage with `--params params.yaml`; anything else is a Hydra
    command line, such as `-m train.batch_size=32,64` (see lenet_mnist.sweep).
    """
    if any(a == "--params" or a.startswith("--params=") for a in sys.argv[1:]):
        stage_main()  # run_stage turns its PipelineError into one line
    else:
        from lenet_mnist import sweep

        sweep.hydra_main()


if __name__ == "__main__":
    run_stage(main)
