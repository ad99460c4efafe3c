"""Encoders and decoders: Appendix J (Section 5, Tables 3-4) and Appendix D (Section 3, Tables 1, 5).

A network is described by a small frozen `NetConfig` (what to build) and built by `VAE` (how);
which config each model needs lives in `arelbo.core.registry.MODELS`, see `build_net`.
Convolutions are 5x5, stride 2, padding 2 (transposed ones with output_padding 1, which doubles
the size exactly), with PyTorch's default bias and initialisation everywhere, as docs/design.md §3 lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from arelbo.core import registry
from arelbo.core.registry import MODELS, ModelEntry

DECODER_VARIANCES = (None, *registry.DECODER_VARIANCES)


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 5, stride=2, padding=2)


def _deconv(c_in: int, c_out: int, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=stride, padding=2, output_padding=stride - 1)


# Each builder returns the trunk and its output width: features for the encoder head, channels
# of the last hidden map for the decoder (the final ConvT is built by `VAE`, since its channel
# count depends on the variance model).


def _mnist_encoder() -> tuple[nn.Module, int]:
    return nn.Sequential(
        _conv(1, 64),
        nn.ReLU(),
        _conv(64, 128),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 1024),
        nn.BatchNorm1d(1024),
        nn.ReLU(),
    ), 1024


def _mnist_decoder(latent_dim: int) -> tuple[nn.Module, int]:
    return nn.Sequential(
        nn.Linear(latent_dim, 1024),
        nn.BatchNorm1d(1024),
        nn.ReLU(),
        nn.Linear(1024, 128 * 7 * 7),
        nn.BatchNorm1d(128 * 7 * 7),
        nn.ReLU(),
        nn.Unflatten(1, (128, 7, 7)),
        _deconv(128, 64),
        nn.BatchNorm2d(64),
        nn.ReLU(),
    ), 64


def _celeba_encoder() -> tuple[nn.Module, int]:
    return nn.Sequential(
        _conv(3, 128),
        nn.ReLU(),
        _conv(128, 256),
        nn.BatchNorm2d(256),
        nn.ReLU(),
        _conv(256, 512),
        nn.BatchNorm2d(512),
        nn.ReLU(),
        _conv(512, 1024),
        nn.BatchNorm2d(1024),
        nn.ReLU(),
        nn.Flatten(),
    ), 1024 * 4 * 4


def _celeba_decoder(latent_dim: int) -> tuple[nn.Module, int]:
    # Paper: FC 8x8x1024 "size of (1024, 4, 4)" -- a typo: three stride-2 ConvTs must start at 8x8.
    return nn.Sequential(
        nn.Linear(latent_dim, 1024 * 8 * 8),
        nn.Unflatten(1, (1024, 8, 8)),
        _deconv(1024, 512),
        nn.ReLU(),
        _deconv(512, 256),
        nn.BatchNorm2d(256),
        nn.ReLU(),
        _deconv(256, 128),
        nn.BatchNorm2d(128),
        nn.ReLU(),
    ), 128


@dataclass(frozen=True)
class Architecture:
    image_shape: tuple[int, int, int]
    latent_dim: int
    encoder: Callable[[], tuple[nn.Module, int]]
    decoder: Callable[[int], tuple[nn.Module, int]]
    output_stride: int  # of the final ConvT
    mean_activation: type[nn.Module]  # applied to the mean only


ARCHITECTURES = {
    "mnist": Architecture((1, 28, 28), 16, _mnist_encoder, _mnist_decoder, 2, nn.Sigmoid),
    # No output activation for CelebA: images are clamped only when written out (docs/design.md §3).
    "celeba": Architecture((3, 64, 64), 64, _celeba_encoder, _celeba_decoder, 1, nn.Identity),
}


OUTPUTS = {"sigmoid": nn.Sigmoid, "linear": nn.Identity}
INITS = ("pytorch", "keras", "normal002")
# BatchNorm (momentum in PyTorch's convention: the weight of the new batch; Keras' 0.99 is 0.01 here, eps)
BATCHNORMS = {"pytorch": (0.1, 1e-5), "keras": (0.01, 1e-3)}


def initialise(module: nn.Module, init: str) -> None:
    """Re-initialise every Linear and (transposed) convolution of `module` by the `init` choice;
    "pytorch" leaves PyTorch's own initialisation (and the RNG stream) untouched."""
    if init == "pytorch":
        return
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            if init == "keras":
                nn.init.xavier_uniform_(layer.weight)  # Glorot-uniform: symmetric in fan-in and fan-out
            else:
                nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


