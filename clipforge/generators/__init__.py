"""The generators: one module per kind of image parameterization, found through the registry.

``pixel``, ``fourier``, ``vae``, ``vqgan``, ``biggan`` (with its network in ``biggan_net``) and
``diffusion`` (a GuidedSampler, with its pipeline loading in ``diffusion_models``); ``hub`` loads
model files from a folder or the hub, ``taming`` converts taming-transformers VQGANs, ``clamp``
and ``draw`` hold the two small pieces several generators share. Nothing is imported here:
:mod:`clipforge.registry` imports a generator's module only when it is used.
"""
