"""Weights (issue 15 item 7; BAD_INPUTS row 29): another architecture's weights, a PyTorch zip
named .safetensors, a legacy (non-zip) taming checkpoint, a plain VQModel folder."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.errors import ConfigError, ModelLoadError
from clipforge.guidance.clip_models import load_embedder
from clipforge.weights import load_state_dict, sniff_format
from conftest import TINY_CFG, write_tiny_clip


def test_weights_of_another_architecture_name_the_mismatch(tmp_path):
    wide = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "width": 96}}
    write_tiny_clip(tmp_path / "wide", cfg=wide)
    narrow = write_tiny_clip(tmp_path / "narrow")
    # the narrow model's config with the wide model's weights
    (narrow / "open_clip_model.safetensors").write_bytes(
        (tmp_path / "wide" / "open_clip_model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="are for another architecture") as e:
        load_embedder(str(narrow))
    assert "size mismatch" in str(e.value) and e.value.field == "clip"
    r = CliRunner().invoke(app, ["generate", "x", "--clip", str(narrow), "--size", "16",
                                 "--steps", "1", "--cutn", "2", "-q", "--out",
                                 str(tmp_path / "a.png")])
    assert r.exit_code == 2 and "another architecture" in r.stderr, r.output
    assert "Traceback" not in r.output


def test_a_pytorch_zip_named_safetensors_loads_by_its_content(tmp_path):
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(sd, tmp_path / "model.safetensors")
    assert sniff_format(tmp_path / "model.safetensors") == "torch-zip"
    assert torch.equal(load_state_dict(tmp_path / "model.safetensors")["w"], sd["w"])
    # and a CLIP folder whose open_clip_model.safetensors is really a torch zip
    folder = write_tiny_clip(tmp_path / "clip")
    from safetensors.torch import load_file

    weights = load_file(str(folder / "open_clip_model.safetensors"))  # memory-mapped: the
    torch.save(weights, tmp_path / "zip")  # file is replaced by a new one, not rewritten
    (tmp_path / "zip").replace(folder / "open_clip_model.safetensors")
    emb = load_embedder(str(folder))
    assert emb.encode_text(["a red circle"]).shape == (1, TINY_CFG["embed_dim"])


def test_convert_vqgan_reads_a_legacy_checkpoint(tmp_path):
    import yaml
    from diffusers import VQModel

    import test_generators as T
    from clipforge.generators.taming import convert_taming_checkpoint, taming_config_to_diffusers

    params = yaml.safe_load(T.TAMING_YAML)["model"]["params"]
    torch.manual_seed(0)
    original = VQModel(**taming_config_to_diffusers(params)).eval()
    taming_sd = T.to_taming(original.state_dict(), T.taming_names(2, 1, {1}))
    T.SENTINEL["path"] = tmp_path / "pwned"
    torch.save({"state_dict": taming_sd, "callbacks": {T.ModelCheckpointStandIn:
                                                       T.ModelCheckpointStandIn()}},
               tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    assert sniff_format(tmp_path / "legacy.ckpt") == "pickle"
    (tmp_path / "model.yaml").write_text(T.TAMING_YAML)
    r = CliRunner().invoke(app, ["convert-vqgan", str(tmp_path / "legacy.ckpt"),
                                 str(tmp_path / "model.yaml"), str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert not T.SENTINEL["path"].exists()  # nothing from the pickle ran
    converted = VQModel.from_pretrained(tmp_path / "out").eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(converted(x).sample, original(x).sample, atol=1e-5)


def test_convert_vqgan_refuses_a_malicious_legacy_pickle(tmp_path):
    import test_generators as T
    from clipforge.generators.taming import convert_taming_checkpoint

    T.SENTINEL["path"] = tmp_path / "pwned"
    torch.save({"state_dict": {"quant_conv.weight": torch.zeros(1)}, "x": T.MaliciousReduce()},
               tmp_path / "evil.ckpt", _use_new_zipfile_serialization=False)
    (tmp_path / "model.yaml").write_text(T.TAMING_YAML)
    with pytest.raises(ConfigError, match="ckpt: "):
        convert_taming_checkpoint(tmp_path / "evil.ckpt", tmp_path / "model.yaml", tmp_path / "o")
    assert not T.SENTINEL["path"].exists() and not (tmp_path / "o").exists()


def test_plain_vqmodel_folder_hint_says_subfolder_null(tmp_path):
    from clipforge.registry import build_generator

    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    with pytest.raises(ConfigError, match='pass "subfolder": null'):
        build_generator("vqgan", 32, 32, options={"model": str(tmp_path / "vq")})
