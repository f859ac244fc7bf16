"""The formats datagen writes and reads (../shared/FORMATS.md): records, rejects, the manifest, chat messages, JSON Schemas.
Imports nothing of datagen; everything above speaks it."""
