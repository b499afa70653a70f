"""Networks: shapes, probabilities, odd sizes, batch-norm folding, MSD-net structure, sizes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from etem.tracker.errors import ConfigError
from etem.train.networks import (ARCHITECTURES, FusionNet, MSDNet, UNet, build_network,
                                 count_parameters, fold_batchnorm)

# Small versions of each architecture, quick on CPU.
SMALL = {
    "fusionnet": {"width": 4, "depth": 3},
    "unet": {"width": 4, "depth": 3},
    "msdnet": {"depth": 12, "width": 2},
}


def small(arch: str, n_inputs: int = 1, n_classes: int = 2, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_network(arch, n_inputs=n_inputs, n_classes=n_classes, **{**SMALL[arch], **kwargs})


def randomize_batchnorm(model: nn.Module) -> None:
    """Give every batch norm non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_inputs, n_classes", [(1, 2), (3, 4)])
def test_output_is_probability_map(arch, n_inputs, n_classes):
    model = small(arch, n_inputs, n_classes).eval()
    x = torch.randn(2, n_inputs, 32, 40)
    with torch.no_grad():
        p = model(x)
    assert p.shape == (2, n_classes, 32, 40)
    assert p.dtype == torch.float32
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, 32, 40))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_logits_option(arch):
    model = small(arch, 2, 3).eval()
    x = torch.randn(1, 2, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(model(x, logits=True), dim=1), model(x))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("size", [(37, 53), (8, 8), (5, 3), (64, 17)])
def test_odd_sizes_keep_their_shape(arch, size):
    model = small(arch).eval()
    with torch.no_grad():
        p = model(torch.randn(1, 1, *size))
    assert p.shape == (1, 2, *size)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(1, *size))


@pytest.mark.parametrize("arch", ["fusionnet", "unet"])
def test_odd_size_is_padded_by_replication_and_cropped(arch):
    model = small(arch).eval()
    x = torch.randn(1, 1, 37, 45)
    padded = nn.functional.pad(x, (0, 3, 0, 3), mode="replicate")  # up to 40 x 48
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :37, :45])


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_trains_one_step(arch):
    model = small(arch, 2, 3).train()
    x, target = torch.randn(2, 2, 16, 24), torch.randint(0, 3, (2, 16, 24))
    loss = nn.functional.cross_entropy(model(x, logits=True), target)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fold_batchnorm_is_numerically_equal(arch):
    model = small(arch, 3, 4)
    randomize_batchnorm(model)
    model.eval()
    folded = fold_batchnorm(model)
    assert model.training is False and folded.training is False
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 29, 35)
    with torch.no_grad():
        torch.testing.assert_close(folded(x, logits=True), model(x, logits=True), atol=1e-4, rtol=1e-4)
    # the original keeps its batch norms
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) or arch == "msdnet"


def test_fold_batchnorm_returns_eval_copy_of_training_model():
    model = small("fusionnet").train()
    folded = fold_batchnorm(model)
    assert model.training and not folded.training
    assert folded is not model


def test_fold_batchnorm_after_training_statistics():
    """Running statistics gathered in training mode fold exactly too."""
    model = small("fusionnet", 1, 2).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 1, 16, 16) * 3 + 1)
    model.eval()
    x = torch.randn(1, 1, 16, 16) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), atol=1e-4, rtol=1e-4)


def test_msdnet_layers_see_all_previous_maps():
    model = MSDNet(3, 4, depth=100, width=1)
    assert len(model.layers) == 100
    for i, layer in enumerate(model.layers):
        assert layer.in_channels == 3 + i
        assert layer.out_channels == 1
        assert layer.kernel_size == (3, 3)
        assert layer.dilation == (i % 10 + 1,) * 2
    assert model.head.in_channels == 3 + 100
    assert model.head.kernel_size == (1, 1)
    assert model.receptive_field == 1 + 2 * 10 * sum(range(1, 11))
    print(f"\nMSDNet(depth=100, width=1): {count_parameters(model):,} parameters")


