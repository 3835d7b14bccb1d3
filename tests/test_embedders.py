"""ClipEmbedder and model loading: open_clip's own on-disk formats, offline (BAD_INPUTS row 10)."""

import json
import os
import pickle
import shutil

import pytest
import torch

from clipforge.guidance.clip_models import ModelCache, ModelLoadError, load_embedder, load_ensemble
from clipforge.guidance.embedders import ClipEmbedder
from conftest import TINY_CFG


def test_contract(tiny_embedder):
    e = tiny_embedder
    x = torch.rand(3, 3, 50, 70, requires_grad=True)
    f = e.encode_image(x)
    assert f.shape == (3, 32)
    assert torch.allclose(f.norm(dim=-1), torch.ones(3), atol=1e-5)
    f.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in e.model.parameters()) and not e.model.training
    t = e.encode_text(["a red circle", "a blue square", "a red circle"])
    assert t.shape == (3, 32) and torch.allclose(t[0], t[2])
    assert torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_long_prompt_truncation_warns(tiny_embedder):
    with pytest.warns(UserWarning, match="truncated"):
        tiny_embedder.encode_text(["a red circle " * 2000])


class _NoTokenizerFiles:
    """open_clip's default tokenizer has no files to save."""

    def save_pretrained(self, dest):
        pass


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """Register the tiny config as an open_clip architecture name, as add_model_config does."""
    import open_clip

    path = tmp_path_factory.mktemp("cfg") / "cf-tiny-test.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return "cf-tiny-test"


@pytest.fixture(scope="module")
def open_clip_saved(tmp_path_factory, tiny_arch):
    """A random tiny model saved by open_clip's own save_for_hf (the hub repo layout)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_for_hf

    torch.manual_seed(1)
    model = open_clip.create_model(tiny_arch)
    folder = tmp_path_factory.mktemp("oc") / "repo"
    save_for_hf(model, _NoTokenizerFiles(), TINY_CFG, folder, safe_serialization="both")
    return folder, model


def test_load_folder_written_by_open_clip(open_clip_saved):
    folder, model = open_clip_saved
    e = load_embedder(str(folder))
    assert torch.equal(e.model.visual.conv1.weight, model.visual.conv1.weight)
    assert e.image_size == 32


def test_load_pytorch_bin_when_no_safetensors(open_clip_saved, tmp_path):
    folder, model = open_clip_saved
    copy = tmp_path / "bin_only"
    shutil.copytree(folder, copy)
    (copy / "open_clip_model.safetensors").unlink()
    e = load_embedder(f"local-dir:{copy}")
    assert torch.equal(e.model.text_projection, model.text_projection)


def test_arch_and_training_checkpoint(tiny_arch, open_clip_saved, tmp_path):
    """open_clip's training script saves {"epoch", "state_dict" (DDP "module." keys), ...}."""
    _, model = open_clip_saved
    ckpt = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "x",
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    e = load_embedder(f"{tiny_arch}:{ckpt}")
    assert torch.equal(e.model.logit_scale, model.logit_scale)


def test_malicious_pickle_never_executed(tiny_arch, tmp_path):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    for name in ("evil.pt", "evil.safetensors"):  # a pickle renamed .safetensors too
        path = tmp_path / name
        with open(path, "wb") as f:
            pickle.dump({"state_dict": Evil()}, f, protocol=2)
        with pytest.raises(ModelLoadError, match="cannot load weights"):
            load_embedder(f"{tiny_arch}:{path}")
    assert not sentinel.exists()


def test_corrupt_and_missing_weights(tiny_arch, tmp_path, open_clip_saved):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        load_embedder(f"{tiny_arch}:{bad}")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_embedder(f"{tiny_arch}:{tmp_path / 'nope.bin'}")
    folder, _ = open_clip_saved
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text((folder / "open_clip_config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights file"):
        load_embedder(str(empty))


def test_unknown_names_list_what_exists():
    with pytest.raises(ModelLoadError, match="shapes.*ViT") as e:
        load_embedder("ViT-Q-99")
    with pytest.raises(ModelLoadError, match="laion2b_s34b_b79k"):
        load_embedder("ViT-B-32:no_such_tag")
    with pytest.raises(ModelLoadError, match="pretrained tag"):
        load_embedder("ViT-B-32")
    assert "available" in str(e.value).lower()


def test_offline_download_failure_says_how_to_use_a_local_file(monkeypatch):
    import open_clip

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ModelLoadError, match=r"--clip ViT-B-32:/path/to/that/file"):
        load_embedder("ViT-B-32:laion2b_s34b_b79k")


def test_ensemble_weights_and_cache(tiny_clip_dir):
    cache = ModelCache()
    ens = load_ensemble([f"{tiny_clip_dir}@0.25", str(tiny_clip_dir)], cache=cache)
    (a, wa), (b, wb) = ens.members
    assert (wa, wb) == (0.25, 1.0) and a is b  # loaded once, shared
    assert isinstance(a, ClipEmbedder)
