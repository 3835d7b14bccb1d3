"""Robust training pieces: the wider augmentation, and adversarial examples for CLIP."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipforge.errors import UsageError
from clipforge.training.adversarial import Adversarial, attack
from clipforge.training.augment import Augment
from clipforge.training.shapes import ShapesDataset


@pytest.fixture(scope="module")
def batch():
    return ShapesDataset(image_size=32).sample(6, torch.Generator().manual_seed(0))


def test_default_augment_is_the_old_affine_crop(batch):
    """With no rotation or perspective the projective grid is exactly affine_grid's."""
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = Augment(noise=0.0, brightness=0.0)
    out = a(batch.images, g1, batch.centre)
    m = a._matrices(batch.images.shape[0], g2, batch.centre)
    grid = F.affine_grid(m[:, :2], list(batch.images.shape), align_corners=False)
    ref = F.grid_sample(batch.images, grid, mode="bilinear", padding_mode="border",
                        align_corners=False).clamp(0, 1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_rotation_blur_and_blotches_change_images_and_replay(batch):
    a = Augment(rotation=math.radians(8), perspective=0.15, blur=1.0, blotches=0.25)
    x = a(batch.images, torch.Generator().manual_seed(1), batch.centre)
    y = a(batch.images, torch.Generator().manual_seed(1), batch.centre)
    plain = Augment()(batch.images, torch.Generator().manual_seed(1), batch.centre)
    assert torch.equal(x, y) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert (x - plain).abs().mean() > 0.01


def test_adversarial_examples_stay_in_the_ball_and_raise_the_loss():
    torch.manual_seed(0)
    w = torch.randn(3 * 8 * 8, 4)
    x = torch.rand(5, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 3, 0])
    loss_of = lambda im: F.cross_entropy(im.flatten(1) @ w, target)  # noqa: E731
    adv = Adversarial(eps=0.03, steps=3)(x, loss_of, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.03 + 1e-6 and 0 <= float(adv.min()) <= float(adv.max()) <= 1
    assert float(loss_of(adv)) > float(loss_of(x)) + 0.01
    half = Adversarial(eps=0.03, fraction=0.4)(x, loss_of, torch.Generator().manual_seed(0))
    assert torch.equal(half[2:], x[2:]) and not torch.equal(half[:2], x[:2])


def test_attack_on_a_clip_leaves_the_weights_trainable(tiny_clip_dir):
    from clipforge.training.model_io import build_model, build_tokenizer, embedder_of, \
        default_preprocess, resolve_config
    import json

    cfg = json.loads((tiny_clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    model = build_model(resolve_config(cfg)).train()
    emb = embedder_of(model, cfg, default_preprocess(cfg))
    tok = build_tokenizer(cfg)(["a red circle", "a blue square"])
    x = torch.rand(2, 3, 32, 32)
    adv = attack(Adversarial(eps=0.02), model, emb, x, tok, None, torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and not adv.requires_grad and (adv - x).abs().max() <= 0.02 + 1e-6
    assert all(p.requires_grad for p in model.parameters())


def test_bad_attack_settings_are_usage_errors():
    with pytest.raises(UsageError, match="eps"):
        Adversarial(eps=0)


def test_training_can_start_from_a_saved_model(tmp_path):
    from clipforge.training.model_io import save_model
    from clipforge.training.trainer import train

    first = train("shapes", "tiny", steps=2, batch_size=8, seed=0, eval_n=0)
    save_model(first.model, first.model_cfg, tmp_path / "m")
    again = train("shapes", "tiny", steps=1, batch_size=8, seed=5, eval_n=0,
                  init=tmp_path / "m", lr=1e-9)  # a step of ~0: the saved weights come back
    fresh = train("shapes", "tiny", steps=1, batch_size=8, seed=5, eval_n=0, lr=1e-9)
    w = "visual.conv1.weight"
    saved = first.model.state_dict()[w].half().float()  # the folder keeps float16
    assert torch.allclose(again.model.state_dict()[w], saved, atol=1e-4)
    assert not torch.allclose(fresh.model.state_dict()[w], saved, atol=1e-2)