def _measured_receptive_field(model: MSDNet, size: int) -> int:
    """Width of the input region that influences the centre output pixel."""
    with torch.no_grad():  # all weights positive: every ReLU active, no cancellation
        for p in model.parameters():
            p.copy_(torch.full_like(p, 0.01))
    x = torch.ones(1, model.n_inputs, size, size, requires_grad=True)
    model(x, logits=True)[0, 0, size // 2, size // 2].backward()
    cols = (x.grad[0].abs().sum(dim=(0, 1)) > 0).nonzero()
    return int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("depth", [1, 3, 10])
def test_msdnet_receptive_field_grows_with_depth(depth):
    model = MSDNet(1, 2, depth=depth)
    assert _measured_receptive_field(model, 128) == model.receptive_field == 1 + 2 * sum(range(1, depth + 1))


def _msdnet_reference(model: MSDNet, x: torch.Tensor) -> torch.Tensor:
    """The MSD-net as written in Pelt & Sethian: each layer a dilated convolution over the
    concatenation of all maps before it."""
    maps = x
    for layer in model.layers:
        maps = torch.cat([maps, torch.relu(layer(maps))], dim=1)
    return model.head(maps)


def _grads(model: MSDNet, x: torch.Tensor, logits: torch.Tensor) -> list[torch.Tensor]:
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)
    return torch.autograd.grad((logits * weights).sum(), [x, *model.parameters()])


# Dilations larger than the image (5 > 4 rows) leave taps that read only padding.
@pytest.mark.parametrize("path", ["gemm", "checkpointed"])
@pytest.mark.parametrize("width, dilations, shape", [(1, (1, 2, 3), (2, 2, 11, 9)),
                                                     (2, (1, 3, 5), (3, 3, 4, 13))])
