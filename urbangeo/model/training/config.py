"""The modes of a training run, its file names and what may change on resumption.

The settings themselves are declared once, as :class:`urbangeo.settings.TrainSettings`
(``TrainConfig`` is its old name, kept for one release).

Modes (the paper's model and its ablations / baseline, :data:`MODES`):

============  =======  ============================================  ====
mode          tokens   loss                                           mu
============  =======  ============================================  ====
urbanln       248      teacher + queues, (1-mu) L_C + mu L_D          0.5
no-ipsi       77       same as urbanln, native text context           0.5
no-distill    248      plain CLIP contrastive loss (no teacher)       —
urbanclip     77       plain CLIP contrastive loss (no teacher)       —
============  =======  ============================================  ====

Freezing (``train=``, :data:`TRAIN_CHOICES`): the paper reports far fewer trainable parameters
than UrbanCLIP and UrbanVLP ("minimal fine-tuning" of pretrained CLIP, AdamW at lr 1e-7) but
does not say which parameters it freezes. ``both`` (default) trains everything, as Long-CLIP
does; ``image`` / ``text`` train one tower (the other frozen; ``logit_scale`` always trains);
``last-n`` trains the last ``train_last_n`` transformer blocks of each tower, their final norms
and projections, the (IPSI-stretched) text positional embedding and ``logit_scale``. Region
embeddings come from the image tower, so ``text`` alone never changes them.

This module imports no torch: settings can be declared, offered and checked without it.
"""

from __future__ import annotations

from urbangeo.settings.model import IMAGE_NORMS as IMAGE_NORMS
from urbangeo.settings.model import MODES as MODES
from urbangeo.settings.model import TRAIN_CHOICES as TRAIN_CHOICES
from urbangeo.settings.model import ModeSpec as ModeSpec
from urbangeo.settings.model import TrainSettings

#: Per-step and per-epoch metrics of every run, beside the run's GeoPackage.
METRICS_CSV = "train_metrics.csv"
#: The full training state (``checkpoints/<name>/last.pt``), to resume from.
LAST_CHECKPOINT = "last.pt"
#: The final weights (``checkpoints/<name>/model.pt``), loadable by ``create_model``.
MODEL_FILE = "model.pt"
#: The ``format`` entry of a ``last.pt``.
CHECKPOINT_FORMAT = "urbangeo-train-state"
#: Settings that may change between an interrupted run and its resumption: how it runs
#: (the runtime settings), where its initial weights came from (the checkpoint holds them now),
#: and image_norm (the interrupted run's recorded statistics decide on resumption).
RESUME_FREE = frozenset(
    {
        "num_workers",
        "checkpoint_every",
        "checkpoint_minutes",
        "device",
        "val_every",
        "checkpoint",
        "pretrained",
        "image_norm",
        "from_scratch",
    }
)

#: The settings of a training run used to be a second declaration, ``TrainConfig``; they are
#: :class:`~urbangeo.settings.TrainSettings` now. The old name stays for one release.
TrainConfig = TrainSettings
