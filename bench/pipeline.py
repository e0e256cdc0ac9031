"""Benchmark the product's pipeline against the replaced system's approach.

    python -m bench.pipeline            # MedSigLIP-448 shapes, random weights, CPU fp32
    python -m bench.pipeline --tiny     # the same in seconds, on the tiny model (CI smoke)
    python -m bench.pipeline --int8     # also measure dynamic int8 and its fidelity (CPU)

It runs N photos (the NCI photo and synthetic lesions) through the real
pipeline (``webapp.pipeline.analyse_image``: localize, crop, one pass of
classification + Grad-CAM, render) and, in the same run, one plain vision
forward per photo, then the baseline done the replaced system's way
(bench/baseline.py). Figures are medians over the photos; nothing is
asserted, everything is printed. The last line is exactly
``full_over_forward=X baseline_over_ours=Y rss_gb=Z``.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import platform
import resource
import statistics
import sys
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


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
    print(f"\n{title}")
    print("  " + "".join(f"{c:>22}" for c in ["photo", *columns]))
    for row in rows:
        print("  " + f"{row['photo']:>22}" + "".join(f"{row.get(c, float('nan')):>22.3f}" for c in columns))
    print("  " + f"{'median':>22}" + "".join(f"{median([r[c] for r in rows if c in r]):>22.3f}" for c in columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model: seconds, for CI smoke runs")
    parser.add_argument("--photos", type=int, default=5, help="number of photos (default 5)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    parser.add_argument("--int8", action="store_true", help="also measure dynamic int8 (CPU) and its fidelity")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the replaced system's approach")
    args = parser.parse_args(argv)

    import torch

    from plugins.dermatology.localizer import ClassicalLesionLocalizer
    from plugins.medsiglip import MedSigLIPClassifier, MedSigLIPGradCAM
    from webapp.cropping import square_crop
    from webapp.images import safe_decode
    from webapp.interfaces import ClinicalApp
    from webapp.memory import release_freed_memory
    from webapp.pipeline import analyse_image
    from webapp.plugins import Registry
    from webapp.prompt_bank import load_prompt_bank

    torch.set_num_threads(os.cpu_count() or 1)
    directory = model_directory(args.tiny)
    bank = load_prompt_bank(REPO / "prompts" / "dermatology.toml")
    template_set = bank.template_set("clinical")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{'tiny random model' if args.tiny else 'MedSigLIP-448 shapes, random weights'}")

    # -- ours -------------------------------------------------------------------
    import pytorch_grad_cam  # noqa: F401  (the explainer's libraries, as the app loads them at start-up)

    rss_libraries = rss_gb()
    started = time.perf_counter()
    classifier = MedSigLIPClassifier(str(directory), device=args.device)
    classifier.load()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    classifier.prepare(bank, template_set)
    embed_s = time.perf_counter() - started
    prompt_count = sum(len(bank.prompts_for(c, template_set)) for c in bank.conditions)
    classifier.release_text_tower()
    gc.collect()
    explainer = MedSigLIPGradCAM()
    explainer.load()
    registry = Registry(
        apps={"dermatology": ClinicalApp("dermatology", "Skin", "dermatology", "medsiglip", "medsiglip-gradcam", "classical", "lesion")},
        banks={"dermatology": bank},
        detectors={"classical": ClassicalLesionLocalizer()},
        classifiers={"medsiglip": classifier},
        explainers={"medsiglip-gradcam": explainer},
    )
    clinical_app = registry.apps["dermatology"]
    print(f"device: {classifier.device}; model load {load_s:.2f} s; bank embeddings {embed_s:.2f} s "
          f"({len(bank.conditions)} conditions, {prompt_count} prompts, computed once); text tower released")

    inputs = photos(args.photos)
    warm = safe_decode(inputs[0][1], 50_000_000).image
    analyse_image(warm, clinical_app, registry, "clinical", explain=True)  # warm-up, not counted
    release_freed_memory()  # as the inference worker does after every job
    rss_after_warmup = rss_gb()

    ours: list[dict[str, float]] = []
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
        classifier.classify(crop, bank, template_set)
        row["vision_forward"] = time.perf_counter() - started
        row["full_over_forward"] = row["full_result"] / row["vision_forward"]
        ours.append(row)
        print(f"  {name}: full result {row['full_result']:.2f} s, forward {row['vision_forward']:.2f} s", flush=True)
    table("ours, seconds per stage (classify_and_explain = one forward with Grad-CAM)", ours,
          ["decode", "localize", "crop", "classify_and_explain", "render", "encode", "full_result", "vision_forward", "full_over_forward"])
    rss_ours = rss_gb()
    print(f"\nRSS after warm-up {rss_after_warmup:.2f} GB (libraries alone {rss_libraries:.2f} GB, so the model and "
          f"its cached embeddings {rss_after_warmup - rss_libraries:.2f} GB), after the run {rss_ours:.2f} GB, "
          f"peak so far {peak_rss_gb():.2f} GB")

    if args.int8:
        measure_int8(classifier, bank, template_set, inputs, registry, clinical_app)

    if args.device == "cuda" or classifier.device == "cuda":
        measure_live_batches(classifier, bank, template_set, inputs)

    # -- the replaced system's approach --------------------------------------------
    baseline_over_ours = float("nan")
    if not args.skip_baseline:
        from bench.baseline import ReplacedSystemBaseline

        del registry, classifier, explainer
        gc.collect()
        baseline = ReplacedSystemBaseline(str(directory), bank, device=args.device or "cpu")
        baseline.run(warm)  # warm-up, not counted
        rows = []
        for name, data in inputs:
            started = time.perf_counter()
            image = safe_decode(data, 50_000_000).image
            row = {"photo": name, "decode": time.perf_counter() - started, **baseline.run(image)}
            row["total"] += row["decode"]
            rows.append(row)
            print(f"  baseline {name}: {row['total']:.2f} s", flush=True)
        table("baseline (replaced system's way: detector twice, text tower per photo, full-backward Grad-CAM)", rows,
              ["decode", "detect_twice", "classify_text_and_vision", "gradcam_full_backward", "total"])
        baseline_over_ours = median([r["total"] for r in rows]) / median([r["full_result"] for r in ours])

    full_over_forward = median([r["full_over_forward"] for r in ours])
    print(f"\nfull result median {median([r['full_result'] for r in ours]):.2f} s; "
          f"vision forward median {median([r['vision_forward'] for r in ours]):.2f} s")
    print(f"full_over_forward={full_over_forward:.3f} baseline_over_ours={baseline_over_ours:.2f} rss_gb={rss_after_warmup:.2f}")
    return 0


def measure_int8(classifier, bank, template_set, inputs, registry, clinical_app) -> None:
    """Dynamic int8 Linear layers on CPU: speed and fidelity against fp32 on the same crops."""
    import torch

    from plugins.medsiglip.classifier import quantize_vision_tower
    from webapp.cropping import square_crop
    from webapp.images import safe_decode

    crops = []
    for _, data in inputs:
        image = safe_decode(data, 50_000_000).image
        detection = registry.detectors["classical"].locate(image)
        crops.append(square_crop(image, detection.box if detection else None, size=448)[0])
    vision = classifier.model.vision_model
    pixels = [classifier.pixel_values(c) for c in crops]
    with torch.inference_mode():
        fp32 = [classifier.model.get_image_features(pixel_values=p).pooler_output for p in pixels]
    quantized = quantize_vision_tower(vision)  # the product's own int8 path (PRIVASCAN_INT8=1)
    times, cosines, agree = [], [], 0
    text = classifier.text_embeddings(bank, template_set)
    with torch.inference_mode():
        quantized(pixel_values=pixels[0])  # warm-up
        for p, reference in zip(pixels, fp32):
            started = time.perf_counter()
            features = quantized(pixel_values=p).pooler_output
            times.append(time.perf_counter() - started)
            cosines.append(float(torch.nn.functional.cosine_similarity(features, reference).item()))
            top_fp32 = int(classifier.logits_from_image_features(reference, text)[0].argmax())
            top_int8 = int(classifier.logits_from_image_features(features, text)[0].argmax())
            agree += top_fp32 == top_int8
    print(f"\ndynamic int8 (CPU, off by default): vision forward median {median(times):.2f} s; "
          f"cosine to fp32 min {min(cosines):.4f} median {median(cosines):.4f}; top-1 agreement {agree}/{len(pixels)} "
          "(Grad-CAM still needs the fp32 tower)")


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
