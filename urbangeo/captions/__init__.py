"""Captions: several captioners per image, CAPTURE consensus, divide-and-conquer refinement.

Importing this package loads nothing: every name below is imported when first used, and
heavy dependencies (transformers, spaCy, NLTK, sentence-transformers) load only when a
captioner or scorer needs them, from the ``captions`` extra.

Layout:

- :mod:`~urbangeo.captions.stages`: :func:`caption_stage` (the ``urbangeo caption`` command,
  settings :class:`~urbangeo.settings.CaptionSettings`), :func:`read_caption_items`,
  :func:`run_calls`, :class:`CaptionsFailedError`
- :mod:`~urbangeo.captions.captioners`: the :class:`Captioner` base
  (:mod:`~urbangeo.captions.captioners.base`) and one module per backend (``osm``,
  ``openai``, ``transformers``), registered by name in :data:`CAPTIONERS`;
  :func:`make_captioner`
- :mod:`~urbangeo.captions.osm`: OpenStreetMap features of a place and the captions written
  from them (vocabulary, layers, features, writer, describe)
- :mod:`~urbangeo.captions.cache`: the ``captions.jsonl`` cache of calls
- :mod:`~urbangeo.captions.prompts`: the paper's prompts
- :mod:`~urbangeo.captions.scenegraph`: FACTUAL and rule-based scene-graph parsers
- :mod:`~urbangeo.captions.capture`: :func:`capture_score`, :class:`CaptureScorer`
- :mod:`~urbangeo.captions.consensus`: :func:`select_caption`
- :mod:`~urbangeo.captions.refine`: SAM crops, maximal rectangles, OWLv2 phrase filter
- :mod:`~urbangeo.captions.wordnet`, :mod:`~urbangeo.captions.stopwords`: offline set-up of
  WordNet and CAPTURE's stop words (``urbangeo captions setup``)
"""

from urbangeo._lazy import lazy_exports

# Public name -> the submodule that defines it, imported on first use.
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "caption_stage": ".stages",
        "read_caption_items": ".stages",
        "run_calls": ".calls",
        "CaptionsFailedError": ".stages",
        "BACKENDS": ".captioners",
        "CAPTIONERS": ".captioners",
        "make_captioner": ".captioners",
        "Captioner": ".captioners.base",
        "CaptionError": ".captioners.base",
        "ImageItem": ".captioners.base",
        "CaptionCache": ".cache",
        "Prompts": ".prompts",
        "load_prompts": ".prompts",
        "SceneGraph": ".scenegraph",
        "get_parser": ".scenegraph",
        "CaptureScorer": ".capture",
        "capture_score": ".capture",
        "select_caption": ".consensus",
        "setup_wordnet": ".wordnet",
        "setup_stop_words": ".stopwords",
    },
)
