"""Build a Janus directory from nothing: a word-level tokenizer trained locally, a `JanusProcessor`, a
`JanusConfig` and random weights, written by `save_pretrained` exactly as a Hugging Face Janus / Janus-Pro
checkpoint is laid out. The built-in model starts here (then `srum/pretrain` trains it); tests build tiny
random ones at other resolutions. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
SPECIALS = [PAD, BOS, UNK, IMAGE, BOI, EOI]


class JanusShape(BaseModel):
    """The sizes of a Janus built from a config. Janus's own constraints are checked here, so a bad shape
    fails with a message instead of a tensor mismatch deep inside transformers."""

    model_config = ConfigDict(extra="forbid")
    image_size: int = 32  # the vision tower's and the VQ's resolution
    patch_size: int = 4  # the vision tower's patch; the VQ's token grid is image_size / patch_size as well
    hidden: int = 128  # language model width; aligners and generation head project to it
    layers: int = 4
    heads: int = 4
    mlp: int = 512
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    codebook: int = Field(2048, ge=2)
    code_dim: int = 8
    vq_channels: int = 32  # multiple of 32 (its GroupNorm has 32 groups)
    vq_multipliers: list[int] = [1, 2, 2]  # the VQ downsamples by 2 ** (len - 1)
    vq_latent: int = 64
    max_positions: int = 256

    @model_validator(mode="after")
    def _janus_constraints(self):
        grid, rem = divmod(self.image_size, self.patch_size)
        if rem:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.image_size // 2 ** (len(self.vq_multipliers) - 1) != grid:
            raise ValueError(f"the VQ ({len(self.vq_multipliers)} levels) downsamples {self.image_size} px to "
                             f"{self.image_size // 2 ** (len(self.vq_multipliers) - 1)}, but the vision grid is {grid}: "
                             "Janus uses one token grid for both")
        if self.vq_channels % 32:
            raise ValueError(f"vq_channels {self.vq_channels} must be a multiple of 32")
        for name, width in (("hidden", self.hidden), ("vision_hidden", self.vision_hidden)):
            heads = self.heads if name == "hidden" else self.vision_heads
            if width % heads:
                raise ValueError(f"{name} {width} is not divisible by its {heads} heads")
        return self

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def word_tokenizer(words: list[str], specials: list[str] = ()):
    """A `PreTrainedTokenizerFast` over `words` (whitespace and punctuation split, <bos> first), with
    Janus's image tokens as named special tokens, so that `JanusProcessor` finds them. `specials`: more tokens
    that are never split (a chat template's role markers)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(SPECIALS + list(specials) + list(words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIALS + list(specials)])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, pad_token=PAD, unk_token=UNK,
                                   extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
                                   padding_side="left")


def janus_config(shape: JanusShape, tokenizer):
    from transformers import (
        JanusConfig,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    s = shape
    text = LlamaConfig(hidden_size=s.hidden, intermediate_size=s.mlp, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                       num_key_value_heads=s.heads, vocab_size=len(tokenizer), max_position_embeddings=s.max_positions,
                       bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
                       tie_word_embeddings=False)
    vision = JanusVisionConfig(hidden_size=s.vision_hidden, num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
                               image_size=s.image_size, patch_size=s.patch_size, projection_dim=s.hidden, depth=2,
                               num_image_tokens=s.grid**2, intermediate_size=4 * s.vision_hidden)
    vq = JanusVQVAEConfig(embed_dim=s.code_dim, num_embeddings=s.codebook, latent_channels=s.vq_latent,
                          base_channels=s.vq_channels, channel_multiplier=list(s.vq_multipliers), num_res_blocks=1,
                          projection_dim=s.hidden, image_token_embed_dim=s.hidden)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                       image_token_id=tokenizer.convert_tokens_to_ids(IMAGE), tie_word_embeddings=False)


def processor_for(shape: JanusShape, tokenizer, chat_template: str | None = None):
    from transformers import JanusProcessor
    from transformers.models.janus.image_processing_pil_janus import (
        JanusImageProcessorPil,
    )

    images = JanusImageProcessorPil(size={"height": shape.image_size, "width": shape.image_size}, min_size=shape.patch_size,
                                    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return JanusProcessor(images, tokenizer, chat_template=chat_template, num_image_tokens=shape.grid**2)


def build_janus(directory: Path, shape: JanusShape, words: list[str], seed: int = 0, chat_template: str | None = None,
                settings: dict | None = None, specials: list[str] = ()) -> Path:
    """A random-weight Janus directory (config.json, model.safetensors, tokenizer and processor files), with
    srum's settings for it (judge question, answer tokens) in srum.json when given."""
    import torch
    from transformers import JanusForConditionalGeneration

    tok = word_tokenizer(words, specials)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(janus_config(shape, tok))
    d = Path(directory)
    model.save_pretrained(d)
    processor_for(shape, tok, chat_template).save_pretrained(d)
    if settings:
        (d / "srum.json").write_text(json.dumps(settings, indent=2) + "\n")
    return d
