"""The FLUX autoencoder BAGEL ships (ae.safetensors, Black Forest Labs' original tensor names), run by
diffusers' AutoencoderKL. The widths come from the tensors in the file; nothing about them is assumed.

BFL's names and diffusers' differ only in spelling (and the mid-block attention's 1 x 1 convolutions,
which diffusers holds as linear layers): `bfl_name` spells a diffusers name the BFL way.
"""

from __future__ import annotations

import re

import torch

from ...io import ModelDirError
from .config import VAE_SCALE, VAE_SHIFT, AEShape

_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def bfl_name(name: str, levels: int) -> str:
    """The BFL spelling of a diffusers AutoencoderKL tensor name (decoder levels count the other way)."""
    side, rest = name.split(".", 1)
    rest = rest.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
    rest = rest.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
    for theirs, ours in _ATTN.items():
        rest = rest.replace(f"mid_block.attentions.0.{theirs}.", f"mid.attn_1.{ours}.")
    rest = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", rest)
    rest = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", rest)
    rest = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{levels - 1 - int(m[1])}.block.", rest)
    rest = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{levels - 1 - int(m[1])}.upsample.", rest)
    return f"{side}.{rest}"


def is_attn_matrix(bfl: str) -> bool:
    """BFL's attention projections are 1 x 1 convolutions (C, C, 1, 1); diffusers' are linear (C, C)."""
    return bool(re.search(r"\.attn_1\.(q|k|v|proj_out)\.weight$", bfl))


def read_shape(shapes: dict[str, tuple[int, ...]], where: str) -> AEShape:
    """The autoencoder's widths from the shapes of its tensors (BFL names)."""
    need = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight", "encoder.down.0.block.0.conv1.weight")
    missing = [k for k in need if k not in shapes]
    if missing:
        raise ModelDirError(f"{where}: not a FLUX autoencoder in BFL's names (no {', '.join(missing)})")
    levels = 1 + max(int(m[1]) for k in shapes if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    widths = []
    for i in range(levels):
        key = f"encoder.down.{i}.block.0.conv1.weight"
        if key not in shapes:
            raise ModelDirError(f"{where}: not a FLUX autoencoder (no {key})")
        widths.append(shapes[key][0])
    blocks = len({m[1] for k in shapes if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    return AEShape(in_channels=shapes["encoder.conv_in.weight"][1], out_channels=shapes["decoder.conv_out.weight"][0],
                   widths=tuple(widths), num_res_blocks=blocks, z_channels=shapes["decoder.conv_in.weight"][1])


def build(shape: AEShape):
    """A diffusers AutoencoderKL of these widths, as FLUX builds it: no quant convs, attention in the mid
    blocks, 32 groups per GroupNorm, z = 0.3611 * (mean - 0.1159)."""
    from diffusers import AutoencoderKL

    levels = len(shape.widths)
    return AutoencoderKL(in_channels=shape.in_channels, out_channels=shape.out_channels,
                         down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                         block_out_channels=shape.widths, layers_per_block=shape.num_res_blocks,
                         latent_channels=shape.z_channels, norm_num_groups=32, scaling_factor=VAE_SCALE,
                         shift_factor=VAE_SHIFT, use_quant_conv=False, use_post_quant_conv=False)


def expected(ae, levels: int) -> dict[str, tuple[int, ...]]:
    """BFL name -> shape of every tensor the file must hold for this autoencoder."""
    out = {}
    for name, t in ae.state_dict().items():
        b = bfl_name(name, levels)
        out[b] = tuple(t.shape) + ((1, 1) if is_attn_matrix(b) else ())
    return out


def load_bfl(ae, tensors: dict[str, torch.Tensor], levels: int) -> None:
    """Fill `ae` from BFL-named tensors (already checked to be exactly the expected set)."""
    sd = {}
    for name, t in ae.state_dict().items():
        src = tensors[bfl_name(name, levels)]
        sd[name] = src.reshape(t.shape).to(t.dtype)
    ae.load_state_dict(sd, strict=True)


def bfl_state_dict(ae, levels: int) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors in BFL's names and shapes (what ae.safetensors holds)."""
    out = {}
    for name, t in ae.state_dict().items():
        b = bfl_name(name, levels)
        out[b] = t.reshape(*t.shape, 1, 1) if is_attn_matrix(b) else t
    return out


def decode(ae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, z, h, w) -> images (B, 3, H, W) in about [-1, 1]: z / scale + shift, then the decoder."""
    z = latents / VAE_SCALE + VAE_SHIFT
    return ae.decoder(z)


def encode_mean(ae, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> scaled latents, the posterior's mean (the official encoder samples)."""
    moments = ae.encoder(images)
    mean = moments[:, : moments.shape[1] // 2]
    return VAE_SCALE * (mean - VAE_SHIFT)
