"""Build a tiny random SigLIP offline, saved the way a real checkpoint is.

Tests and the demo mode (``PRIVASCAN_DEMO_MODEL=1``) load it through exactly the
``AutoModel``/``AutoProcessor.from_pretrained`` code a clinic runs against
``google/medsiglip-448``, so the loader, the SentencePiece tokenizer, the image
processor and the 448 px / patch-14 token grid (32x32 = 1024 tokens, as in
MedSigLIP) are all the real ones. Only the widths and depths are tiny, and the
weights are random: its results mean nothing.
"""

from __future__ import annotations

import io
from pathlib import Path

IMAGE_SIZE = 448
PATCH_SIZE = 14
TEXT_MAX_LENGTH = 64

# SentencePiece ids laid out like SigLIP's own spiece.model.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2

# A small built-in corpus so the tokenizer is trained without any download.
_CORPUS = """
a patient submitted smartphone photograph showing a skin lesion
a clinical photograph of the skin showing a lesion on the arm leg back face or scalp
dermoscopy image revealing a pigmented network with dots globules and streaks
melanoma an asymmetric pigmented lesion with irregular border and several colours brown black blue grey
basal cell carcinoma a pearly translucent nodule with arborizing telangiectatic vessels and rolled edges
squamous cell carcinoma a scaly keratotic crusted nodule that may ulcerate or bleed
bowen disease a well demarcated erythematous scaly plaque squamous cell carcinoma in situ
actinic keratosis rough scaly red patches on sun damaged skin
melanocytic nevus a benign mole round symmetric uniform brown with a regular smooth border
seborrheic keratosis a waxy stuck on verrucous plaque with milia like cysts and comedo like openings
dermatofibroma a firm brown papule with a central white scar like patch and dimple sign
vascular lesion cherry angioma haemangioma red purple lacunae well circumscribed
psoriasis well demarcated erythematous plaques with silvery white scale on elbows and knees
eczema atopic dermatitis ill defined itchy red patches with papules vesicles and lichenification
acne comedones papules pustules and nodules on the face chest and back
tinea ringworm an annular plaque with a scaly advancing edge and central clearing fungal infection
impetigo honey coloured crusts over erosions bacterial infection
herpes zoster shingles grouped vesicles on a red base in a dermatomal distribution
urticaria hives transient oedematous wheals with surrounding flare
rosacea central facial erythema with papules pustules and telangiectasia
vitiligo depigmented white macules and patches with sharp borders
normal healthy skin with even colour and texture and no lesion
chest x ray radiograph showing clear lungs pneumonia effusion cardiomegaly nodule
""".strip().splitlines()


def train_sentencepiece(vocab_size: int = 320) -> bytes:
    """Train a tiny unigram SentencePiece model in memory and return its bytes."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 4),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        character_coverage=1.0,
        # The corpus is small: let the trainer stop below vocab_size if it must.
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return buffer.getvalue()


# Tower shapes: tiny for tests and the demo; MedSigLIP-448's own for the benchmark
# (REFERENCE.md: So400m, hidden 1152, 27 layers, MLP 4304, 16 heads, 64 tokens).
TINY_SHAPES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
MEDSIGLIP_448_SHAPES = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
MEDSIGLIP_VOCAB = 32000


def build_tiny_siglip(directory: Path, seed: int = 0, shapes: dict | None = None) -> Path:
    """Save a random SigLIP (model, SentencePiece tokenizer, image processor) to ``directory``.

    ``AutoModel.from_pretrained(directory)`` and ``AutoProcessor.from_pretrained(directory)``
    load it. The image path is MedSigLIP's (448 px, patch 14, mean = std = 0.5,
    bilinear); with the default tiny ``shapes`` a forward pass takes milliseconds.
    ``shapes=MEDSIGLIP_448_SHAPES`` gives MedSigLIP-448's exact tower shapes (and its
    32,000-token embedding table) for speed measurements: speed does not depend on
    the weights' values.
    """
    shapes = shapes or TINY_SHAPES
    full_size = shapes is MEDSIGLIP_448_SHAPES
    import torch
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # The tokenizer class needs a vocab file; this is model data, never user data.
    vocab_file = directory / "spiece.model"
    vocab_file.write_bytes(train_sentencepiece())
    tokenizer = SiglipTokenizer(vocab_file=str(vocab_file), model_max_length=TEXT_MAX_LENGTH)

    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=2,  # PILImageResampling.BILINEAR
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
    )
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)

    config = SiglipConfig(
        text_config={
            # Token ids stay below len(tokenizer); a full-size table only matters for memory.
            "vocab_size": MEDSIGLIP_VOCAB if full_size else len(tokenizer),
            **shapes,
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            # SigLIP's tokenizer adds no BOS; use EOS so no id points past the vocabulary.
            "bos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            **shapes,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        # Saved in config.json: the classifier then knows its zero-shot
        # judgements (the scope gate) mean nothing, in tests and demo mode alike.
        privascan_random_weights=True,
    )
    torch.manual_seed(seed)
    model = SiglipModel(config)
    with torch.no_grad():
        # SigLIP's published initialisation (t' = log 10, b = -10) instead of zeros,
        # so the scale and bias are exercised with realistic, non-trivial values.
        model.logit_scale.fill_(float(torch.log(torch.tensor(10.0))))
        model.logit_bias.fill_(-10.0)
    # Saving instantiates SiglipTextConfig() with transformers' own inconsistent defaults
    # (BOS 49406 in a 32000 vocabulary), which logs a misleading warning: hush it here only.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model.save_pretrained(directory, safe_serialization=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return directory