@dataclass(frozen=True)
class NetConfig:
    dataset: str
    latent_dim: int
    stochastic: bool  # encoder head gives (mu, log sigma^2) rather than mu only
    decoder_variance: str | None  # None (no variance output) or one of Table 2's four models
    # Open choices (config `choices`, arelbo.core.open_choices): MNIST's mean activation, the layers'
    # initialisation and BatchNorm's settings; the defaults are arelbo's protocol
    output: str = "sigmoid"  # sigmoid | linear (MNIST; CelebA's mean has no activation either way)
    init: str = "pytorch"  # pytorch | keras | normal002
    batchnorm: str = "pytorch"  # pytorch | keras

    def __post_init__(self):
        if self.dataset not in ARCHITECTURES:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {sorted(ARCHITECTURES)}")
        if self.decoder_variance not in DECODER_VARIANCES:
            raise ValueError(f"unknown decoder_variance {self.decoder_variance!r}; known: {DECODER_VARIANCES}")
        for name, known in (("output", OUTPUTS), ("init", INITS), ("batchnorm", BATCHNORMS)):
            if getattr(self, name) not in known:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; known: {', '.join(known)}")


class Forward(NamedTuple):
    mu: Tensor  # N x d_z
    logvar: Tensor | None  # N x d_z, None for deterministic encoders
    z: Tensor  # N x d_z, the decoded latent (a sample, or mu)
    x_mean: Tensor  # N x C x H x W
    x_logvar: Tensor | None  # broadcasts against x_mean; None without a decoder variance


