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

    def fill(self, llava, paths, processor, aspect: str, device=None, num_workers: int = 0,
             batch_size: int = 32, shard_size: int = 4096) -> None:
        """Compute features for the images not cached yet (decoded by num_workers processes, encoded
        on device); unreadable ones are reported and left out."""
        todo = sorted({p for p in paths if p not in self})
        if not todo:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        log.info("caching vision features of %d images in %s", len(todo), self.folder)
        tower = llava.model.vision_tower
        if device is not None:
            tower.to(device)
        loader = torch.utils.data.DataLoader(
            _Images(todo, processor, aspect), batch_size=batch_size, num_workers=num_workers, collate_fn=_stack_readable
        )
        pending: dict[str, torch.Tensor] = {}
        for ok, pixels in loader:
            if ok:
                feats = vision_features(llava, pixels.to(next(tower.parameters()).device)).cpu()
                pending.update({_key(p): f.contiguous() for p, f in zip(ok, feats)})
            if len(pending) >= shard_size:
                self._write_shard(pending)
                pending = {}
        self._write_shard(pending)

    def _write_shard(self, tensors: dict[str, torch.Tensor]) -> None:
        if not tensors:
            return
        name = f"features-{len(set(self.shards.values())):05d}.safetensors"
        save_file(tensors, str(self.folder / name))
        self.shards.update({k: name for k in tensors})
        # The index is written last, so a crash mid-build leaves a cache that is merely incomplete.
        self.index_file.write_text(json.dumps({"fingerprint": self.fingerprint, "shards": self.shards}))


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths, processor, aspect):
        self.paths, self.processor, self.aspect = paths, processor, aspect

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return self.paths[i], load_image(self.paths[i], self.processor, self.aspect)
        except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"
            log.warning("image %s unreadable, not cached: %s: %s", self.paths[i], type(e).__name__, e)
            return self.paths[i], None


def _stack_readable(items):
    ok = [(p, x) for p, x in items if x is not None]
    return [p for p, _ in ok], (torch.stack([x for _, x in ok]) if ok else None)
