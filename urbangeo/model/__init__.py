"""Model half of UrbanLN: CLIP with IPSI-stretched text positions and momentum self-distillation.

``urbangeo.model.clip`` builds open_clip models (pretrained tag, local checkpoint or random init)
and stretches their text context with Long-CLIP's interpolation (IPSI); ``urbangeo.model.distill``
holds the EMA teacher, the feature queues and the distillation loss; ``data`` reads image–caption
pairs, ``training`` pre-trains (``training.train``), ``encoders`` (the trained model and the
baselines) and ``embed`` turn a run's images into region embeddings, and ``stages`` wraps both
as GeoPackage stages for the CLI. ``defaults``, ``training.config`` and ``encoders`` (its
registry) import without torch; the rest pull it in, and open_clip only when a name that needs
it is used.
"""

from urbangeo._lazy import lazy_exports

# Lazy so that `import urbangeo.model` does not pay for open_clip's import (several seconds).
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ClipBundle": ".clip",
        "LongTokenizer": ".clip",
        "ModelConfigError": ".clip",
        "PretrainedWeightsError": ".clip",
        "TINY_MODEL_CONFIGS": ".clip",
        "create_model": ".clip",
        "extend_context_length": ".clip",
        "register_model_config": ".clip",
        "register_tiny_models": ".clip",
        "stretch_positional_embedding": ".clip",
        "EMATeacher": ".distill",
        "FeatureQueue": ".distill",
        "concat_all_gather": ".distill",
        "ema_update": ".distill",
        "momentum_distillation_loss": ".distill",
        "load_pairs": ".data",
        "split_pairs": ".data",
        "MODES": ".training.config",
        "TrainConfig": ".training.config",
        "TrainSettings": ".training.config",
        "TrainResult": ".training.trainer",
        "Trainer": ".training.trainer",
        "ENCODERS": ".encoders",
        "ImageEncoder": ".encoders.base",
        "build_encoder": ".encoders",
        "RegionEmbeddings": ".embed",
        "embed_images": ".embed",
        "embed_regions": ".embed",
        "train_stage": ".stages",
        "embed_stage": ".stages",
    },
)
