"""Working with finished data: export (LLaVA JSON, chat messages), merge of shards, the dataset card, audit of any LLaVA file, the HTML report.
Imports run and below; only the command line imports it."""
