"""Fourier generator: an image parameterized by its spectrum, with decorrelated colour.

The parameters are the real FFT coefficients of each channel, scaled by ``1 / f**decay`` so
that gradient steps move low frequencies as readily as high ones; the channels are mixed by the
square root of ImageNet's colour correlation and squashed by a sigmoid. Origin: Olah et al.,
"Feature Visualization" (Distill 2017) and the Lucid library; used for CLIP by aphantasia.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipforge.generators.draw import randn
from clipforge.images import fit_image

# Square root of the colour correlation of ImageNet, from Lucid (normalized below).
_COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                        [0.27, 0.00, -0.05],
                                        [0.27, -0.09, 0.03]])


class FourierGenerator(nn.Module):
    """RGB image in [0, 1] from a 1/f-scaled spectrum and decorrelated colour.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        batch: images rendered at once.
        decay: exponent of the ``1 / f**decay`` spectrum scaling (1 in Lucid; higher is smoother).
        init_std: standard deviation of the random initial spectrum.
        decorrelate: mix channels by ImageNet's colour correlation (False: plain RGB).
        generator: ``torch.Generator`` for the initial spectrum.
        device: where the parameters live.

    Shape:
        render() -> (batch, 3, height, width) in [0, 1].
    """

    size_multiple = 1
    bytes_per_pixel = 232  # peak memory added per pixel (measured: see clipforge.memory)
    option_rules = {"decay": {"min": 0, "max": 10}, "init_std": {"min": 0, "max": 1e3}}

    def __init__(self, width: int, height: int, *, batch: int = 1, decay: float = 1.0,
                 init_std: float = 0.01, decorrelate: bool = True,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.width, self.height = width, height
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        freqs = (fx * fx + fy * fy).sqrt()
        scale = 1.0 / freqs.clamp(min=1.0 / max(width, height)) ** decay
        self.register_buffer("scale", scale.to(device), persistent=False)
        mix = _COLOR_CORRELATION_SQRT / _COLOR_CORRELATION_SQRT.norm(dim=0).max()
        self.register_buffer("mix", (mix if decorrelate else torch.eye(3)).to(device),
                             persistent=False)
        shape = (batch, 3, height, width // 2 + 1, 2)
        self.spectrum = nn.Parameter(randn(shape, generator, device) * init_std)

    def _to_logits(self) -> Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        x = torch.fft.irfft2(spec, s=(self.height, self.width), norm="ortho") / 4.0
        return torch.einsum("ij,bjhw->bihw", self.mix, x)

    def render(self) -> Tensor:
        """Inverse FFT, colour mixing and a sigmoid.

        Shape:
            () -> (batch, 3, height, width) in (0, 1).
        """
        return torch.sigmoid(self._to_logits())

    forward = render

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Set the spectrum so that :meth:`render` reproduces ``image`` (resized) exactly.

        Args:
            image: the picture to start from; resized to this generator's size.

        Shape:
            image: (1 or B, 3, H, W) in [0, 1] (clamped to [1e-3, 1 - 1e-3] for the logit).
        """
        target = fit_image(image, self.height, self.width, self.spectrum)
        logits = torch.logit(target.clamp(1e-3, 1 - 1e-3))
        x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.mix), logits) * 4.0
        spec = torch.fft.rfft2(x, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spec).expand_as(self.spectrum))
