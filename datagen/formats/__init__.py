"""The formats datagen writes and reads (../shared/FORMATS.md): records, rejects, the manifest, OpenAI Batch lines, chat messages, JSON Schemas.
Imports only files/ of datagen (the JSONL reader, atomic writes); everything above speaks it."""
