"""urbangeo: urban region profiling from OpenStreetMap, imagery and captions.

The library is organised by stage (``urbangeo.geo``, ``urbangeo.io``, ``urbangeo.model``...);
importing :mod:`urbangeo` itself is cheap and pulls in no heavy stack.
"""

from urbangeo.errors import UrbangeoError

__version__ = "0.1.0"

__all__ = ["UrbangeoError", "__version__"]
