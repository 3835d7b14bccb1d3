"""Training and evaluating small CLIPs offline, so clipforge needs no model hub.

- ``configs/*.json``: the small model configs, as data (read by :mod:`.model_io`);
- :mod:`.model_io`: resolve a config, build a model and tokenizer, save and load models;
- :mod:`.shapes`: the procedural captioned-shapes data set;
- :mod:`.data`: (image, caption) pairs from disk and the batch sources;
- :mod:`.augment`: training augmentation;
- :mod:`.trainer`: the contrastive loss and :func:`~.trainer.train`;
- :mod:`.zeroshot`: zero-shot classification and the linear probe (no trainer needed).

Nothing is imported here, so ``import clipforge.training.shapes`` stays light.
"""
