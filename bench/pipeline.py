"""Benchmark the product's pipeline against the replaced system's approach.

    python -m bench.pipeline            # MedSigLIP-448 shapes, random weights, CPU fp32
    python -m bench.pipeline --tiny     # the same in seconds, on the tiny model (CI smoke)
    python -m bench.pipeline --int8     # also measure PRIVASCAN_INT8 (CPU): speed and fidelity, heatmap included

First, start-up in separate processes, as the app starts (embedding cache,
text tower, release): once with an empty embedding cache (the bank is
embedded with the text tower), once with the cache that run filled (vision
tower only), and with ``--int8`` once more warm in int8 mode; each reports
its time to ready, its peak memory during start-up and its resident memory
after one warm-up analysis. Then it runs N photos (the NCI photo and
synthetic lesions) through the real pipeline (``webapp.pipeline.
analyse_image``: localize, crop, one pass of classification + Grad-CAM,
render) and, in the same run, one plain vision forward per photo, the same
through the int8 tower (``--int8``) and the baseline done the replaced
system's way (bench/baseline.py: as that system runs, on the torch threads its
in-process ultralytics leaves, and again on ours), photo by photo back to back so that each
photo's ratios compare runs seconds apart (a shared host's load drifts
within minutes); then one batched forward of all the crops against single
forwards just before it (does batching queued photos pay on this host?).
Figures are medians over the photos (of per-photo ratios for the ratios);
nothing is asserted, everything is printed. The last line is exactly
``full_over_forward=X baseline_over_ours=Y rss_gb=Z int8_full_over_int8_forward=W
int8_forward_over_fp32=Q int8_rss_gb=V warm_start_over_cold=U`` (nan where a
figure was not measured: the int8 ones without ``--int8``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NCI_PHOTO = REPO.parent / "shared" / "data" / "nci-melanoma-1800x1010.jpg"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "privascan"


def rss_gb() -> float:
    """Current resident memory of this process (Linux), in GB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e9


