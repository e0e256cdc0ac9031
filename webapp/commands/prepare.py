"""privascan prepare: fill the embedding cache ahead of time, so the app starts in seconds.

Run it at deploy time, before the first start, with the web app's own settings
(PRIVASCAN_MODEL, PRIVASCAN_CACHE_DIR, PRIVASCAN_PLUGINS, PRIVASCAN_DEMO_MODEL...).
For every classifier the app would load it embeds every bank and picture kind
with the text tower (minutes on a CPU) and stores the embeddings in the cache
folder; the app's start-up then reads them and loads the vision tower only.
The cache holds model-derived embeddings, never anything about a patient.
Sets already stored (for these exact weights and prompts) are not recomputed.
"""

from __future__ import annotations

import sys
import time

from .loading import CommandError, reports_errors


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="fill the embedding cache before the first start (deploy time)",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--model", help="hub id or local folder of the model (default: PRIVASCAN_MODEL)")
    parser.set_defaults(handler=run)


@reports_errors("prepare")
def run(args) -> int:
    from PIL import Image

    from ..bank_overrides import apply_bank_overrides
    from ..config import config_from_environment
    from ..interfaces import ModelUnavailable
    from ..models import ModelManager
    from ..plugins import PluginError, build_registry, make_plugin_manager

    config = config_from_environment()
    if args.model:
        config["MODEL"] = args.model
    Image.MAX_IMAGE_PIXELS = config["MAX_IMAGE_PIXELS"]
    try:
        registry = build_registry(make_plugin_manager(config), config)
        apply_bank_overrides(registry, config)
    except (PluginError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    manager = ModelManager(registry, default_app=config["CLINICAL_APP"])
    for name, classifier in registry.classifiers.items():
        pairs = manager.pairs_default_first(name)
        missing_from_cache = getattr(classifier, "missing_from_cache", None)
        if not pairs or missing_from_cache is None:
            print(f"{name}: keeps no embeddings between runs; nothing to prepare")
            continue
        where = classifier.embedding_cache.describe() if getattr(classifier, "embedding_cache", None) else "(none)"
        try:
            missing = missing_from_cache(pairs)
            if missing is None and getattr(classifier, "embedding_cache", None) is not None:
                # A hub model not downloaded yet has no snapshot commit to name it by: fetch it first.
                classifier.load()
                missing = missing_from_cache(pairs)
            if missing is None:
                raise CommandError(
                    f"{name}: no embedding cache to fill (PRIVASCAN_CACHE_DIR is off, or the weights of "
                    f"{config['MODEL']} cannot be named: not a folder and not in the local Hugging Face cache)"
                )
            if not missing:
                print(f"{name}: all {len(pairs)} sets already in the cache {where}")
                continue
            print(f"{name}: embedding {len(missing)} of {len(pairs)} sets with the text tower (minutes on a CPU)…",
                  file=sys.stderr, flush=True)
            started = time.perf_counter()
            classifier.load()  # a no-op when the download above loaded it
            for bank, template_set in missing:
                classifier.prepare(bank, template_set)
                print(f"  {bank.name} / {template_set.id}", file=sys.stderr, flush=True)
            still = missing_from_cache(pairs)
        except ModelUnavailable as exc:
            raise CommandError(f"{exc.reason} {exc.advice}".strip()) from exc
        if still:
            raise CommandError(f"{name}: {len(still)} sets could not be stored in {where} (see the warnings above)")
        print(f"{name}: stored {len(missing)} sets in {where} in {time.perf_counter() - started:.1f} s; "
              f"all {len(pairs)} are cached")
    return 0
