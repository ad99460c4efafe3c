"""The choices the paper leaves open (arelbo.core.open_choices) are data with one home, and each
alternative is a real switch that does what it says and nothing else."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from torch import nn

from arelbo.core import open_choices
from arelbo.core.config import load_schema
from arelbo.core.layout import REPO_ROOT
from arelbo.models.nets import BATCHNORMS, build_net
from arelbo.models.training import Batches, run_epoch
from arelbo.stages.train import TrainSpec

LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _net(model="vae", seed=0, **choices):
    torch.manual_seed(seed)
    return build_net(model, "mnist", **choices)


# ---------------------------------------------------------------------------- one home


def test_every_choice_names_the_papers_words_a_default_a_reason_and_its_alternatives():
    assert len({c.id for c in open_choices.OPEN_CHOICES}) == len(open_choices.OPEN_CHOICES)
    for choice in open_choices.OPEN_CHOICES:
        assert choice.paper and choice.why and choice.key, choice.id
        assert choice.paper == "silent" or choice.paper.startswith(("silent (", "stated:", "Section")), choice.id
        assert choice.default in choice.alternatives, choice.id


def test_the_config_and_the_schema_take_the_switches_and_defaults_from_the_list():
    paper = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    assert paper["choices"] == dict(open_choices.DEFAULTS)  # config.yaml holds the defaults, unchanged
    schema = load_schema()["properties"]["choices"]
    assert set(schema["properties"]) == set(open_choices.SWITCHES) == set(schema["required"])
    for name, switch in schema["properties"].items():
        if "enum" in switch:
            assert switch["enum"] == list(open_choices.SWITCHES[name].alternatives)


def test_design_md_lists_the_open_choices_generated_from_the_list():
    from arelbo.core import config_docs

    text = config_docs.DESIGN.read_text()
    assert text == config_docs.design_with_open_choices(text), (
        f"docs/design.md's open choices are out of date: regenerate them with `{config_docs.REGENERATE}`"
    )
    for choice in open_choices.OPEN_CHOICES:
        assert f"| {choice.id} | `{choice.key}` |" in text


def test_a_choice_outside_its_alternatives_is_refused_by_the_schema(tmp_path):
    from arelbo.core.config import ConfigError, validate_dict

    paper = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    paper["choices"]["init"] = "xavier"
    with pytest.raises(ConfigError, match="choices.*init|init.*choices"):
        validate_dict(paper)


def test_only_the_trainings_depend_on_the_choices():
    """A choice re-runs the trainings (and what reads them), never the FID reference or the data."""
    rules = {p.stem: p.read_text() for p in (REPO_ROOT / "workflow" / "rules").glob("*.smk")}
    assert '"choices"' in rules["train"]
    assert all('"choices"' not in text for name, text in rules.items() if name != "train")


# ---------------------------------------------------------------------------- data


def _pixels(n=10):
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    images[:, :, 0] = 0  # exact-zero background rows
    return images


def test_dequantized_images_lie_in_their_pixels_bins_and_have_no_exact_zeros():
    images = _pixels()
    unit = list(Batches(images, 4).epoch(torch.Generator().manual_seed(1)))
    noisy = list(Batches(images, 4, dequantize=True).epoch(torch.Generator().manual_seed(1)))
    for u, d in zip(unit, noisy):
        pixels = torch.round(u * 255)  # the same images in the same order
        assert torch.all(d >= pixels / 256) and torch.all(d < (pixels + 1) / 256)
        assert bool((d > 0).all()) and bool((u == 0).any())


def test_a_resumed_pass_draws_the_same_dequantized_batches_as_an_uninterrupted_one():
    batches = Batches(_pixels(), 3, dequantize=True)
    whole = list(batches.epoch(torch.Generator().manual_seed(5)))
    tail = list(batches.epoch(torch.Generator().manual_seed(5), first_step=2))
    assert len(tail) == len(whole) - 2
    assert all(torch.equal(a, b) for a, b in zip(whole[2:], tail))


def test_validation_noise_repeats_under_the_validation_seed():
    batches = Batches(_pixels(), 4, dequantize=True)
    torch.manual_seed(7)
    first = list(batches.epoch(None))
    torch.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(first, batches.epoch(None)))


def test_the_unit_choice_draws_nothing_from_the_generator():
    g = torch.Generator().manual_seed(1)
    list(Batches(_pixels(), 4).epoch(g))
    reference = torch.Generator().manual_seed(1)
    torch.randperm(10, generator=reference)
    assert torch.equal(g.get_state(), reference.get_state())


# ---------------------------------------------------------------------------- networks


def test_the_pytorch_defaults_build_the_same_network_as_before_the_switches():
    for model in ("vae", "diag_d_trainable", "iso_d_trainable"):
        default, explicit = _net(model), _net(model, output="sigmoid", init="pytorch", batchnorm="pytorch")
        for (name, a), b in zip(default.state_dict().items(), explicit.state_dict().values()):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("init", ["keras", "normal002"])
def test_an_initialisation_choice_sets_every_layer_and_keeps_the_variance_outputs_at_zero(init):
    net = _net("diag_d_trainable", init=init)
    for name, layer in net.named_modules():
        if not isinstance(layer, LAYERS):
            continue
        weight = layer.weight.detach()
        if name == "output":
            weight = weight[:, :1]  # the variance channels start at 0 whatever the init
            assert torch.count_nonzero(layer.weight[:, 1:]) == 0 and torch.count_nonzero(layer.bias) == 0
        assert torch.count_nonzero(layer.bias) == 0, name
        if init == "keras":
            receptive = weight[0, 0].numel()
            fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert float(weight.abs().max()) <= bound, name
            if weight.numel() > 1000:
                assert float(weight.std()) == pytest.approx(bound / math.sqrt(3.0), rel=0.1), name
        elif weight.numel() > 1000:
            assert float(weight.std()) == pytest.approx(0.02, rel=0.1) and abs(float(weight.mean())) < 2e-3, name
    iso_d = _net("iso_d_trainable", init=init)
    assert torch.count_nonzero(iso_d.x_logvar_head[-1].weight) == 0


def test_keras_batchnorm_sets_momentum_and_epsilon_and_updates_the_running_mean_by_them():
    net = _net("vae", batchnorm="keras")
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all((m.momentum, m.eps) == BATCHNORMS["keras"] == (0.01, 1e-3) for m in norms)
    assert all((m.momentum, m.eps) == (0.1, 1e-5) for m in _net("vae").modules() if isinstance(m, nn.BatchNorm1d))
    first = net.encoder[6]  # BatchNorm1d(1024) after the encoder's Linear
    seen = {}
    first.register_forward_hook(lambda m, inputs, out: seen.setdefault("x", inputs[0].detach()))
    net.train()(torch.rand(8, 1, 28, 28))
    assert torch.allclose(first.running_mean, 0.01 * seen["x"].mean(0), atol=1e-7)


def test_a_linear_output_is_the_sigmoids_argument():
    sigmoid, linear = _net("vae", output="sigmoid").eval(), _net("vae", output="linear").eval()
    z = torch.randn(4, 16)
    mean_sigmoid, _ = sigmoid.decode(z)
    mean_linear, _ = linear.decode(z)
    assert torch.allclose(torch.sigmoid(mean_linear), mean_sigmoid, atol=1e-6)
    assert bool((mean_linear < 0).any())  # unbounded: not squashed into [0, 1]


# ---------------------------------------------------------------------------- optimiser and schedule


def test_adams_epsilon_is_the_choice():
    params = [nn.Parameter(torch.zeros(2))]
    spec = TrainSpec("vae", "mnist", 0, lr=1e-3, epochs=1, batch_size=4, adam_epsilon=1e-7)
    assert spec.optimizer(params).defaults["eps"] == 1e-7
    assert TrainSpec("vae", "mnist", 0, lr=1e-3, epochs=1, batch_size=4).optimizer(params).defaults["eps"] == 1e-8


def test_the_warm_up_rises_linearly_to_the_learning_rate_and_then_leaves_it_alone():
    spec = TrainSpec("vae", "mnist", 0, lr=1e-3, epochs=4, batch_size=4, warmup_epochs=2)
    first, second = spec.warmup_lr(1, 5), spec.warmup_lr(2, 5)
    steps = [first(s) for s in range(5)] + [second(s) for s in range(5)]
    assert steps == pytest.approx([1e-3 * k / 10 for k in range(1, 11)])
    assert spec.warmup_lr(3, 5) is None and not spec.warming_up(3)
    assert TrainSpec("vae", "mnist", 0, lr=1e-3, epochs=4, batch_size=4).warmup_lr(1, 5) is None


def test_run_epoch_applies_the_step_learning_rate_before_each_update():
    def loss_fn(net, x):
        loss = (net(x.flatten(1)) ** 2).mean()
        return loss, {}

    images = (torch.rand(8, 1, 2, 2) * 255).to(torch.uint8)
    for lr_at_step, moves in ((lambda step: 0.0, False), (None, True)):
        torch.manual_seed(0)
        net = nn.Linear(4, 1)
        before = net.weight.detach().clone()
        optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
        run_epoch(net, Batches(images, 4), loss_fn, optimizer=optimizer, lr_at_step=lr_at_step)
        assert (not torch.equal(before, net.weight)) is moves


# ---------------------------------------------------------------------------- through a training


@pytest.mark.slow
def test_a_configs_choices_reach_the_training_and_the_model_file(tmp_path, ci_config):
    """`choices:` as a user sets it in an overlay: the training runs under every alternative, model.pt
    records them, and the evaluation rebuilds the network it trained."""
    from arelbo.core.config import deep_merge, from_dict
    from arelbo.stages.train import load_trained, train_model

    overlay = {
        "choices": {
            "data": "dequantized",
            "mnist_output": "linear",
            "init": "keras",
            "batchnorm": "keras",
            "adam_epsilon": 1e-7,
            "lr_warmup_epochs": 1,
        },
        "train": {"mnist": {"epochs": 2}},
        "data": {"mnist": {"limit": {"train": 256, "val": 64}}},
    }
    cfg = from_dict(deep_merge(ci_config.raw, overlay), check_folders=False)
    model_file = train_model(cfg, "mnist", "diag_d_arelbo", 0, tmp_path, progress=False)
    meta = torch.load(model_file, weights_only=True)
    assert (meta["spec"]["data"], meta["spec"]["adam_epsilon"], meta["spec"]["warmup_epochs"]) == (
        "dequantized",
        1e-7,
        1,
    )
    assert {k: meta["net_config"][k] for k in ("output", "init", "batchnorm")} == {
        "output": "linear",
        "init": "keras",
        "batchnorm": "keras",
    }
    net, _ = load_trained(model_file, torch.device("cpu"))
    assert isinstance(net.mean_activation, nn.Identity)
    assert all(m.momentum == 0.01 for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