def peak_rss_gb() -> float:
    """This process's own resident high-water mark (Linux VmHWM), in GB.

    Not ``getrusage``'s ru_maxrss: Linux carries that across fork and exec,
    so a start-up child launched by a parent holding a big model would
    report the parent's peak as its own.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # not Linux


def model_directory(tiny: bool) -> Path:
    """Build the random model once and keep it in the cache (model data, never user data)."""
    from plugins.medsiglip.tiny_model import MEDSIGLIP_448_SHAPES, build_tiny_siglip

    directory = CACHE / ("bench-tiny" if tiny else "bench-medsiglip-448-random")
    if not (directory / "config.json").exists():
        print(f"building the random model in {directory} (once)…", flush=True)
        build_tiny_siglip(directory, shapes=None if tiny else MEDSIGLIP_448_SHAPES)
    return directory


def photos(count: int) -> list[tuple[str, bytes]]:
    """The NCI photo first (if present), then synthetic lesion photos, as encoded bytes."""
    from tests.synthetic import SKIN_TONES, make_lesion_photo

    encoded = []
    if NCI_PHOTO.exists():
        encoded.append(("nci-melanoma", NCI_PHOTO.read_bytes()))
    tones = list(SKIN_TONES)
    seed = 0
    while len(encoded) < count:
        image, _ = make_lesion_photo(seed, width=1600, height=1200, skin_tone=tones[seed % len(tones)], hair=True, vignette=True)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=92)
        encoded.append((f"synthetic-{seed}", buffer.getvalue()))
        seed += 1
    return encoded[:count]


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def table(title: str, rows: list[dict[str, float]], columns: list[str]) -> None:
    widths = [max(22, len(c) + 2) for c in columns]
    print(f"\n{title}")
    print("  " + f"{'photo':>22}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    for row in rows:
        print("  " + f"{row['photo']:>22}" + "".join(f"{row.get(c, float('nan')):>{w}.3f}" for c, w in zip(columns, widths)))
    print("  " + f"{'median':>22}" + "".join(f"{median([r[c] for r in rows if c in r]):>{w}.3f}" for c, w in zip(columns, widths)))


class RecordingExplainer:
    """The real explainer, keeping its last explanation so the bench can compare heatmaps (fp32 against int8)."""

    def __init__(self, inner):
        self.inner = inner
        self.last = None

    def explain(self, *args, **kwargs):
        self.last = self.inner.explain(*args, **kwargs)
        return self.last

    def __getattr__(self, name):
        return getattr(self.inner, name)


def start_up_child(args) -> int:
    """``--start-up-child``: start as the app's model loader does and print JSON lines (ready, then steady).

    The time to ready is measured by the parent, from launching this process
    (interpreter, imports and all) to the "ready" line.
    """
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from plugins.medsiglip import MedSigLIPClassifier
    from webapp.embedding_cache import EmbeddingCache, FolderBackend
    from webapp.memory import release_freed_memory
    from webapp.prompt_bank import load_prompt_bank

    bank = load_prompt_bank(REPO / "prompts" / "dermatology.toml")
    template_set = bank.template_set("clinical")
    classifier = MedSigLIPClassifier(args.model_dir, device=args.device, int8=args.int8,
                                     embedding_cache=EmbeddingCache(FolderBackend(args.cache_dir)))
    classifier.expect_banks([(bank, template_set)])
    started = time.perf_counter()
    classifier.load()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    classifier.prepare(bank, template_set)
    embed_s = time.perf_counter() - started
    classifier.release_text_tower()
    gc.collect()
    release_freed_memory()
    report = {
        "event": "ready", "warm": classifier.warm_start, "load_s": load_s, "embed_s": embed_s,
        "prompts": sum(len(bank.prompts_for(c, template_set)) for c in bank.conditions), "conditions": len(bank.conditions),
        "rss_gb": rss_gb(), "peak_gb": peak_rss_gb(), "int8_timing": classifier.int8_timing, "status": classifier.describe(),
    }
    print(json.dumps(report), flush=True)
    if args.warm_up:
        from plugins.dermatology.localizer import ClassicalLesionLocalizer
        from plugins.medsiglip import MedSigLIPGradCAM
        from webapp.images import safe_decode
        from webapp.interfaces import ClinicalApp
        from webapp.pipeline import analyse_image
        from webapp.plugins import Registry

        registry = Registry(
            apps={"dermatology": ClinicalApp("dermatology", "Skin", "dermatology", "medsiglip", "medsiglip-gradcam", "classical", "lesion")},
            banks={"dermatology": bank}, detectors={"classical": ClassicalLesionLocalizer()},
            classifiers={"medsiglip": classifier}, explainers={"medsiglip-gradcam": MedSigLIPGradCAM()},
        )
        image = safe_decode(photos(1)[0][1], 50_000_000).image
        analyse_image(image, registry.apps["dermatology"], registry, "clinical", explain=True)
        release_freed_memory()  # as the inference worker does after every job
        print(json.dumps({"event": "steady", "rss_gb": rss_gb(), "peak_gb": peak_rss_gb()}), flush=True)
    return 0


def start_up_in_process(directory: Path, cache_dir: Path, device: str | None, int8: bool, warm_up: bool) -> dict:
    """Run ``start_up_child`` in a fresh process; its JSON figures plus ``ready_s`` (launch to ready, wall clock)."""
    command = [sys.executable, "-m", "bench.pipeline", "--start-up-child", "--model-dir", str(directory),
               "--cache-dir", str(cache_dir)]
    command += (["--int8"] if int8 else []) + (["--warm-up"] if warm_up else []) + (["--device", device] if device else [])
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    figures: dict = {}
    for line in child.stdout:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event["event"] == "ready":
            figures.update(event, ready_s=time.perf_counter() - started)
        else:
            figures["steady_rss_gb"], figures["steady_peak_gb"] = event["rss_gb"], event["peak_gb"]
    if child.wait() != 0 or "ready_s" not in figures:
        raise RuntimeError(f"the start-up process failed (exit status {child.returncode}): {' '.join(command)}")
    return figures


def measure_start_up(directory: Path, cache_dir: Path, device: str | None, int8: bool) -> dict:
    """Cold (empty ``cache_dir``) and warm starts in separate processes, and a warm int8 start with ``int8``."""
    cold = start_up_in_process(directory, cache_dir, device, int8=False, warm_up=False)
    warm = start_up_in_process(directory, cache_dir, device, int8=False, warm_up=True)
    int8_warm = start_up_in_process(directory, cache_dir, device, int8=True, warm_up=True) if int8 else None
    print(f"bank embeddings {cold['embed_s']:.2f} s ({cold['conditions']} conditions, {cold['prompts']} prompts, "
          "the default picture kind) at a cold start, then stored in the embedding cache")
    print(f"  cold start (empty cache): ready {cold['ready_s']:.2f} s after launch (load {cold['load_s']:.2f} s, "
          f"text tower and bank {cold['embed_s']:.2f} s), peak {cold['peak_gb']:.2f} GB")
    print(f"  warm start (cache filled by the cold one, text tower {'skipped' if warm['warm'] else 'NOT skipped'}): ready "
          f"{warm['ready_s']:.2f} s after launch (load {warm['load_s']:.2f} s), RSS at ready {warm['rss_gb']:.2f} GB, "
          f"start-up peak {warm['peak_gb']:.2f} GB, RSS after one analysis {warm['steady_rss_gb']:.2f} GB "
          f"(peak minus steady {warm['peak_gb'] - warm['steady_rss_gb']:+.2f} GB)")
    if int8_warm is not None:
        fp32_s, int8_s = int8_warm["int8_timing"] or (float("nan"), float("nan"))
        print(f"  warm int8 start: ready {int8_warm['ready_s']:.2f} s after launch, start-up peak "
              f"{int8_warm['peak_gb']:.2f} GB, RSS after one analysis {int8_warm['steady_rss_gb']:.2f} GB; its start-up "
              f"timing: one encoder layer {fp32_s * 1000:.0f} ms fp32, {int8_s * 1000:.0f} ms int8; status line: "
              f"{int8_warm['status']}")
    return {"cold": cold, "warm": warm, "int8": int8_warm}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model: seconds, for CI smoke runs")
    parser.add_argument("--photos", type=int, default=5, help="number of photos (default 5)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    parser.add_argument("--int8", action="store_true", help="also measure PRIVASCAN_INT8 (CPU): speed and fidelity")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the replaced system's approach")
    parser.add_argument("--start-up-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.start_up_child:
        return start_up_child(args)

    import torch

    from webapp.prompt_bank import load_prompt_bank

    torch.set_num_threads(os.cpu_count() or 1)
    directory = model_directory(args.tiny)
    bank = load_prompt_bank(REPO / "prompts" / "dermatology.toml")
    template_set = bank.template_set("clinical")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{'tiny random model' if args.tiny else 'MedSigLIP-448 shapes, random weights'}")

    # -- start-up, in separate processes -------------------------------------------
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # model-derived embeddings; memory is enough
    cache_dir = Path(tempfile.mkdtemp(prefix="privascan-bench-embeddings-", dir=base))
    try:
        return run(args, directory, bank, template_set, cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def run(args, directory: Path, bank, template_set, cache_dir: Path) -> int:
    import torch

    from plugins.dermatology.localizer import ClassicalLesionLocalizer
    from plugins.medsiglip import MedSigLIPClassifier, MedSigLIPGradCAM
    from webapp.cropping import square_crop
    from webapp.embedding_cache import EmbeddingCache, FolderBackend
    from webapp.images import safe_decode
    from webapp.interfaces import ClinicalApp
    from webapp.memory import release_freed_memory
    from webapp.pipeline import analyse_image
    from webapp.plugins import Registry

    start_up = measure_start_up(directory, cache_dir, args.device, args.int8)
    warm_start_over_cold = start_up["warm"]["ready_s"] / start_up["cold"]["ready_s"]

    # -- ours -------------------------------------------------------------------
    import cv2  # noqa: F401  (the libraries the model and the pipeline load, counted before the model itself)
    import transformers.models.siglip.modeling_siglip  # noqa: F401

    rss_libraries = rss_gb()
    started = time.perf_counter()
    classifier = MedSigLIPClassifier(str(directory), device=args.device, embedding_cache=EmbeddingCache(FolderBackend(cache_dir)))
    classifier.expect_banks([(bank, template_set)])  # warm: the cold process above filled the cache
    classifier.load()
    load_s = time.perf_counter() - started
    classifier.prepare(bank, template_set)
    classifier.release_text_tower()
    gc.collect()
    explainer = RecordingExplainer(MedSigLIPGradCAM())
    registry = Registry(
        apps={"dermatology": ClinicalApp("dermatology", "Skin", "dermatology", "medsiglip", "medsiglip-gradcam", "classical", "lesion")},
        banks={"dermatology": bank},
        detectors={"classical": ClassicalLesionLocalizer()},
        classifiers={"medsiglip": classifier},
        explainers={"medsiglip-gradcam": explainer},
    )
    clinical_app = registry.apps["dermatology"]
    print(f"\ndevice: {classifier.device}; model load {load_s:.2f} s in this process (fp32, "
          f"{'warm: vision tower only' if classifier.warm_start else 'cold'})")

    inputs = photos(args.photos)
    warm = safe_decode(inputs[0][1], 50_000_000).image
    analyse_image(warm, clinical_app, registry, "clinical", explain=True)  # warm-up, not counted
    release_freed_memory()  # as the inference worker does after every job
    rss_after_warmup = rss_gb()
    print(f"RSS after warm-up {rss_after_warmup:.2f} GB (libraries alone {rss_libraries:.2f} GB, so the model and "
          f"its cached embeddings {rss_after_warmup - rss_libraries:.2f} GB)")

    # Everything compared is loaded first, then measured photo by photo, back to back: on a
    # shared host the load drifts within minutes, and each photo's ratios compare runs
    # seconds apart (medians of per-photo ratios).
    int8_arm = Int8Arm(classifier, bank, template_set, registry, clinical_app, warm) if args.int8 else None
    baseline = None
    if not args.skip_baseline:
        from bench.baseline import ReplacedSystemBaseline

        baseline = ReplacedSystemBaseline(str(directory), bank, device=args.device or "cpu")
        baseline.run(warm)  # warm-up, not counted

    ours: list[dict[str, float]] = []
    baseline_rows: list[dict[str, float]] = []
    crops = []
    for name, data in inputs:
        row: dict[str, float] = {"photo": name}
        started = time.perf_counter()
        image = safe_decode(data, 50_000_000).image
        row["decode"] = time.perf_counter() - started
        result = analyse_image(image, clinical_app, registry, "clinical", explain=True)
        row.update({k: v for k, v in result.timings.items()})
        row["full_result"] = row["decode"] + sum(result.timings.values())
        # One plain vision forward (+ scoring) on the same crop, measured in the same run.
        crop, _ = square_crop(image, result.detection.box if result.detection else None, size=classifier.input_size)
        started = time.perf_counter()
        forward = classifier.classify(crop, bank, template_set)
        row["vision_forward"] = time.perf_counter() - started
        row["full_over_forward"] = row["full_result"] / row["vision_forward"]
        ours.append(row)
        crops.append(crop)
        print(f"  {name}: full result {row['full_result']:.2f} s, forward {row['vision_forward']:.2f} s", flush=True)
        if int8_arm is not None:
            int8_arm.measure(row, image, crop, forward, explainer.last, result.scores)
        if baseline is not None:
            started = time.perf_counter()
            image = safe_decode(data, 50_000_000).image
            base = {"photo": name, "decode": time.perf_counter() - started, **baseline.run(image)}
            base["total"] += base["decode"]
            base["baseline_over_ours"] = base["total"] / row["full_result"]
            # The same work with the product's thread count: the replaced system's thread defect taken out.
            same = baseline.run(image, threads=torch.get_num_threads())
            base["total_same_threads"] = same["total"] + base["decode"]
            base["same_threads_over_ours"] = base["total_same_threads"] / row["full_result"]
            baseline_rows.append(base)
            print(f"  baseline {name}: {base['total']:.2f} s on {baseline.threads} thread(s) as ultralytics leaves it, "
                  f"{base['total_same_threads']:.2f} s on {torch.get_num_threads()}", flush=True)
    table("ours, seconds per stage (classify_and_explain = one forward with Grad-CAM)", ours,
          ["decode", "localize", "crop", "classify_and_explain", "render", "encode", "full_result", "vision_forward", "full_over_forward"])
    print(f"\nRSS after the run {rss_gb():.2f} GB, peak so far {peak_rss_gb():.2f} GB "
          "(with the int8 copy and the baseline's model loaded beside ours)")

    int8_figures = {}
    if int8_arm is not None:
        int8_figures = int8_arm.report()
        int8_figures["int8_rss_gb"] = start_up["int8"]["steady_rss_gb"]
    baseline_over_ours = float("nan")
    if baseline is not None:
        table(f"baseline (replaced system's way: detector twice, text tower per photo, full-backward Grad-CAM, on the "
              f"{baseline.threads} torch thread(s) its in-process ultralytics leaves; the last two columns: the same work "
              f"on {torch.get_num_threads()} threads, as ours)", baseline_rows,
              ["decode", "detect_twice", "classify_text_and_vision", "gradcam_full_backward", "total", "baseline_over_ours",
               "total_same_threads", "same_threads_over_ours"])
        baseline_over_ours = median([r["baseline_over_ours"] for r in baseline_rows])
        print(f"baseline over ours: {baseline_over_ours:.2f} as the replaced system runs ({baseline.threads} thread(s) after "
              f"its first detection), {median([r['same_threads_over_ours'] for r in baseline_rows]):.2f} with the same "
              f"threads as ours")
        del baseline
        gc.collect()

    measure_batching(classifier, bank, template_set, crops)
    if args.device == "cuda" or classifier.device == "cuda":
        measure_live_batches(classifier, bank, template_set, inputs)

    full_over_forward = median([r["full_over_forward"] for r in ours])
    nan = float("nan")
    print(f"\nfull result median {median([r['full_result'] for r in ours]):.2f} s; "
          f"vision forward median {median([r['vision_forward'] for r in ours]):.2f} s; time to ready: cold "
          f"{start_up['cold']['ready_s']:.2f} s, warm {start_up['warm']['ready_s']:.2f} s")
    print(f"full_over_forward={full_over_forward:.3f} baseline_over_ours={baseline_over_ours:.2f} rss_gb={rss_after_warmup:.2f} "
          f"int8_full_over_int8_forward={int8_figures.get('int8_full_over_int8_forward', nan):.3f} "
          f"int8_forward_over_fp32={int8_figures.get('int8_forward_over_fp32', nan):.3f} "
          f"int8_rss_gb={int8_figures.get('int8_rss_gb', nan):.2f} warm_start_over_cold={warm_start_over_cold:.3f}")
    return 0


def measure_batching(classifier, bank, template_set, crops) -> None:
    """Item 4: is one batched forward over the queued crops faster than one forward each, on this host?

    The single forwards are timed right before the batch, so both see the same host load.
    """
    if len(crops) < 2:
        print("\nbatching: needs at least 2 photos; not measured")
        return
    started = time.perf_counter()
    for crop in crops:
        classifier.classify_batch([crop], bank, template_set)
    single = time.perf_counter() - started
    started = time.perf_counter()
    classifier.classify_batch(crops, bank, template_set)
    batched = time.perf_counter() - started
    print(f"\nbatching {len(crops)} queued crops into one vision forward: {batched:.2f} s against {single:.2f} s for "
          f"one forward each, just before ({60 * len(crops) / batched:.1f} against {60 * len(crops) / single:.1f} "
          f"photos per minute, forward only): {'faster' if batched < single else 'not faster'} on this host")


class Int8Arm:
    """PRIVASCAN_INT8's tower (frozen layers int8, last layer and head computed in fp32) on the same photos: full
    results with Grad-CAM and plain forwards, each photo right after its fp32 figures."""

    def __init__(self, classifier, bank, template_set, registry, clinical_app, warm_image):
        from plugins.medsiglip import MedSigLIPGradCAM
        from webapp.pipeline import analyse_image

        self.bank, self.template_set, self.clinical_app = bank, template_set, clinical_app
        started = time.perf_counter()
        self.quantized = classifier.int8_copy([(bank, template_set)])  # the product's own quantization (PRIVASCAN_INT8=1)
        self.copy_s = time.perf_counter() - started
        self.explainer = RecordingExplainer(MedSigLIPGradCAM())
        self.registry = dataclasses.replace(registry, classifiers={"medsiglip": self.quantized},
                                            explainers={"medsiglip-gradcam": self.explainer})
        analyse_image(warm_image, clinical_app, self.registry, "clinical", explain=True)  # warm-up, not counted
        self.rows, self.cosines, self.correlations, self.agree = [], [], [], 0

    def measure(self, row, image, crop, fp32_forward, fp32_explanation, fp32_scores) -> None:
        import numpy as np

        from plugins.medsiglip import MedSigLIPGradCAM
        from webapp.pipeline import analyse_image

        result = analyse_image(image, self.clinical_app, self.registry, "clinical", explain=True)
        full = row["decode"] + sum(result.timings.values())  # same decode as the fp32 row
        started = time.perf_counter()
        forward = self.quantized.classify(crop, self.bank, self.template_set)
        forward_s = time.perf_counter() - started
        self.cosines.append(float(np.dot(forward.embedding, fp32_forward.embedding)))
        heatmap = self.explainer.last.heatmap
        if self.explainer.last.condition_id != fp32_explanation.condition_id:  # compare heatmaps of the same condition
            heatmap = MedSigLIPGradCAM().explain(self.quantized, crop, self.bank, self.template_set,
                                                 fp32_explanation.condition_id).heatmap
        self.correlations.append(float(np.corrcoef(heatmap.ravel(), fp32_explanation.heatmap.ravel())[0, 1]))
        top = lambda scores: scores.condition_ids[int(np.argmax(scores.logits))]  # noqa: E731
        self.agree += top(result.scores) == top(fp32_scores)
        self.rows.append({"photo": row["photo"], "int8_full_result": full, "int8_forward": forward_s,
                          "int8_full_over_int8_forward": full / forward_s, "int8_forward_over_fp32": forward_s / row["vision_forward"],
                          "int8_full_over_fp32_forward": full / row["vision_forward"]})
        print(f"  int8 {row['photo']}: full result {full:.2f} s, forward {forward_s:.2f} s", flush=True)

    def report(self) -> dict:
        rows = self.rows
        table("dynamic int8 (PRIVASCAN_INT8: frozen layers int8, last layer + head computed in fp32, Grad-CAM included), "
              "seconds", rows,
              ["int8_full_result", "int8_forward", "int8_full_over_int8_forward", "int8_forward_over_fp32", "int8_full_over_fp32_forward"])
        # Medians of per-photo ratios, as full_over_forward is: each photo's int8 figures against its own fp32 ones.
        figures = {key: median([r[key] for r in rows])
                   for key in ("int8_full_over_int8_forward", "int8_forward_over_fp32", "int8_full_over_fp32_forward")}
        print(f"\ndynamic int8 (CPU, off by default; quantized copy made in {self.copy_s:.2f} s): int8 full result over "
              f"fp32 forward {figures['int8_full_over_fp32_forward']:.3f}; int8 forward over fp32 forward "
              f"{figures['int8_forward_over_fp32']:.3f}; cosine of int8 to fp32 image embeddings min {min(self.cosines):.4f} "
              f"median {median(self.cosines):.4f}; heatmap correlation min {min(self.correlations):.3f} median "
              f"{median(self.correlations):.3f}; top-1 agreement {self.agree}/{len(rows)}")
        return figures


def measure_live_batches(classifier, bank, template_set, inputs) -> None:
    """GPU only: live frames per second at batch 1 and 8."""
    import torch

    from webapp.images import safe_decode

    crops = [safe_decode(d, 50_000_000).image.resize((448, 448)) for _, d in inputs]
    for batch in (1, 8):
        frames = (crops * 8)[:batch]
        classifier.classify_batch(frames, bank, template_set)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(10):
            classifier.classify_batch(frames, bank, template_set)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / 10
        print(f"live frames, batch {batch}: {seconds * 1000:.1f} ms per batch, {batch / seconds:.1f} frames/s")


if __name__ == "__main__":
    sys.exit(main())
