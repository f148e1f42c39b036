"""One trainer for every model: loop, EMA, gradient manipulation, early stopping, checkpoints."""

from neurodiff.training.data import TensorData
from neurodiff.training.early_stopping import EarlyStopping
from neurodiff.training.ema import EMA
from neurodiff.training.gradients import GradientManipulation, global_grad_norm
from neurodiff.training.seeding import seed_everything
from neurodiff.training.trainer import Trainer, TrainResult, resolve_device

__all__ = [
    "EMA",
    "EarlyStopping",
    "GradientManipulation",
    "TensorData",
    "TrainResult",
    "Trainer",
    "global_grad_norm",
    "resolve_device",
    "seed_everything",
]
