"""Embedding images at the speed of the hardware: decode, the model per precision, the whole `agile pool add`.

1,000 JPEGs of 500x375 made from the 500 real CIFAR-10 photos in ``../shared/data/clip-vit-b32/cifar10_500.npz``
(upscaled bicubic, each also mirrored: 1,000 different files) under ``benchmarks/.data/embedding_jpegs/``;
open_clip ViT-B-32 with RANDOM weights (``pretrained=None``; no weights can be downloaded here): the
architecture and the cost are the real ones, so the speeds are real; the cosines to fp32 are measured
on the real pixels through the random-weight model.

(a) decode alone: read + hash + decode + preprocess, one thread and the pipeline's thread pool;
(b) the model alone, images/s per variant (fp32, bf16 weights, bf16 autocast, int8 dynamic Linear in
    torch, int8 in ONNX Runtime (what ``--precision int8`` runs where onnxruntime is installed), fp32
    channels-last; torch.compile with ``--compile``), and its cosine to fp32 (min over images);
(c) the full ``agile pool add`` pipeline (``EmbeddingStore.add_images``: parallel decode + batched
    inference) with the precision chosen by capability (native bf16 here) and forced as on a CPU
    without native bf16 (``native_bf16=False`` -> int8), each as a fraction of the model-bound rate
    of the same variant measured just before it; decode thread counts 1 and 2;
peers: today's path (load one by one, fp32), a plain open_clip + torch DataLoader(num_workers=2) loop
(fp32 as a user would write it, and with the bf16 tower to compare worker processes with our threads);
(d) ``--avx2``: the model variants again in a subprocess with oneDNN and MKL capped at AVX2
    (``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``): the
    cost of bf16 where it is emulated. fbgemm (int8) has no such cap and still uses AVX-512 VNNI here.

    .venv/bin/python benchmarks/bench_embedding.py [--avx2] [--compile] [--images 1000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling.compute import CpuInfo  # noqa: E402
from agile_modeling.encoders import OpenClipEncoder, OpenClipSpec, onnx_int8  # noqa: E402
from agile_modeling.encoders.open_clip import _load  # noqa: E402
from agile_modeling.store import EmbeddingStore  # noqa: E402
from agile_modeling.store.image_source import load_image  # noqa: E402
from agile_modeling.store.pipeline import decoded_images  # noqa: E402

warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = HERE / ".data" / "embedding_jpegs"
CIFAR = HERE.parent.parent / "shared" / "data" / "clip-vit-b32" / "cifar10_500.npz"
SPEC = OpenClipSpec(model="ViT-B-32", pretrained=None)
BATCH = 64


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def make_jpegs(n: int) -> list[str]:
    DATA.mkdir(parents=True, exist_ok=True)
    pixels = np.load(CIFAR)["images"]
    paths = []
    for i in range(n):
        path = DATA / f"img{i:04d}.jpg"
        if not path.exists():
            im = Image.fromarray(pixels[i % len(pixels)]).resize((500, 375), Image.BICUBIC)
            if i >= len(pixels):
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            im.save(path, quality=90)
        paths.append(str(path))
    return paths


def rate(fn, n: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def variants(visual):
    """name -> (callable on a float32 batch, one-time cost s). The bf16 variants only where bf16 is
    native (emulated, they run at 1-3 images/s: minutes per row, and never chosen there)."""
    out = {"fp32": (lambda x: visual(x), 0.0)}
    if CpuInfo.read().native_bf16() or os.environ.get("ATEN_CPU_CAPABILITY") == "avx2":
        t = time.perf_counter()
        bf = copy.deepcopy(visual).to(torch.bfloat16)
        out["bf16 weights"] = (lambda x: bf(x.to(torch.bfloat16)), time.perf_counter() - t)

        def autocast(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return visual(x)

        out["bf16 autocast"] = (autocast, 0.0)
    t = time.perf_counter()
    q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(visual), {torch.nn.Linear}, dtype=torch.qint8)
    out["int8 dynamic Linear"] = (lambda x: q(x), time.perf_counter() - t)
    if onnx_int8.available():  # what --precision int8 runs where onnxruntime is installed
        t = time.perf_counter()
        size = visual.image_size
        ort_tower = onnx_int8.OnnxInt8Tower(visual, int(size[0] if isinstance(size, (tuple, list)) else size))
        out["int8 ONNX Runtime"] = (ort_tower, time.perf_counter() - t)
    cl = copy.deepcopy(visual).to(memory_format=torch.channels_last)
    out["fp32 channels-last"] = (lambda x: cl(x.contiguous(memory_format=torch.channels_last)), 0.0)
    return out


def model_alone(x: torch.Tensor, x_cos: torch.Tensor, names=None, compile_too=False) -> list[dict]:
    visual = _load(SPEC)[0].visual
    vs = variants(visual)
    if compile_too:
        t = time.perf_counter()
        comp = torch.compile(visual)
        with torch.inference_mode():
            comp(x[:BATCH])
        vs["fp32 torch.compile"] = (comp, time.perf_counter() - t)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(visual(x_cos).float(), dim=1)
    rows = []
    for name, (fn, setup) in vs.items():
        if names and name not in names:
            continue
        emulated = os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" and "bf16" in name
        slow = name in ("bf16 autocast",) or emulated
        xs = x[:16] if emulated else x[: BATCH // 2] if slow else x
        with torch.inference_mode():
            fn(x[:8])
            r = rate(lambda: [fn(xs[i : i + BATCH]) for i in range(0, len(xs), BATCH)], len(xs), 1 if slow else 2)
            m = (
                len(xs)
                if emulated
                else len(x_cos)
                if name in ("fp32", "bf16 weights", "int8 dynamic Linear", "int8 ONNX Runtime")
                else min(128, len(x_cos))
            )
            got = torch.nn.functional.normalize(fn(x_cos[:m]).float(), dim=1)
        cos = (got * ref[:m]).sum(1)
        rows.append(
            {
                "variant": name,
                "images_per_s": round(r, 1),
                "cosine_min": round(float(cos.min()), 6),
                "cosine_mean": round(float(cos.mean()), 6),
                "setup_s": round(setup, 2),
                "load": load1(),
                "timed_images": len(xs),
                "cosine_images": m,
            }
        )
        print(f"  model {name}: {r:.1f} img/s, cosine min {float(cos.min()):.6f}", flush=True)
    return rows


def pipeline(paths: list[str], encoder: OpenClipEncoder, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore.create(Path(tmp) / "pool", encoder.dim, encoder.name)
        t = time.perf_counter()
        report = store.add_images(paths, encoder, progress=False, workers=workers)
        dt = time.perf_counter() - t
        store.close()
    assert len(report.added_ids) == len(paths), report.summary()
    return {"images_per_s": round(len(paths) / dt, 1), "seconds": round(dt, 2), "load": load1()}


def model_bound(encoder: OpenClipEncoder, x: torch.Tensor, n: int) -> float:
    """The model alone on ``n`` preprocessed images (``x`` repeated): as long as the pipeline run it brackets."""
    encoder.encode_preprocessed(x[:BATCH])  # warm: the batch shape's kernels are made on the first call
    t = time.perf_counter()
    done = 0
    while done < n:
        encoder.encode_preprocessed(x[: min(len(x), n - done)])
        done += min(len(x), n - done)
    return n / (time.perf_counter() - t)


class FileSet(torch.utils.data.Dataset):
    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.preprocess(Image.open(self.paths[i]).convert("RGB"))


def dataloader_loop(paths, tower, preprocess, dtype=torch.float32) -> float:
    loader = torch.utils.data.DataLoader(FileSet(paths, preprocess), batch_size=BATCH, num_workers=2)
    t = time.perf_counter()
    out = []
    with torch.inference_mode():
        for batch in loader:
            out.append(tower(batch.to(dtype)).float())
    return len(paths) / (time.perf_counter() - t)


def avx2_subprocess(compile_too: bool) -> dict:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    cmd = [sys.executable, __file__, "--child-avx2"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=400)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_markdown(res: dict) -> str:
    env = res["environment"]
    model = {r["variant"]: r for r in res["model"]}
    fp32 = model["fp32"]["images_per_s"]
    lines = [
        "# Embedding images: decode, model per precision, the whole `agile pool add`",
        "",
        environment_markdown(env).rstrip(),
        f"- CPU: {env['cpu_model']}; torch capability {env['torch_cpu_capability']}; native bf16: "
        f"{env['native_bf16']}; flags: {' '.join(env['cpu_flags_relevant'])}",
        f"- load average (1 min) at the end: {env.get('load_average_1m_at_end')} (the machine is shared: 2 cores, "
        "other engineers' processes ran beside this one)",
        f"- weights: {env['weights']}",
        f"- data: {res['images']} JPEGs {res['image_size']} (CIFAR-10 photos upscaled, and mirrored); batch {res['batch']}",
        "",
        "## (a) decode alone (read + SHA-256 + decode + preprocess to 224x224)",
        "",
        "| how | images/s |",
        "|---|---|",
        f"| one thread | {res['decode']['one_thread_images_per_s']} |",
        f"| pipeline thread pool, 2 threads | {res['decode']['pool_2_threads_images_per_s']} |",
        "",
        "## (b) the model alone (ViT-B-32 image tower), per variant",
        "",
        "| variant | images/s | x fp32 | cosine to fp32 min (mean) | images in cosine | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["model"]:
        lines.append(
            f"| {r['variant']} | {r['images_per_s']} | {r['images_per_s'] / fp32:.2f} | {r['cosine_min']:.6f} "
            f"({r['cosine_mean']:.6f}) | {r['cosine_images']} | {r['load']} |"
        )
    if "avx2_capped" in res:
        a = {r["variant"]: r for r in res["avx2_capped"]["rows"]}
        f = a["fp32"]["images_per_s"]
        lines += [
            "",
            f"oneDNN/MKL capped at AVX2 (torch capability {res['avx2_capped']['capability']}): what a CPU "
            "without native bf16 pays (fbgemm's int8 kernels are not capped and still use AVX-512 VNNI here, so "
            "the int8 row is optimistic for an AVX2-only CPU):",
            "",
            "| variant | images/s | x fp32 (capped) | cosine min |",
            "|---|---|---|---|",
        ]
        for r in res["avx2_capped"]["rows"]:
            lines.append(
                f"| {r['variant']} | {r['images_per_s']} | {r['images_per_s'] / f:.2f} | {r['cosine_min']:.6f} |"
            )
    lines += [
        "",
        f"## (c) the full `agile pool add` pipeline (EmbeddingStore.add_images), {res['images']:,} JPEGs",
        "",
        "| case | precision | decode threads | images | pipeline images/s | model-bound images/s | fraction | x plain fp32 "
        "model | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["pipeline"]:
        lines.append(
            f"| {r['case']} | {r['precision']} | {r['decode_threads']} | {r['images']} | {r['images_per_s']} | "
            f"{r['model_bound_images_per_s']} | {r['fraction_of_model_bound']:.0%} | "
            f"{r['images_per_s'] / fp32:.2f} | {r['load']} |"
        )
    pe = res["peers"]
    lines += [
        "",
        "## peers",
        "",
        "| loop | images/s |",
        "|---|---|",
        f"| today's path: one by one in the main thread, fp32 | {pe['today_one_by_one_fp32_images_per_s']} |",
        f"| plain open_clip + torch DataLoader(num_workers=2), fp32 | "
        f"{pe['plain_open_clip_dataloader_fp32_images_per_s']} |",
        *(
            [
                f"| DataLoader(num_workers=2) feeding the bf16 tower (worker processes instead of our threads) | "
                f"{pe['dataloader_2_workers_bf16_tower_images_per_s']} |"
            ]
            if "dataloader_2_workers_bf16_tower_images_per_s" in pe
            else []
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--avx2", action="store_true", help="also the model variants with oneDNN/MKL capped at AVX2")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (about 50 s to compile on 2 cores)")
    ap.add_argument("--variants", nargs="*", help="model variants to measure in (b) (default: all)")
    ap.add_argument("--cosine-images", type=int, default=500, help="real photos in the cosine check (at most 500)")
    ap.add_argument("--small", type=int, default=500, help="images in the secondary pipeline cases")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite <out>.md from <out>.json")
    ap.add_argument("--out", default="embedding", help="results name under benchmarks/results/ (.json, .md)")
    ap.add_argument("--child-avx2", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.markdown_only:
        res = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(write_markdown(res) + res.get("notes", ""))
        return
    paths = make_jpegs(args.images)
    preprocess = _load(SPEC)[1]
    x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[:128]])
    cifar = [Image.fromarray(a).resize((500, 375), Image.BICUBIC) for a in np.load(CIFAR)["images"]]
    if args.child_avx2:
        rows = model_alone(
            x, torch.stack([preprocess(im) for im in cifar[:64]]), ["fp32", "bf16 weights", "int8 dynamic Linear"]
        )
        print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "rows": rows}))
        return
    env = describe_environment()
    cpu = CpuInfo.read()
    env.update(
        {
            "cpu_model": cpu.model,
            "torch_cpu_capability": cpu.torch_capability,
            "native_bf16": cpu.native_bf16(),
            "cpu_flags_relevant": sorted(f for f in cpu.flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")),
            "weights": "random (pretrained=None): real ViT-B-32 architecture and cost; cosines on real CIFAR-10 pixels",
        }
    )
    print(env, flush=True)
    res: dict = {"environment": env, "images": len(paths), "image_size": "500x375 JPEG q90", "batch": BATCH}

    # (a) decode alone
    t = time.perf_counter()
    for p in paths[:300]:
        preprocess(load_image(p).image)
    dec1 = 300 / (time.perf_counter() - t)
    t = time.perf_counter()
    n = sum(1 for _ in decoded_images(paths, preprocess, workers=2))
    dec2 = n / (time.perf_counter() - t)
    res["decode"] = {
        "one_thread_images_per_s": round(dec1, 1),
        "pool_2_threads_images_per_s": round(dec2, 1),
        "load": load1(),
    }
    print("decode", res["decode"], flush=True)

    # (b) model alone, every variant; cosine on all 500 real photos
    x_cos = torch.stack([preprocess(im) for im in cifar[: args.cosine_images]])
    res["model"] = model_alone(x, x_cos, args.variants, compile_too=args.compile)

    # (c) the full pipeline: chosen by capability, and forced as on a CPU without native bf16
    res["pipeline"] = []
    auto = OpenClipEncoder(SPEC, batch_size=BATCH, precision="auto").runtime.split("/")[-1]
    cases = [
        (f"auto (chosen here: {auto})", "auto", 2, len(paths)),
        (f"auto (chosen here: {auto})", "auto", 1, args.small),
        ("forced int8", "int8", 2, args.small),
        ("forced fp32", "fp32", 2, args.small // 2),
    ]
    for label, precision, workers, count in cases:
        if precision == auto:
            continue  # the auto rows are this precision
        enc = OpenClipEncoder(SPEC, batch_size=BATCH, precision=precision)
        before = model_bound(enc, x, count)  # interleaved: model alone, pipeline, model alone, same length
        got = pipeline(paths[:count], enc, workers)
        after = model_bound(enc, x, count)
        bound = (before + after) / 2
        row = {
            "case": label,
            "precision": enc.runtime,
            "decode_threads": workers,
            "images": count,
            "model_bound_images_per_s": round(bound, 1),
            "model_bound_before_after": [round(before, 1), round(after, 1)],
            **got,
            "fraction_of_model_bound": round(got["images_per_s"] / bound, 3),
        }
        res["pipeline"].append(row)
        print("pipeline", row, flush=True)

    # peers
    visual = _load(SPEC)[0].visual
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, 128, 1):
            visual(preprocess(load_image(paths[i]).image)[None])
    today = 128 / (time.perf_counter() - t)
    fp32_dl = dataloader_loop(paths[:256], visual, preprocess)
    res["peers"] = {
        "today_one_by_one_fp32_images_per_s": round(today, 1),
        "plain_open_clip_dataloader_fp32_images_per_s": round(fp32_dl, 1),
        "load": load1(),
    }
    if cpu.native_bf16():
        bf = copy.deepcopy(visual).to(torch.bfloat16)
        res["peers"]["dataloader_2_workers_bf16_tower_images_per_s"] = round(
            dataloader_loop(paths, bf, preprocess, torch.bfloat16), 1
        )
    print("peers", res["peers"], flush=True)
    if args.avx2:
        res["avx2_capped"] = avx2_subprocess(args.compile)
        print("avx2", res["avx2_capped"], flush=True)
    res["environment"]["load_average_1m_at_end"] = load1()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"{args.out}.md").write_text(write_markdown(res))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
