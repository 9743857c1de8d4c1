"""UrbanLN pre-training (``train``): CLIP + IPSI + momentum self-distillation.

=================  ==========================================================================
module             holds
=================  ==========================================================================
``config``         the modes, freezing choices, file names, RESUME_FREE (no torch)
``pairs``          the run's pairs: split, tokenised, fingerprinted
``contrastive``    the forward pass of both towers, text cut to its tokens
``image_norm``     where the run's image normalisation comes from
``optim``          parameter freezing, AdamW parameter groups, warm-up + cosine schedule
``budget``         the run's length (steps, samples or epochs), when checkpoints are due
``batch``          ``batch_size = "auto"``: the memory budget, the probe, the size chosen
``metrics``        held-out image↔text retrieval
``distributed``    the torchrun job: :class:`DistInfo` and collectives
``checkpoint``     atomic checkpoints, resuming from them, model metadata, RNG state
``log``            ``train_metrics.csv``, the progress bar of the steps
``stopping``       Ctrl-C at a safe point, the error of a run that diverged
``trainer``        :class:`Trainer` and :func:`train`
=================  ==========================================================================

Names are imported on first use, so that ``urbangeo.model.training.config`` (and this package)
import without torch.
"""

from urbangeo._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CHECKPOINT_FORMAT": ".config",
        "IMAGE_NORMS": ".config",
        "LAST_CHECKPOINT": ".config",
        "METRICS_CSV": ".config",
        "MODEL_FILE": ".config",
        "MODES": ".config",
        "RESUME_FREE": ".config",
        "TRAIN_CHOICES": ".config",
        "ModeSpec": ".config",
        "TrainConfig": ".config",
        "TrainSettings": ".config",
        "ContrastiveModule": ".contrastive",
        "encode_text": ".contrastive",
        "apply_freezing": ".optim",
        "param_groups": ".optim",
        "warmup_cosine": ".optim",
        "Budget": ".budget",
        "CheckpointClock": ".budget",
        "training_budget": ".budget",
        "BatchChoice": ".batch",
        "auto_batch_size": ".batch",
        "choose_batch_size": ".batch",
        "encode_pairs": ".metrics",
        "retrieval_metrics": ".metrics",
        "DistInfo": ".distributed",
        "init_distributed": ".distributed",
        "TrainingPairs": ".pairs",
        "load_training_pairs": ".pairs",
        "choose_image_norm": ".image_norm",
        "image_norm_source": ".image_norm",
        "atomic_save": ".checkpoint",
        "load_train_state": ".checkpoint",
        "model_metadata": ".checkpoint",
        "resume_state": ".checkpoint",
        "METRIC_COLUMNS": ".log",
        "MetricsLog": ".log",
        "StopRequest": ".stopping",
        "TrainResult": ".trainer",
        "Trainer": ".trainer",
        "train": ".trainer",
    },
)
