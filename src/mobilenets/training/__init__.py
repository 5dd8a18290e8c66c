"""Training, evaluation and prediction: a task-agnostic loop over a :class:`~.task.Task`.

config (TrainConfig, recipes) -> loop.fit (epochs, DDP, EMA, checkpoints, exact resume) -> run folder;
evaluate / predict read what the run wrote.
"""

from .config import RECIPES, TrainConfig, config_from_recipe
from .distributed import GlobalBatchSampler
from .evaluate import Evaluation, Prediction, evaluate, predict
from .loop import FitResult, fit
from .optim import TrainStep, autocast_dtype, lr_at, make_optimizer
from .run_folder import RunFiles, load_config
from .task import Classification, Task

__all__ = [
    "RECIPES",
    "Classification",
    "Evaluation",
    "FitResult",
    "GlobalBatchSampler",
    "Prediction",
    "RunFiles",
    "Task",
    "TrainConfig",
    "TrainStep",
    "autocast_dtype",
    "config_from_recipe",
    "evaluate",
    "fit",
    "load_config",
    "lr_at",
    "make_optimizer",
    "predict",
]
