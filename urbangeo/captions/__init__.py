"""Captions: several captioners per image, CAPTURE consensus, divide-and-conquer refinement.

Import the parts you need; heavy dependencies (transformers, spaCy, NLTK,
sentence-transformers) load only when used, from the ``captions`` extra.

- :mod:`urbangeo.captions.stages`: :func:`caption_stage` (the ``urbangeo caption`` command)
- :mod:`urbangeo.captions.backends`: ``openai``, ``transformers`` captioners
- :mod:`urbangeo.captions.osm`: the offline OpenStreetMap captioner
- :mod:`urbangeo.captions.prompts`: the paper's prompts
- :mod:`urbangeo.captions.scenegraph`: FACTUAL and rule-based scene-graph parsers
- :mod:`urbangeo.captions.capture`: :func:`capture_score`, :class:`SceneGraph`
- :mod:`urbangeo.captions.consensus`: :func:`select_caption`
- :mod:`urbangeo.captions.refine`: SAM crops, maximal rectangles, OWLv2 phrase filter
- :mod:`urbangeo.captions.wordnet`: offline WordNet setup for NLTK
"""
