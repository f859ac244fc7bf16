"""Frozen-vision feature cache: select-layer patch features computed once, stored in safetensors
shards, reused by later runs (and by stage 2) instead of running the vision tower."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .data import load_image
from .model import vision_features

log = logging.getLogger("datagen.train")


def vision_fingerprint(llava, aspect: str) -> str:
    """Identifies the tower's weights and preprocessing, so a cache never serves another model."""
    tower = llava.model.vision_tower
    h = hashlib.sha1(json.dumps(tower.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(tower.get_input_embeddings().weight.detach().float().cpu().numpy().tobytes())
    h.update(aspect.encode())
    return h.hexdigest()


def _key(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()


class FeatureCache:
    def __init__(self, folder: str, fingerprint: str):
        self.folder = Path(folder)
        self.index_file = self.folder / "index.json"
        self.fingerprint = fingerprint
        self.shards: dict[str, str] = {}
        if self.index_file.is_file():
            index = json.loads(self.index_file.read_text())
            if index["fingerprint"] != fingerprint:
                raise ValueError(
                    f"--cache-features {folder} holds features of another vision tower or preprocessing; "
                    "use a new folder"
                )
            self.shards = index["shards"]
        self._open: dict[str, object] = {}

    def __contains__(self, path: Path) -> bool:
        return _key(path) in self.shards

    def get(self, path: Path) -> torch.Tensor:
        key = _key(path)
        if key not in self.shards:
            raise KeyError(f"no cached features for {path} (unreadable when the cache was built)")
        shard = self.shards[key]
        if shard not in self._open:
            self._open[shard] = safe_open(str(self.folder / shard), framework="pt")
        return self._open[shard].get_tensor(key)

    def fill(self, llava, paths, processor, aspect: str, batch_size: int = 32, shard_size: int = 4096) -> None:
        """Compute features for the images not cached yet; unreadable ones are reported and left out."""
        todo = sorted({p for p in paths if p not in self})
        if not todo:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        log.info("caching vision features of %d images in %s", len(todo), self.folder)
        pending: dict[str, torch.Tensor] = {}
        for b in range(0, len(todo), batch_size):
            ok, pixels = [], []
            for p in todo[b : b + batch_size]:
                try:
                    pixels.append(load_image(p, processor, aspect))
                    ok.append(p)
                except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"
                    log.warning("image %s unreadable, not cached: %s: %s", p, type(e).__name__, e)
            if ok:
                device = next(llava.model.vision_tower.parameters()).device
                feats = vision_features(llava, torch.stack(pixels).to(device)).cpu()
                pending.update({_key(p): f.contiguous() for p, f in zip(ok, feats)})
            if len(pending) >= shard_size or b + batch_size >= len(todo):
                self._write_shard(pending)
                pending = {}

    def _write_shard(self, tensors: dict[str, torch.Tensor]) -> None:
        if not tensors:
            return
        name = f"features-{len(set(self.shards.values())):05d}.safetensors"
        save_file(tensors, str(self.folder / name))
        self.shards.update({k: name for k in tensors})
        # The index is written last, so a crash mid-build leaves a cache that is merely incomplete.
        self.index_file.write_text(json.dumps({"fingerprint": self.fingerprint, "shards": self.shards}))
