"""The choices the paper leaves open that the reproduction had to fix, as data: one entry each, with the
paper's words (quoted, or "silent"), arelbo's default and why, the alternatives the code implements,
and the config key that sets it. The robustness study varies these keys; docs/design.md, "Open
choices", is generated from this list (`arelbo.core.config_docs`), and the config schema's `choices`
block takes its enums and defaults from here.

Every alternative named here is a real switch: `tests/test_open_choices.py` checks that each does what
it says and nothing else. Torch-free: the Snakefile reads it at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arelbo.core.registry import AR_EPS


@dataclass(frozen=True)
class OpenChoice:
    id: str
    key: str  # the config key that sets it (dotted; {model}/{dataset} where it is per model)
    paper: str  # the paper's words, quoted, or "silent"
    default: Any
    why: str  # why arelbo's default is what it is
    alternatives: Mapping[Any, str]  # value -> what it does (the default included)

    @property
    def switch(self) -> str | None:
        """The key under the config's `choices:` block, or None where another block holds it."""
        return self.key.removeprefix("choices.") if self.key.startswith("choices.") else None


OPEN_CHOICES: tuple[OpenChoice, ...] = (
    OpenChoice(
        id="data",
        key="choices.data",
        paper="silent (Appendix J ends MNIST's decoder in a sigmoid: pixels in [0, 1])",
        default="unit",
        why=(
            "pixels/255, as torchvision's ToTensor and pytorch-fid read images: MNIST's background is exact "
            "zeros, which the per-pixel logs of Diag-D's objective treat very differently from small values"
        ),
        alternatives={
            "unit": "training and validation images are pixel/255 in [0, 1], with exact zeros",
            "dequantized": (
                "training and validation images are (pixel + u)/256, u ~ U[0, 1) drawn afresh per minibatch "
                "from the training's seed; test images, MSE and FID are unchanged"
            ),
        },
    ),
    OpenChoice(
        id="log_epsilon",
        key="hparams.{model}.{dataset}.eps",
        paper='Section 4.2: "we suggest adding a small constant, e.g., 10-6, before taking the logarithm"',
        default=AR_EPS,
        why="the paper's example value, for every AR-ELBO model but Iso-I (whose batch mean is never 0)",
        alternatives={AR_EPS: "the paper's example", "any number >= 0": "ε of that model's AR-ELBO"},
    ),
    OpenChoice(
        id="mnist_output",
        key="choices.mnist_output",
        paper='stated: Appendix J, MNIST decoder "→ ConvT1 → Sigmoid"',
        default="sigmoid",
        why="the paper's text; the alternative asks whether the sigmoid's saturation drives a collapse",
        alternatives={
            "sigmoid": "the mean is sigmoid(ConvT1)",
            "linear": "the mean is ConvT1's output unbounded (images are clamped to [0, 1] only when written)",
        },
    ),
    OpenChoice(
        id="init",
        key="choices.init",
        paper="silent",
        default="pytorch",
        why="the framework the paper names for FID (PyTorch), and the one arelbo runs in",
        alternatives={
            "pytorch": "PyTorch's defaults: Kaiming-uniform(a=√5) weights, uniform biases",
            "keras": "Keras' defaults: Glorot-uniform weights, zero biases (the baselines' public code is Keras)",
            "normal002": "weights N(0, 0.02), zero biases",
        },
    ),
    OpenChoice(
        id="batchnorm",
        key="choices.batchnorm",
        paper="silent (Appendix J places BatchNorm, not its settings)",
        default="pytorch",
        why="PyTorch's defaults, the framework arelbo runs in",
        alternatives={
            "pytorch": "running-average momentum 0.1 (PyTorch's convention), ε 1e-5",
            "keras": "Keras' momentum 0.99 (0.01 in PyTorch's convention), ε 1e-3",
        },
    ),
    OpenChoice(
        id="adam_epsilon",
        key="choices.adam_epsilon",
        paper='silent ("Adam optimizer with a learning rate of 10-3")',
        default=1e-8,
        why="PyTorch's default",
        alternatives={1e-8: "PyTorch's default", 1e-7: "Keras' default", "any number > 0": "Adam's ε"},
    ),
    OpenChoice(
        id="learning_rate",
        key="train.{dataset}.lr",
        paper='stated: "The learning rates are 0.001 for MNIST and 0.0002 for CelebA" (Appendix J)',
        default="the paper's",
        why="the paper's text; the study scales it to ask whether the result depends on the step size",
        alternatives={
            "the paper's": "0.001 for MNIST, 0.0002 for CelebA (config/config.yaml)",
            "any number > 0": "Adam's initial learning rate",
        },
    ),
    OpenChoice(
        id="lr_warmup",
        key="choices.lr_warmup_epochs",
        paper='Section 4.1 recommends "learning rate scheduling"; Appendix J names none',
        default=0,
        why="Appendix J's protocol names no warm-up",
        alternatives={
            0: "no warm-up",
            "N > 0": "the learning rate rises linearly from 0 to its value over the first N epochs, step by step",
        },
    ),
)

BY_ID: Mapping[str, OpenChoice] = {choice.id: choice for choice in OPEN_CHOICES}
# The `choices:` block of a config: its keys and the paper-protocol defaults
SWITCHES: Mapping[str, OpenChoice] = {c.switch: c for c in OPEN_CHOICES if c.switch is not None}
DEFAULTS: Mapping[str, Any] = {name: choice.default for name, choice in SWITCHES.items()}


def enum(name: str) -> list[str] | None:
    """The values a `choices.<name>` switch takes, where they are a closed list (else None)."""
    values = list(SWITCHES[name].alternatives)
    return values if all(isinstance(v, str) for v in values) else None
