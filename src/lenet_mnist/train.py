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
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F  # noqa: N812
from omegaconf import DictConfig
from pytorch_lightning.loggers import MLFlowLogger
from safetensors.torch import save_file

from lenet_mnist import model, params, prepare, tracking
from lenet_mnist.batches import TensorBatches, iterations_per_epoch
from lenet_mnist.stage import exit_on_error, replacing

# Two messages every run would print that concern Lightning's own upgrades, not this run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
HISTORY_FIELDS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc")


class Classifier(pl.LightningModule):
    """Wraps a plain network with the loss, the metrics and the optimizer recipe."""

    def __init__(self, net: torch.nn.Module, optimizer: DictConfig, total_updates: int) -> None:
        super().__init__()
        self.net, self.optimizer_cfg, self.total_updates = net, optimizer, total_updates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        # Accumulated on the device and reduced once per epoch: no host sync per step.
        metrics = {f"{split}_loss": loss, f"{split}_acc": acc}
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):  # noqa: ANN201 - Lightning accepts several shapes
        cfg = self.optimizer_cfg
        opt = OPTIMIZERS[cfg.name](self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "none":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.total_updates)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochRecorder(pl.Callback):
    """Per-epoch timing, the deterministic history for DVC plots, and the best weights."""

    def __init__(self, train_size: int) -> None:
        self.train_size = train_size
        self.history: list[dict[str, float]] = []
        self.timings: list[dict[str, float]] = []
        self.best_acc, self.best_epoch, self.best_state = -1.0, -1, None

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_start = self._now()

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_val = self._now()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        now = self._now()
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


def make_trainer(cfg: DictConfig, logger: MLFlowLogger, recorder: EpochRecorder) -> pl.Trainer:
    """A Trainer from the `trainer` group; epochs come from `train`, the one place they live."""
    return pl.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=cfg.trainer.precision,
        deterministic=cfg.trainer.deterministic,
        enable_progress_bar=cfg.trainer.enable_progress_bar,
        logger=logger,
        callbacks=[recorder],
        enable_checkpointing=False,  # the stage writes the kept weights itself
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=1,  # metrics are epoch-level, so this logs once per epoch
    )


def save_weights(net: torch.nn.Module, out: Path, model_name: str, epoch: int) -> Path:
    with replacing(out) as staging:
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        # One metadata key: safetensors writes a map's keys in no fixed order.
        info = json.dumps({"model": model_name, "epoch": epoch}, sort_keys=True)
        save_file(state, staging / "weights.safetensors", metadata={"lenet_mnist": info})
    return out / "weights.safetensors"


def train(cfg: DictConfig, prepared: Path, out: Path, history: Path, timings: Path) -> dict:
    """Fit, keep the chosen weights, write outputs; return a summary for the console."""
    # cuBLAS needs this before CUDA starts to run its matmuls deterministically.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    net = model.build(cfg.model.name)  # first draw from the seeded generator: the init
    train_size = json.loads((prepared / "stats.json").read_text())["sizes"]["train"]
    steps = iterations_per_epoch(train_size, cfg.train.batch_size, cfg.train.drop_last)
    logger = MLFlowLogger(
        experiment_name=cfg.logger.experiment_name,
        tracking_uri=tracking.tracking_uri(cfg),
        run_name=f"bs{cfg.train.batch_size}-ep{cfg.train.epochs}",
        tags=tracking.run_tags(prepared),
    )
    logger.log_hyperparams(
        {
            **tracking.flat_params(cfg),
            "derived.train_size": train_size,
            "derived.iterations_per_epoch": steps,
            "derived.total_updates": steps * cfg.train.epochs,
        }
    )
    recorder = EpochRecorder(train_size)
    trainer = make_trainer(cfg, logger, recorder)
    x, y = to_tensors(prepared, "train", trainer.strategy.root_device)
    vx, vy = to_tensors(prepared, "val", trainer.strategy.root_device)
    t = cfg.train
    batches = TensorBatches(x, y, t.batch_size, shuffle=True, seed=t.seed, drop_last=t.drop_last)
    classifier = Classifier(net, cfg.optimizer, steps * t.epochs)
    trainer.fit(classifier, batches, TensorBatches(vx, vy, 1024, shuffle=False))

    kept_epoch = recorder.best_epoch if t.keep_best else t.epochs
    if t.keep_best:
        net.load_state_dict(recorder.best_state)
    weights = save_weights(net, out, cfg.model.name, kept_epoch)
    write_history(recorder.history, history)
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text(json.dumps(recorder.timings, indent=2) + "\n")

    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, tracking.WEIGHTS_TAG, tracking.sha256(weights))
    client.log_metric(run_id, "kept_epoch", kept_epoch)
    for artifact in (weights, history):
        client.log_artifact(run_id, str(artifact))
    return {"run_id": run_id, "kept_epoch": kept_epoch, "best_val_acc": recorder.best_acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("out", type=Path, help="folder for weights.safetensors")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV (DVC plots)")
    parser.add_argument("--timings", type=Path, required=True, help="per-epoch timings JSON")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = params.load(args.params)
    summary = train(cfg, args.prepared, args.out, args.history, args.timings)
    print(
        f"train: kept epoch {summary['kept_epoch']} (val acc {summary['best_val_acc']:.4f}), "
        f"MLflow run {summary['run_id']}"
    )


if __name__ == "__main__":
    exit_on_error(main)
