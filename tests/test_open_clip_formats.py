"""open_clip's own formats (issue 16 point 6): the folder the README's recipe writes
(``save_config_for_hf`` + safetensors, since ``save_for_hf`` needs a tokenizer with
``save_pretrained``), the real hub layout with only ``open_clip_pytorch_model.bin``, and a
pretrained-table tag (``ARCH:TAG``) loaded offline from the file in the local hub cache."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from clipforge.guidance.clip_models import load_embedder
from conftest import TINY_CFG


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("cfg") / "cf-tiny-formats.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(3)
    return open_clip.create_model("cf-tiny-formats")


def test_readme_recipe_save_config_for_hf_and_safetensors(tiny_model, tmp_path):
    from open_clip.push_to_hf_hub import save_config_for_hf, save_for_hf
    from safetensors.torch import save_file

    import open_clip

    with pytest.raises(AttributeError, match="save_pretrained"):  # why the README says so
        save_for_hf(tiny_model, open_clip.get_tokenizer("cf-tiny-formats"), TINY_CFG,
                    tmp_path / "fails")
    folder = tmp_path / "my-clip"
    folder.mkdir()
    save_config_for_hf(tiny_model, folder / "open_clip_config.json", TINY_CFG)
    save_file(tiny_model.state_dict(), str(folder / "open_clip_model.safetensors"))
    e = load_embedder(str(folder))
    assert torch.equal(e.model.visual.conv1.weight, tiny_model.visual.conv1.weight)


def test_hub_layout_with_the_pytorch_bin_only(tiny_model, tmp_path):
    from open_clip.push_to_hf_hub import save_config_for_hf

    folder = tmp_path / "repo"
    folder.mkdir()
    save_config_for_hf(tiny_model, folder / "open_clip_config.json", TINY_CFG)
    torch.save(tiny_model.state_dict(), folder / "open_clip_pytorch_model.bin")
    e = load_embedder(f"local-dir:{folder}")
    assert torch.equal(e.model.text_projection, tiny_model.text_projection)


def test_pretrained_tag_offline_from_the_hub_cache(tiny_model, tmp_path):
    """A tag of open_clip's table, its weights put in the hub cache as huggingface_hub keeps
    them (as after a download on another machine): loads with HF_HUB_OFFLINE=1, with the
    tag's own mean/std."""
    from safetensors.torch import save_file

    snap = tmp_path / "hub" / "models--cf--tiny-formats" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file(tiny_model.state_dict(), str(snap / "open_clip_model.safetensors"))
    (tmp_path / "hub" / "models--cf--tiny-formats" / "refs").mkdir()
    (tmp_path / "hub" / "models--cf--tiny-formats" / "refs" / "main").write_text("0" * 40)
    cfg = tmp_path / "cf-tiny-formats.json"
    cfg.write_text(json.dumps(TINY_CFG))
    code = textwrap.dedent(f"""
        import open_clip, torch
        from open_clip import pretrained as P
        open_clip.add_model_config({str(cfg)!r})
        P._PRETRAINED["cf-tiny-formats"] = {{"cached": P._pcfg(hf_hub="cf/tiny-formats/",
                                              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))}}
        from clipforge.guidance.clip_models import load_embedder
        e = load_embedder("cf-tiny-formats:cached")
        print(e.mean.flatten().tolist(), float(e.model.logit_scale))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    mean, scale = r.stdout.strip().rsplit(" ", 1)
    assert json.loads(mean) == [0.5, 0.5, 0.5]
    assert abs(float(scale) - tiny_model.logit_scale.item()) < 1e-6
