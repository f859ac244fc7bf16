"""Test doubles shipped with datagen for your own CI: a fault-injecting OpenAI-compatible server (`datagen mock-server`).
Imports teachers and below (the mock teacher writes its answers)."""