class VAE(nn.Module):
    """Encoder + decoder of Appendix J with the variance outputs a `NetConfig` asks for.

    x_logvar shapes: iso_i () scalar parameter, diag_i (C, H, W) parameter, iso_d (N, 1, 1, 1) from
    a head, diag_d (N, C, H, W) as extra output channels; all start at exactly 0 (sigma_x^2 = 1).
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        arch = ARCHITECTURES[config.dataset]
        self.image_shape, self.latent_dim = arch.image_shape, config.latent_dim
        channels = arch.image_shape[0]

        self.encoder, features = arch.encoder()
        self.head = nn.Linear(features, (2 if config.stochastic else 1) * config.latent_dim)
        self.decoder, hidden = arch.decoder(config.latent_dim)
        per_pixel = config.decoder_variance == "diag_d"
        self.output = _deconv(hidden, channels * (2 if per_pixel else 1), stride=arch.output_stride)
        activation = OUTPUTS[config.output] if arch.mean_activation is nn.Sigmoid else arch.mean_activation
        self.mean_activation = activation()
        initialise(self, config.init)  # before the variance outputs' zeros below, which every choice keeps
        momentum, eps = BATCHNORMS[config.batchnorm]
        for layer in self.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.momentum, layer.eps = momentum, eps

        self.x_logvar = None  # iso_i / diag_i: a parameter, independent of z
        self.x_logvar_head = None  # iso_d: one log sigma_x^2(z) per image
        if config.decoder_variance == "iso_i":
            self.x_logvar = nn.Parameter(torch.zeros(()))
        elif config.decoder_variance == "diag_i":
            self.x_logvar = nn.Parameter(torch.zeros(arch.image_shape))
        elif config.decoder_variance == "iso_d":
            # Read from the last hidden map (the features the mean's final ConvT sees, as Diag-D's
            # variance channels do), pooled over space since the variance is one number per image.
            self.x_logvar_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.x_logvar_head[-1].weight)
            nn.init.zeros_(self.x_logvar_head[-1].bias)
        elif per_pixel:
            with torch.no_grad():  # ConvTranspose2d weights are (in, out, k, k): out channels on dim 1
                self.output.weight[:, channels:].zero_()
                self.output.bias[channels:].zero_()

    # Precision policy (config train.<dataset>.precision): with `trunk_dtype` set (bf16), the encoder
    # and decoder trunks run under autocast; the encoder head (μ, log σ²), the final ConvT, the
    # variance parameters and heads, and every loss stay in FP32. The mean's last layer and the
    # losses must: AR-ELBO's logs add ε = 1e-6 to per-pixel squared residuals, far below bf16's
    # resolution (2⁻⁸ relative), and a bf16 variance head would quantise log σx².
    trunk_dtype: torch.dtype | None = None

    def _trunk(self, module: nn.Module, x: Tensor) -> Tensor:
        if self.trunk_dtype is None:
            return module(x)
        with torch.autocast(device_type=x.device.type, dtype=self.trunk_dtype):
            h = module(x)
        return h.float()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.head(self._trunk(self.encoder, x))
        if not self.config.stochastic:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self._trunk(self.decoder, z)
        out = self.output(h)
        channels = self.image_shape[0]
        if self.config.decoder_variance == "diag_d":
            return self.mean_activation(out[:, :channels]), out[:, channels:]
        if self.x_logvar_head is not None:
            return self.mean_activation(out), self.x_logvar_head(h).view(-1, 1, 1, 1)
        return self.mean_activation(out), self.x_logvar

    def forward(self, x: Tensor, sample: bool = True) -> Forward:
        mu, logvar = self.encode(x)
        z = mu
        if logvar is not None and sample:  # one reparameterised sample per image
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x_mean, x_logvar = self.decode(z)
        return Forward(mu, logvar, z, x_mean, x_logvar)

    def decoder_parameters(self, weights_only: bool = False) -> list[nn.Parameter]:
        """Everything on the decoder side (trunk, final ConvT, variance head/parameter); with
        `weights_only`, just the Linear/Conv kernels -- what a Keras `kernel_regularizer` (RAE)
        penalises: no biases, no BatchNorm affine parameters."""
        if not weights_only:
            return [p for name, p in self.named_parameters() if not name.startswith(("encoder.", "head."))]
        parts = [self.decoder, self.output] + ([self.x_logvar_head] if self.x_logvar_head is not None else [])
        return [
            m.weight
            for part in parts
            for m in part.modules()
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
        ]


def net_config(entry: ModelEntry, dataset: str) -> NetConfig:
    """What a registered model's network needs on `dataset`: its encoder kind and Σx head."""
    return NetConfig(dataset, ARCHITECTURES[dataset].latent_dim, entry.stochastic, entry.decoder_variance)


def build_net(model_id: str, dataset: str, **choices) -> VAE:
    """The network a model of docs/design.md §4 (or a plugin's) trains on `dataset` (d_z: mnist 16,
    celeba 64); `choices` (output, init, batchnorm: NetConfig's open choices) override the defaults."""
    if model_id not in MODELS:
        raise ValueError(f"unknown model {model_id!r}; known: {', '.join(MODELS)}")
    return VAE(dataclasses.replace(net_config(MODELS[model_id], dataset), **choices))


class AppendixDAutoencoder(nn.Module):
    """Section 3's MNIST net (Appendix D.1): 4x4 kernels, stride 2, padding 1, no BatchNorm.

    The encoder gives mu only: that study's posterior is N(mu, sigma_z^2 I) with one scalar
    sigma_z^2 owned by its training code, not by the net."""

    def __init__(self, latent_dim: int = 8):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 7 * 7, 1024),
            nn.ReLU(),
            nn.Linear(1024, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 1024),
            nn.ReLU(),
            nn.Linear(1024, 128 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (128, 7, 7)),
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, 2, 1),
            nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """The deterministic reconstruction mu_theta(mu_phi(x))."""
        return self.decode(self.encode(x))
