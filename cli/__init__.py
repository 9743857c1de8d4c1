"""The ``urbangeo`` command: thin wrappers over the library (installed as ``urbangeo_cli``)."""