def test_msdnet_training_paths_match_the_reference(path, width, dilations, shape):
    torch.manual_seed(3)
    model = MSDNet(shape[1], 3, depth=7, width=width, dilations=dilations).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    expected = _msdnet_reference(model, x)
    logits = getattr(model, f"_logits_{path}")(x)
    torch.testing.assert_close(logits, expected)
    for got, want in zip(_grads(model, x, logits), _grads(model, x, expected), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("path", ["gemm", "buffered"])
def test_msdnet_inference_paths_match_the_reference(path):
    model = small("msdnet", 2, 3)
    x = torch.randn(2, 2, 20, 17)
    with torch.no_grad():
        expected = _msdnet_reference(model, x)
        torch.testing.assert_close(getattr(model, f"_logits_{path}")(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x), torch.softmax(expected, dim=1), atol=1e-5, rtol=1e-5)


def _fusionnet_parameters(n_inputs: int, n_classes: int, width: int, depth: int) -> int:
    """Parameter count of the architecture as described in Madsen et al. §2.2."""
    def conv(c_in, c):  # 3x3 conv without bias + batch norm (scale, shift)
        return 9 * c_in * c + 2 * c

    def level(c_in, c):  # five convolutions
        return conv(c_in, c) + 4 * conv(c, c)

    chans = [width * 2**i for i in range(depth + 1)]
    total = level(n_inputs, chans[0]) + sum(level(chans[i - 1], chans[i]) for i in range(1, depth + 1))
    total += sum(4 * chans[i + 1] * chans[i] + 2 * chans[i] + level(chans[i], chans[i]) for i in range(depth))
    return total + width * n_classes + n_classes


@pytest.mark.parametrize("width", [16, 32])
def test_fusionnet_parameter_count(width):
    model = FusionNet(1, 2, width=width, depth=3)
    n = count_parameters(model)
    mb = n * 4 / 1e6
    print(f"\nFusionNet(width={width}, depth=3): {n:,} parameters, {mb:.2f} MB fp32")
    assert n == _fusionnet_parameters(1, 2, width, 3)
    # five convs per level, doubling per level: ~ 1.2 M parameters at width 16
    assert mb < {16: 5, 32: 20}[width]


def test_unet_and_msdnet_parameter_counts():
    for model in (UNet(1, 2, width=16), MSDNet(3, 4)):
        n = count_parameters(model)
        print(f"\n{type(model).__name__}: {n:,} parameters, {n * 4 / 1e6:.2f} MB fp32")
    assert count_parameters(MSDNet(3, 4)) < 100_000


def test_build_network_unknown_arch_lists_valid_ones():
    with pytest.raises(ConfigError, match="fusionnet.*msdnet.*unet"):
        build_network("resnet", n_inputs=1, n_classes=2)


def test_build_network_bad_arguments():
    with pytest.raises(ConfigError, match="FusionNet"):
        build_network("fusionnet", n_inputs=1, n_classes=2, dilations=[1, 2])


@pytest.mark.parametrize("kwargs", [{"n_inputs": 0, "n_classes": 2}, {"n_inputs": 1, "n_classes": 1},
                                    {"n_inputs": 1, "n_classes": 2, "width": 0},
                                    {"n_inputs": 1, "n_classes": 2, "unshuffle": 0}])
def test_bad_sizes_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        FusionNet(**kwargs)


def test_arch_args_rebuild_the_same_network():
    for arch in ARCHITECTURES:
        model = small(arch, 2, 3)
        again = build_network(model.arch, **model.arch_args)
        assert type(again) is type(model)
        assert {k: v.shape for k, v in again.state_dict().items()} == \
               {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("size", [(37, 53), (5, 3), (64, 17)])
def test_unshuffled_fusionnet_keeps_full_resolution(size):
    """With unshuffle=2 the top level works on 2x2 blocks of pixels (4x the channels at half the
    size), and the output is a probability map of the input's full size again."""
    model = small("fusionnet", 3, 4, unshuffle=2).eval()
    seen = []
    model.down[0].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        p = model(x)
    assert p.shape == (2, 4, *size)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, *size))
    padded = [-(-n // 16) * 16 for n in size]  # to a multiple of 2**depth * unshuffle
    assert seen == [(2, 12, padded[0] // 2, padded[1] // 2)]


def test_unshuffled_output_pixels_come_from_their_own_block_position():
    """pixel_shuffle puts head map c * 4 + 2 * dy + dx at pixel (2 * i + dy, 2 * j + dx) of class c:
    with every convolution zeroed, only the head's bias reaches the output."""
    model = FusionNet(1, 4, width=4, depth=0, unshuffle=2).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m is not model.head:
                m.weight.zero_()
        model.head.weight.zero_()
        model.head.bias.copy_(torch.zeros(16))
    x = torch.randn(1, 1, 8, 10)
    with torch.no_grad():
        model.head.bias[1 * 4 + 3] = 5.0  # class 1 at (dy, dx) = (1, 1) of every block
        scores = model(x, logits=True)
    hot = scores[0, 1] > 1
    assert hot[1::2, 1::2].all() and int(hot.sum()) == 4 * 5


def test_unshuffle_is_in_arch_args_only_when_used():
    assert "unshuffle" not in FusionNet(1, 2, width=4, depth=2).arch_args
    model = FusionNet(1, 2, width=4, depth=2, unshuffle=2)
    assert model.arch_args["unshuffle"] == 2
    again = build_network("fusionnet", **model.arch_args)
    assert again.unshuffle == 2 and again.head.out_channels == 8


def test_fold_batchnorm_of_unshuffled_fusionnet():
    model = small("fusionnet", 1, 2, unshuffle=2)
    randomize_batchnorm(model)
    model.eval()
    x = torch.randn(2, 1, 29, 35)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), atol=1e-4, rtol=1e-4)


def test_msdnet_channels_last_buffer_matches():
    model = small("msdnet", 3, 2).eval()
    nhwc = fold_batchnorm(model).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(nhwc._logits_buffered(x.contiguous(memory_format=torch.channels_last)),
                                   _msdnet_reference(model, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(nhwc(x.contiguous(memory_format=torch.channels_last)), model(x))
