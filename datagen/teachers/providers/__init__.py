"""One file per wire format (OpenAI chat, Azure OpenAI, Anthropic Messages, the offline mock) over one base that
owns retries, the first-request probe, the rate limiter and the dead-server watch; registry.py names them."""
