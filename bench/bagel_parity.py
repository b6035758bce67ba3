"""Issue 38: srum's BAGEL backend against the official code (ByteDance-Seed/Bagel at UPSTREAM), fp32 on the CPU, on a
tiny random release directory (tests/models/bagel/tiny.py) and fixed inputs: the understanding logits (the official
`chat`'s first answer token), the velocity at one (x_t, t) without and with text CFG, a 6-step sample from one noise,
and the pixels decoded from one latent. The official side runs in its own venv (RUNNER, below).
    python bench/bagel_parity.py [--official /work/bagel-official] [--python /work/bagel-venv/bin/python]

--official: a checkout (or `git archive`) of UPSTREAM, with stubs/flash_attn (a per-sequence SDPA stand-in) in it.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common import ROOT, md_table, write

UPSTREAM = "056b5fd51a88c1eb4547318609e25d40080fcf87"
PROMPT, QUESTION = "a red circle above a blue square", "Does the image show a red circle? Answer the question using a single word or phrase."
ROWS, COLS, T, CFG, STEPS = 4, 6, 0.7, 4.0, 6  # a 64 x 96 image; t inside the CFG interval (0.4, 1]; one of 6 steps outside
RUNNER = r'''import importlib.machinery as m, importlib.util as u, json, sys
from pathlib import Path
import numpy as np, torch
from safetensors.torch import load_file, save_file
off, d, io = map(Path, sys.argv[1:4])
class Fp32(m.SourceFileLoader):  # the official attention casts q, k, v (and "gen" mode its MLP inputs) to bf16
    def get_code(self, name):
        return compile(Path(self.path).read_text().replace("torch.bfloat16", "torch.float32"), self.path, "exec")
class Finder:
    def find_spec(name, path=None, target=None):
        if name in ("modeling.bagel.qwen2_navit", "modeling.bagel.siglip_navit"):
            f = str(off / (name.replace(".", "/") + ".py"))
            return u.spec_from_file_location(name, f, loader=Fp32(name, f))
sys.meta_path.insert(0, Finder)
from PIL import Image
from data.data_utils import add_special_tokens
from inferencer import InterleaveInferencer
from modeling.autoencoder import AutoEncoder, AutoEncoderParams
from modeling.bagel import Bagel, BagelConfig, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel
from modeling.qwen2 import Qwen2Tokenizer
a, x = json.loads((io / "inputs.json").read_text()), load_file(io / "inputs.safetensors")
llm = Qwen2Config.from_json_file(d / "llm_config.json")  # app.py's overrides
llm.qk_norm, llm.tie_word_embeddings, llm.layer_module = True, False, "Qwen2MoTDecoderLayer"
vit = SiglipVisionConfig.from_json_file(d / "vit_config.json")
vit.rope, vit.num_hidden_layers = False, vit.num_hidden_layers - 1
ae = AutoEncoder(p := AutoEncoderParams(resolution=256, in_channels=3, out_ch=3, scale_factor=0.3611, shift_factor=0.1159, **a["ae"]))
assert ae.load_state_dict(load_file(d / "ae.safetensors"), strict=False, assign=True) == ([], [])  # load_ae, FLUX's sizes read
cfg = BagelConfig(visual_gen=True, visual_und=True, llm_config=llm, vit_config=vit, vae_config=p, connector_act="gelu_pytorch_tanh",
                  latent_patch_size=2, vit_max_num_patch_per_side=a["vit_side"], max_latent_size=a["latent_side"])
model = Bagel(Qwen2ForCausalLM(llm), SiglipVisionModel(vit), cfg)
model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit)
missing, unexpected = model.load_state_dict({k: v.float() for k, v in load_file(d / "ema.safetensors").items()}, strict=False)
assert not missing and not unexpected, (missing, unexpected)
tok, ids, _ = add_special_tokens(Qwen2Tokenizer.from_pretrained(d))
model.eval()  # fp32 throughout: the weights are the bf16 file's values, upcast exactly
out = {"prompt_ids": torch.tensor(tok.encode(a["prompt"])), "question_ids": torch.tensor(tok.encode(a["question"]))}
model.language_model.lm_head.register_forward_hook(lambda mod, i, o: out.setdefault("logits", o))  # the first answer token's
pixels = (x["image"].permute(2, 0, 1).float() / 255 - 0.5) / 0.5  # ToTensor, Normalize(0.5, 0.5); the resize is the identity
model.chat(tok, ids, lambda im: pixels, [Image.fromarray(x["image"].numpy())], a["question"], max_length=1)
inf = InterleaveInferencer(model, ae, tok, None, None, ids)
ctx, empty, hw = inf.update_context_text(a["prompt"], inf.init_gen_context()), inf.init_gen_context(), [tuple(a["image_hw"])]
gi = model.prepare_vae_latent(ctx["kv_lens"], ctx["ropes"], hw, ids)
gc = {"cfg_text_" + k[4:]: v for k, v in model.prepare_vae_latent_cfg(empty["kv_lens"], empty["ropes"], hw).items()}
gi.pop("packed_init_noises")
model.language_model.model.enable_taylorseer = False  # what generate_image sets before its steps
for s in (1.0, a["cfg"]):
    out[f"velocity_cfg{s:g}"] = model._forward_flow(x_t=x["x_t"][0], timestep=torch.full((len(x["x_t"][0]),), a["t"]), past_key_values=ctx["past_key_values"],
                                                     cfg_text_scale=s, cfg_text_past_key_values=empty["past_key_values"], **gi, **gc)
out["sample"] = model.generate_image(packed_init_noises=x["noise"][0], past_key_values=ctx["past_key_values"], num_timesteps=a["steps"] + 1,
                                     timestep_shift=3.0, cfg_text_scale=a["cfg"], cfg_img_scale=1.0, cfg_interval=[0.4, 1.0],
                                     cfg_text_past_key_values=empty["past_key_values"], **gi, **gc)[0]
ae.decoder.register_forward_hook(lambda mod, i, o: out.setdefault("pixels", o))
out["pixels_uint8"] = torch.from_numpy(np.asarray(inf.decode_image(x["latent"][0], tuple(a["image_hw"]))).copy())
save_file({k: v.contiguous() for k, v in out.items()}, io / "official.safetensors")
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", type=Path, default=Path("/work/bagel-official"))
    ap.add_argument("--python", default="/work/bagel-venv/bin/python")
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    from models.bagel import tiny

    from srum.models.bagel import BagelUMM, autoencoder
    from srum.models.bagel.inputs import patchify, text_blocks, tokens_to_latents, vit_pixels
    from srum.models.sampling import SampleOptions

    io = Path(tempfile.mkdtemp(prefix="bagel-parity-"))
    m, g, n, ae = BagelUMM.load(d := tiny.build(io / "release")), torch.Generator().manual_seed(1), ROWS * COLS, tiny.AE  # fp32
    x = {"image": torch.randint(0, 256, (42, 56, 3), generator=g, dtype=torch.uint8), "x_t": torch.randn(1, n, m.cfg.latent_dim, generator=g),
         "latent": torch.randn(1, n, m.cfg.latent_dim, generator=g), "noise": torch.randn(1, n, m.cfg.latent_dim, generator=torch.Generator().manual_seed(7))}
    save_file(x, io / "inputs.safetensors")
    (io / "inputs.json").write_text(json.dumps({"prompt": PROMPT, "question": QUESTION, "t": T, "cfg": CFG, "steps": STEPS, "image_hw": [ROWS * 16, COLS * 16],
                                                "ae": {"ch": ae.widths[0], "ch_mult": [w // ae.widths[0] for w in ae.widths], "downsample": ae.downsample,
                                                       "num_res_blocks": ae.num_res_blocks, "z_channels": ae.z_channels},
                                                "vit_side": m.cfg.vit_max_patches_per_side, "latent_side": m.cfg.max_latent_size}))
    (io / "runner.py").write_text(RUNNER)
    subprocess.run([args.python, str(io / "runner.py"), str(args.official), str(d), str(io)], cwd=args.official, check=True,
                   env={"PYTHONPATH": f"{args.official}:{args.official / 'stubs'}", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    off, sp, vit = load_file(io / "official.safetensors"), m.special, m.cfg.vit
    assert off["prompt_ids"].tolist() == m.text_ids(PROMPT) and off["question_ids"].tolist() == m.text_ids(QUESTION), "tokenizers differ"
    with torch.no_grad():  # the judge's path (BagelUMM.answer_logits) with the whole vocabulary's logits kept
        image = m.net.image_embeds(patchify(vit_pixels(x["image"].numpy(), vit.image_size, vit.image_size, vit.patch_size)[None], vit.patch_size), 6, 8)
        ids, valid = text_blocks([[sp["bos"], *m.text_ids(QUESTION), sp["eos"], sp["bos"]]])
        ours = {"logits": m.net.answer_logits(image, torch.tensor([sp["start_of_image"], sp["end_of_image"]]), ids, valid),
                "velocity_cfg1": m.velocity(x["x_t"], torch.full((1,), T), [PROMPT], grid=(ROWS, COLS))[0],
                f"velocity_cfg{CFG:g}": m._guided_velocity(x["x_t"], T, m.prompt_cache([PROMPT]).with_empty(), ROWS, COLS, CFG, None)[0],
                "sample": torch.from_numpy(m.sample([PROMPT], 7, SampleOptions(cfg_scale=CFG, steps=STEPS, height=ROWS * 16, width=COLS * 16))[1][0]),
                "pixels": autoencoder.decode(m.ae, tokens_to_latents(x["latent"], ROWS, COLS)),
                "pixels_uint8": torch.from_numpy(m.decode(x["latent"], ROWS, COLS)[0])}
    rows = {}
    for k, v in ours.items():
        ref, diff = off[k].double(), (v.double() - off[k].double()).abs()
        rows[k] = {"shape": list(v.shape), "max_abs_diff": float(diff.max()), "max_abs_official": float(ref.abs().max()),
                   "max_rel_diff": float(diff.max() / ref.abs().max()), "elements_differing": int((diff > 0).sum())}
    shutil.rmtree(io)
    res = {"command": " ".join(["python bench/bagel_parity.py", *sys.argv[1:]]), "upstream": f"ByteDance-Seed/Bagel@{UPSTREAM}", "dtype": "float32",
           "device": "cpu", "torch": torch.__version__, "model": "tiny random BAGEL release (tests/models/bagel/tiny.py, seed 0)",
           "inputs": {"prompt": PROMPT, "question": QUESTION, "image": "42 x 56 uint8, seed 1", "latent_grid": [ROWS, COLS], "t": T,
                      "cfg_scale": CFG, "sample_steps": STEPS, "noise_seed": 7}, "relative": "max |diff| / max |official|", "rows": rows}
    table = md_table(["output", "shape", "max abs diff", "max abs official", "max rel diff"],
                     [(k, "x".join(map(str, r["shape"])), f"{r['max_abs_diff']:.2e}", f"{r['max_abs_official']:.3g}", f"{r['max_rel_diff']:.2e}") for k, r in rows.items()])
    write("bagel", res, "\n".join([f"# BAGEL: srum against the official code\n\n`{res['command']}`, upstream `{res['upstream']}`, fp32 on the CPU "
                                   f"(torch {res['torch']}), {res['model']}.\n", *table, ""]))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
