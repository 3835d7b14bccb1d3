"""Evaluating a CLIP without training it further: zero-shot classification and a linear probe.

Both protocols are the CLIP paper's (Radford et al. 2021): zero-shot ranks label prompts
("a photo of a {}") by their similarity to the image; the linear probe fits logistic
regression on frozen image features. They take any Embedder (a loaded model, or the
:class:`~clipforge.guidance.embedders.ClipEmbedder` over a model being trained) or a bare
open_clip model, and never need the trainer, so evaluation code imports this module alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from clipforge.errors import ConfigError
from clipforge.guidance.embedders import ClipEmbedder, encode_images


def as_embedder(embedder_or_model: Any) -> Any:
    """An Embedder as is; a bare open_clip model wrapped in a ClipEmbedder (not frozen).

    Args:
        embedder_or_model: an Embedder, or an open_clip CLIP (default BPE tokenizer, its
            own input size, OpenAI mean/std).
    """
    m = embedder_or_model
    if not (isinstance(m, torch.nn.Module) and hasattr(m, "visual") and hasattr(m, "logit_scale")):
        return m
    import open_clip

    size = m.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    tokenizer = open_clip.SimpleTokenizer(context_length=getattr(m, "context_length", 77))
    return ClipEmbedder(m, tokenizer, size, name="model", frozen=False)


def check_template(template: str) -> None:
    """Refuse a template that is not text with exactly one ``{}`` slot for the label.

    Raises:
        ConfigError: (field ``template``) no slot, several, a named or numbered one, or a
            stray brace (write ``{{`` and ``}}`` for literal braces).
    """
    import string

    try:
        slots = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except (ValueError, TypeError) as e:
        raise ConfigError("template", f"{template!r} is not a template ({e}); write {{{{ and "
                          "}} for literal braces") from None
    if slots != [""]:
        raise ConfigError("template", f"{template!r} has {len(slots)} slots; it needs exactly "
                          "one {} for the label" + (f" (not {{{slots[0]}}})" if slots and
                                                    slots[0] else ""))


@torch.no_grad()
def text_classifier(embedder: Any, labels: Sequence[str],
                    template: str | Sequence[str] = "a photo of a {}") -> torch.Tensor:
    """Unit-length text embedding per label; several templates are averaged (prompt ensembling).

    Args:
        embedder: an Embedder.
        labels: class names.
        template: one template with ``{}``, or several.

    Shape:
        returns (len(labels), D), unit L2 norm.
    """
    templates = [template] if isinstance(template, str) else list(template)
    if not labels or not templates:
        raise ConfigError("labels", "need at least one label and one template")
    for t in templates:
        check_template(t)
    emb = torch.stack([embedder.encode_text([t.format(lab) for lab in labels])
                       for t in templates]).mean(0)
    return F.normalize(emb, dim=-1)


@torch.no_grad()
def zero_shot(embedder_or_model: Any, images: torch.Tensor, labels: Sequence[str],
              template: str | Sequence[str] = "a photo of a {}",
              logit_scale: float = 100.0) -> torch.Tensor:
    """Zero-shot classification: softmax over image-to-label-prompt similarities.

    Args:
        embedder_or_model: an Embedder (``encode_image``/``encode_text``) or an open_clip model.
        images: images to classify.
        labels: class names, put into ``template``.
        template: a template with ``{}`` or a list of them (their text embeddings are averaged).
        logit_scale: softmax temperature's inverse (CLIP uses 100).

    Shape:
        images: (N, 3, H, W) in [0, 1]; returns (N, len(labels)) probabilities.
    """
    emb = as_embedder(embedder_or_model)
    text = text_classifier(emb, list(labels), template)
    img = encode_images(emb, images)
    return (logit_scale * img @ text.t()).softmax(-1)


def shapes_zero_shot(embedder: Any, n: int = 512, seed: int = 0,
                     templates: Sequence[str] | None = None) -> dict[str, float]:
    """Zero-shot accuracy on the shapes val split: colour, shape, and both at once.

    Every (colour, shape) pair is a class ("a red circle"); colour and shape accuracy take the
    arg-max of the class probabilities summed over the other attribute.

    Args:
        embedder: an Embedder (or an open_clip model) trained at the data set's image size.
        n: number of val images.
        seed: the split's base seed.
        templates: prompt templates (default: the caption phrasings without background).
    """
    from clipforge.training.shapes import COLOUR_NAMES, PHRASINGS, SHAPES, ShapesDataset

    emb = as_embedder(embedder)
    size = getattr(emb, "image_size", 64)
    val = ShapesDataset(image_size=max(32, min(256, int(size)))).split("val", n, seed)
    combos = [(c, s) for c in range(len(COLOUR_NAMES)) for s in range(len(SHAPES))]
    if templates is None:
        templates = [t.replace("{c} {s}", "{}").replace("{s} that is {c}", "{}") for t in PHRASINGS
                     if "{c} {s}" in t]
    labels = [f"{COLOUR_NAMES[c]} {SHAPES[s]}" for c, s in combos]
    probs = zero_shot(emb, val.images, labels, templates)
    p = probs.view(n, len(COLOUR_NAMES), len(SHAPES))
    colour = p.sum(2).argmax(1)
    shape = p.sum(1).argmax(1)
    both = probs.argmax(1)
    truth = val.colour * len(SHAPES) + val.shape
    return {"colour": float((colour == val.colour).float().mean()),
            "shape": float((shape == val.shape).float().mean()),
            "colour+shape": float((both == truth).float().mean()),
            "n": n}


@dataclass
class LinearProbe:
    """A logistic-regression classifier on frozen image features.

    Attributes:
        classifier: the fitted linear layer (features -> classes).
        classes: class names in output order.
        train_accuracy: accuracy on the training images.
        test_accuracy: accuracy on the test images, when given.
    """

    classifier: torch.nn.Linear
    classes: list[Any]
    train_accuracy: float
    test_accuracy: float | None = None


def linear_probe(embedder: Any, images: torch.Tensor, labels: Sequence[Any], *,
                 test_images: torch.Tensor | None = None, test_labels: Sequence[Any] | None = None,
                 weight_decay: float = 1e-4, steps: int = 100) -> LinearProbe:
    """Fit logistic regression on frozen image features (the CLIP paper's linear-probe protocol).

    Args:
        embedder: an Embedder or open_clip model; it stays frozen.
        images: training images.
        labels: one label per image (any hashable values).
        test_images, test_labels: optional held-out set to report accuracy on (a test label
            unseen in training counts as a miss).
        weight_decay: L2 penalty on the weights.
        steps: LBFGS iterations.

    Shape:
        images, test_images: (N, 3, H, W) in [0, 1].
    """
    emb = as_embedder(embedder)
    if len(labels) != images.shape[0]:
        raise ConfigError("labels", f"{len(labels)} labels for {images.shape[0]} images")
    classes = list(dict.fromkeys(labels))
    if len(classes) < 2:
        raise ConfigError("labels", "need at least 2 classes")
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[lab] for lab in labels])
    feats = encode_images(emb, images).float()
    clf = torch.nn.Linear(feats.shape[1], len(classes))
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(feats), y) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    clf.requires_grad_(False)
    train_acc = float((clf(feats).argmax(1) == y).float().mean())
    test_acc = None
    if test_images is not None and test_labels is not None:
        known = [index.get(lab, -1) for lab in test_labels]
        pred = clf(encode_images(emb, test_images).float()).argmax(1)
        test_acc = float((pred == torch.tensor(known)).float().mean())
    return LinearProbe(clf, classes, train_acc, test_acc)


__all__ = ["as_embedder", "text_classifier", "zero_shot", "shapes_zero_shot", "LinearProbe",
           "linear_probe"]
