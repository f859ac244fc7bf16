"""datagen: regenerate LLaVA-style visual instruction data with any text-only teacher, and train on it.

Layers, bottom first (tests/test_import_layers.py holds them): errors, redaction, files, formats -> source ->
quality -> tasks -> teachers -> run -> data, judge, train, testing -> eval -> cli."""

__version__ = "0.1.0"
