"""datagen: regenerate LLaVA-style visual instruction data with any text-only teacher, and train on it."""

__version__ = "0.1.0"
