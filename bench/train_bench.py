"""Trainer benchmark (CPU, tiny models): padding efficiency, step time vs stock transformers,
the feature cache in stage 1, and data-loader throughput. Writes bench/results_train.md.

    PYTHONPATH=. python bench/train_bench.py [--out bench/results_train.md]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.train import synthetic  # noqa: E402
from datagen.train.cache import FeatureCache, vision_fingerprint  # noqa: E402
from datagen.train.checkpoint import apply_stage  # noqa: E402
from datagen.train.data import Collator, LengthGroupedSampler, SupervisedDataset  # noqa: E402
from datagen.train.model import LlavaStep, build_base, image_processor_class, num_image_tokens  # noqa: E402

WORDS = ("the a man woman dog bus street red blue table people standing next to near large small white "
         "picture shows several two sitting holding looking while there is are of on in with and").split()


def sentence(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def realistic_records(n, rng):
    """LLaVA-Instruct's mix: conversations (multi-turn, short answers), detail descriptions (one long
    answer), complex reasoning (one medium answer), in the 58k/23k/77k proportions."""
    records = []
    for i in range(n):
        kind = rng.choices(("conv", "detail", "complex"), weights=(58, 23, 77))[0]
        if kind == "conv":
            turns = [(sentence(rng, 5, 12), sentence(rng, 8, 60)) for _ in range(rng.randint(2, 6))]
        elif kind == "detail":
            turns = [(sentence(rng, 6, 10), " ".join(sentence(rng, 8, 20) for _ in range(rng.randint(4, 10))))]
        else:
            turns = [(sentence(rng, 10, 20), " ".join(sentence(rng, 10, 25) for _ in range(rng.randint(2, 6))))]
        convs = []
        for k, (q, a) in enumerate(turns):
            convs += [{"from": "human", "value": ("<image>\n" + q) if k == 0 else q}, {"from": "gpt", "value": a}]
        records.append({"id": str(i), "image": "x.png", "conversations": convs})
    return records


def padding_efficiency(lengths, batch_size, group):
    batches = list(LengthGroupedSampler(lengths, batch_size, seed=0, group=group))
    real = sum(lengths[i] for b in batches for i in b)
    computed = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return real / computed


def interleaved(a, b, repeats, clock=time.process_time):
    """Median seconds of a and b, run in random order each round. The default clock is this
    process's CPU time, which other jobs on a shared machine barely disturb; wall time is not."""
    a(), b()  # warm-up
    times = {a: [], b: []}
    order = random.Random(1)
    for _ in range(repeats):
        for fn in order.sample([a, b], 2):
            t = clock()
            fn()
            times[fn].append(clock() - t)
    return statistics.median(times[a]), statistics.median(times[b])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("results_train.md")))
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="train_bench_"))
    rows = []

    llava, tok, proc = build_base("tiny", "tiny", "mlp2x_gelu", seed=0)
    n_image = num_image_tokens(llava.config)
    img_id = llava.config.image_token_id

    # 1. Padding efficiency (stage 2, vicuna_v1, 2048 max length, per-device batch 16).
    from PIL import Image

    (work / "pad").mkdir()
    Image.new("RGB", (8, 8)).save(work / "pad" / "x.png")
    ds = SupervisedDataset(realistic_records(4000, rng), work / "pad", tok, "vicuna_v1", img_id, n_image, 2048, proc)
    lengths = ds.lengths
    eff_grouped, eff_random = padding_efficiency(lengths, 16, True), padding_efficiency(lengths, 16, False)
    rows.append(("Stage-2 padding efficiency, length-grouped batches (target >= 90%)", f"{eff_grouped:.1%}"))
    rows.append(("Stage-2 padding efficiency, random batches", f"{eff_random:.1%}"))
    rows.append(("  length mix (tokens): min / median / max", f"{min(lengths)} / {int(statistics.median(lengths))} / {max(lengths)}"))

    # 2. Step time: our step vs stock LlavaForConditionalGeneration, same weights, same batch.
    from transformers import LlavaForConditionalGeneration

    apply_stage(llava, "finetune")
    stock = LlavaForConditionalGeneration(llava.config)
    stock.load_state_dict(llava.state_dict())
    for name, p in stock.named_parameters():
        p.requires_grad_(not name.startswith("model.vision_tower."))
    ids = torch.tensor([[1] + [img_id] * n_image + [rng.randrange(5, 261) for _ in range(111)] for _ in range(8)])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
             "pixel_values": torch.randn(8, 3, 64, 64)}
    step = LlavaStep(llava)

    def ours():
        step(**batch).loss.backward()

    def theirs():
        stock(**batch).loss.backward()

    wall_o, wall_s = interleaved(ours, theirs, args.repeats, time.perf_counter)
    # One thread for the CPU-time comparison: idle OpenMP workers spin, and spinning counts as CPU time.
    torch.set_num_threads(1)
    mo, ms = interleaved(ours, theirs, args.repeats * 3)
    torch.set_num_threads(2)
    rows.append(("Step (fwd+bwd, batch 8 x 128 tokens), CPU time on 1 thread: ours / stock LlavaForConditionalGeneration", f"{mo * 1e3:.1f} ms / {ms * 1e3:.1f} ms"))
    rows.append(("  ratio ours / stock (target <= 1.05x): CPU time / wall time", f"{mo / ms:.3f}x / {wall_o / wall_s:.3f}x"))

    # 3. Stage 1 with and without the feature cache: data loading + projector-only step.
    items = synthetic.make_shapes(work / "shapes", 128, seed=0)
    align = synthetic.align_records(items)
    s1, tok1, proc1 = build_base("tiny", "tiny", "mlp2x_gelu", seed=0)
    apply_stage(s1, "pretrain")
    col = Collator(tok1.pad_token_id)
    cache = FeatureCache(str(work / "cache"), vision_fingerprint(s1, "pad"))
    t = time.perf_counter()
    cache.fill(s1, [work / "shapes" / it["image"] for it in items], proc1, "pad")
    fill_time = time.perf_counter() - t
    plain = SupervisedDataset(align, work / "shapes", tok1, "plain", img_id, n_image, 2048, proc1)
    cached = SupervisedDataset(align, work / "shapes", tok1, "plain", img_id, n_image, 2048, proc1,
                               feature_cache=FeatureCache(str(work / "cache"), cache.fingerprint))
    s1_step = LlavaStep(s1)

    def stage1(dataset):
        def run():
            for b in range(0, 64, 16):
                s1_step(**col([dataset[i] for i in range(b, b + 16)])).loss.backward()
        return run

    tp, tc = interleaved(stage1(plain), stage1(cached), max(3, args.repeats // 3))
    tp, tc = tp / 4, tc / 4
    rows.append(("Stage-1 step incl. data loading (batch 16): images / cached features", f"{tp * 1e3:.1f} ms / {tc * 1e3:.1f} ms"))
    rows.append(("  speed-up from the cache", f"{tp / tc:.2f}x (one-off fill: {fill_time:.1f} s for 128 images)"))
    pix = col([plain[i] for i in range(16)])
    feats = col([cached[i] for i in range(16)])
    mp, mc = interleaved(lambda: s1_step(**pix).loss.backward(), lambda: s1_step(**feats).loss.backward(), args.repeats * 2)
    rows.append(("Stage-1 model step only: vision tower + projector + frozen LM / cached", f"{mp * 1e3:.1f} ms / {mc * 1e3:.1f} ms ({mp / mc:.2f}x)"))

    # 4. Data-loader throughput at real scale: COCO-like 640x480 JPEGs -> CLIP 336 px, vicuna_v1 tokenising.
    proc336 = image_processor_class()(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    (work / "coco").mkdir()
    for i in range(64):
        arr = torch.randint(0, 256, (480, 640, 3), dtype=torch.uint8).numpy()
        Image.fromarray(arr).save(work / "coco" / f"{i}.jpg", quality=90)
    recs = realistic_records(512, rng)
    for i, r in enumerate(recs):
        r["image"] = f"{i % 64}.jpg"
    t = time.perf_counter()
    real = SupervisedDataset(recs, work / "coco", tok, "vicuna_v1", img_id, 576, 2048, proc336)
    tokenise = (time.perf_counter() - t) / len(recs)
    t = time.perf_counter()
    for i in range(96):
        real[i]
    load = (time.perf_counter() - t) / 96
    rows.append(("Data loader, 1 process: tokenise (up front) + 640x480 JPEG -> 336 px", f"{1 / (tokenise + load):.0f} samples/s"))
    rows.append(("  of which tokenising / image preprocessing", f"{tokenise * 1e3:.2f} ms / {load * 1e3:.1f} ms per sample"))
    rows.append(("  8 ranks x 2 workers (estimate; stage 2 of a 7B consumes ~50/s)", f"~{16 / (tokenise + load):.0f} samples/s"))

    lines = [
        "## Trainer (CPU, tiny models)", "",
        f"Measured by `bench/train_bench.py` on {platform.machine()} CPU, torch {torch.__version__}, 2 threads, "
        "tiny CLIP (64 px, 16 patches) + tiny Llama (~0.5M parameters). No GPU was available to this task: "
        "GPU throughput, bf16 and DeepSpeed/FSDP were not measured. The machine was shared with other jobs, "
        "so ratios come from interleaved runs timed in process CPU time.", "",
        "| Measurement | Result |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows], "",
        "Notes: our step runs the stock `LlavaForConditionalGeneration` forward (the projector runs in our "
        "wrapper so data-parallel engines see it), so the step-time ratio measures wrapper overhead; "
        "repeated runs on this shared 2-core machine scatter by about +-5% around 1.0. The feature cache "
        "saves the frozen tower's forward and the image decoding; the backward through the LM is "
        "unchanged, hence the modest model-only gain. The loader figure is one process; each rank runs "
        "its own workers (`--num-workers`), and the estimate assumes 2 per rank.", "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({"work_dir": str(work)}))


if __name__ == "__main__":
    main()
