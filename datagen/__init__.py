"""datagen: regenerate LLaVA-style visual instruction data with any text-only teacher, and train on it.

Layers, bottom first (tests/test_import_layers.py holds them): errors, redaction, files, formats -> source ->
quality -> tasks -> teachers -> run -> data, judge, train, testing -> eval -> api -> cli.

The Python API (datagen/api.py, its __all__) is named here too: `from datagen import GenerateSettings, generate`."""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # This module sits below every layer (they read __version__ here) and the API above them all, so the API's
    # names load on first use, by name: `import datagen` stays free, and no layer reaches the API through here.
    if not name.startswith("__"):
        api = importlib.import_module("datagen.api")
        if name in api.__all__:
            return getattr(api, name)
    raise AttributeError(f"module 'datagen' has no attribute {name!r}")
