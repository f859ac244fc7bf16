"""The real-model tier: SmolLM2-135M-Instruct (built by `make setup-real`) behind `transformers serve`, started once
per session on a free local port and stopped at the end.

Without the built model these tests skip, saying how to get it; `make test` sets DATAGEN_REQUIRE_REAL=1 so that
there a missing model fails instead of passing unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datagen.testing.real_model import DEFAULT_FOLDER, RealModelMissing, require_built, serve
from real_helpers import DATA, IMAGES, MAX_TOKENS, REPO, TIMEOUT_S, datagen


@pytest.fixture(scope="session")
def smollm2() -> Path:
    try:
        return require_built(REPO / DEFAULT_FOLDER).resolve()
    except RealModelMissing as missing:
        if os.environ.get("DATAGEN_REQUIRE_REAL"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def real_server(smollm2, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve(log=log) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def real_generate(smollm2, real_server, tmp_path_factory):
    """One `generate` run, all three tasks on the first IMAGES sample images, against the served SmolLM2."""
    out = tmp_path_factory.mktemp("real") / "smollm2"
    result = datagen("generate", "--captions", DATA / "captions.json", "--instances", DATA / "instances.json", "--out", out,
                     "--base-url", real_server, "--model", smollm2, "--limit", IMAGES, "--max-tokens", MAX_TOKENS,
                     "--concurrency", 2, "--timeout", TIMEOUT_S, "--max-retries", 1, "--seed", 0, "--no-progress")
    return result, out
