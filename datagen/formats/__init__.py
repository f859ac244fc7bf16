"""The formats datagen writes and reads (../shared/FORMATS.md): records, rejects, the manifest, OpenAI Batch lines, chat messages, JSON Schemas.
Imports only files/ (the JSONL reader, atomic writes) and errors (InputError, for a file that is not what it should be) of datagen;
everything above speaks it."""
