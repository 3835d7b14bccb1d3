"""transformers CLIP / SigLIP embedders (issue 16 point 8): tiny random CLIPModel and SiglipModel
folders saved by transformers itself load with their own preprocessing, match transformers'
own features, and work in ensembles, ``classify`` and ``score``."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("transformers")

from clipforge.guidance.clip_models import load_embedder  # noqa: E402
from clipforge.guidance.embedders import OPENAI_MEAN  # noqa: E402

LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "vocab_size": 64}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2, "image_size": 32, "patch_size": 8}


def _clip_folder(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in LETTERS:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config={**TEXT, "max_position_embeddings": 77, "eos_token_id": 1,
                                  "bos_token_id": 0, "pad_token_id": 1},
                     vision_config=VISION, projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _siglip_folder(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor,
                              SiglipModel)

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(
        ["a", "red", "blue", "circle", "square", "green", "triangle", "photo", "of"])}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>", model_max_length=64)
    torch.manual_seed(0)
    cfg = SiglipConfig(text_config={**TEXT, "max_position_embeddings": 64},
                       vision_config=VISION)
    SiglipModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"clip": _clip_folder(root / "clip"), "siglip": _siglip_folder(root / "siglip")}


def _image():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_features_match_transformers_own_pipeline(folders, kind):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    folder = folders[kind]
    emb = load_embedder(f"hf:{folder}")
    model = AutoModel.from_pretrained(folder).eval()
    proc, tok = AutoImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    pil, x = _image()

    def feats(out):
        return F.normalize((out if torch.is_tensor(out) else out.pooler_output).float(), dim=-1)

    with torch.no_grad():
        want_img = feats(model.get_image_features(**proc(images=pil, return_tensors="pt")))
        texts = ["a red circle", "a blue square"]
        if kind == "siglip":  # SigLIP was trained on texts padded to the full 64 tokens
            t = tok(texts, padding="max_length", max_length=64, return_tensors="pt")
            t.pop("attention_mask", None)
        else:
            t = tok(texts, padding=True, return_tensors="pt")
        want_txt = feats(model.get_text_features(**t))
        got_img, got_txt = emb.encode_image(x), emb.encode_text(texts)
    assert torch.allclose(got_img, want_img, atol=1e-4)
    assert torch.allclose(got_txt, want_txt, atol=1e-5)
    assert got_img.shape == (1, 16 if kind == "clip" else 32)


def test_per_model_preprocessing(folders):
    clip, siglip = load_embedder(f"hf:{folders['clip']}"), load_embedder(str(folders["siglip"]))
    assert torch.allclose(clip.mean.flatten(), torch.tensor(OPENAI_MEAN))
    assert siglip.mean.flatten().tolist() == [0.5] * 3 and siglip.std.flatten().tolist() == [0.5] * 3
    assert clip.image_size == siglip.image_size == 32
    assert siglip.tokenizer(["a red circle"])["input_ids"].shape == (1, 64)
    assert "attention_mask" not in siglip.tokenizer(["a"])
    assert clip.tokenizer.context_length == 77 and siglip.tokenizer.context_length == 64


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "clipforge", *args], capture_output=True,
                          text=True, timeout=600)


def test_ensemble_classify_and_score(folders, tmp_path):
    clip, siglip = folders["clip"], folders["siglip"]
    r = _cli("generate", "a red circle", "--clip", f"shapes,hf:{clip}@0.5,hf:{siglip}@0.5",
             "--size", "32", "--steps", "2", "--cutn", "2", "-q", "--out", str(tmp_path / "a.png"))
    assert r.returncode == 0, r.stderr
    r = _cli("classify", str(tmp_path / "a.png"), "--labels", "red circle,blue square",
             "--clip", f"hf:{siglip}", "--json", "-q")
    assert r.returncode == 0, r.stderr
    probs = json.loads(r.stdout)["probs"]
    assert set(probs) == {"red circle", "blue square"} and abs(sum(probs.values()) - 1) < 1e-4
    r = _cli("score", str(tmp_path / "a.png"), "--prompt", "a red circle", "--judge",
             f"hf:{clip}", "--json", "-q")
    assert r.returncode == 0, r.stderr
    assert -100 <= json.loads(r.stdout)["clip_score"] <= 100


def test_not_a_clip_model_and_offline_hub_id(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8, vocab_size=10)).save_pretrained(tmp_path / "bert")
    r = _cli("classify", "x.png", "--labels", "a,b", "--clip", f"hf:{tmp_path / 'bert'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
