"""Segmentation networks that turn (focal series of) images into per-pixel class probabilities.

Three architectures, all mapping ``[B, n_inputs, H, W]`` to probabilities ``[B, n_classes, H, W]``
(channel 0 is the background class):

- :class:`FusionNet` — the residual U-Net of Madsen et al., Adv. Theory Simul. 2018 (§2.2).
- :class:`UNet` — a plain U-Net (two convolutions per level, concatenated skips), the baseline.
- :class:`MSDNet` — the mixed-scale dense network of Pelt & Sethian, PNAS 2018, used by
  Larsen et al. to tell column species apart.

Every network takes any ``H, W``: the encoder-decoder nets pad the input up to a multiple of
``2**depth`` and crop the output back. ``forward(x, logits=True)`` returns the pre-softmax
scores for training with ``cross_entropy``-type losses.

:func:`build_network` builds one by name (as a model card stores it) and :func:`fold_batchnorm`
returns an inference copy with every batch normalization folded into its convolution.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from etem.tracker.errors import ConfigError, choice_error

__all__ = ["FusionNet", "UNet", "MSDNet", "ARCHITECTURES", "build_network", "fold_batchnorm",
           "count_parameters"]


# ---------------------------------------------------------------------------------------------
# building blocks

def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution (no bias: the batch norm has one) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _up(c_in: int, c_out: int) -> nn.Sequential:
    """2x upsampling: 2x2 transposed convolution, stride 2 -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _ResidualBlock(nn.Module):
    """One FusionNet level: five 3x3 convolutions, a residual connection over the middle three."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.first = _conv_bn_relu(c_in, c_out)
        self.middle = nn.Sequential(*(_conv_bn_relu(c_out, c_out) for _ in range(3)))
        self.last = _conv_bn_relu(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        x = x + self.middle(x)
        return self.last(x)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right edges (replicating the border) up to a multiple of ``multiple``.

    Padding is applied unconditionally (possibly by zero pixels) so that traced and exported
    graphs do not specialize on the input size.
    """
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")


def _check_sizes(n_inputs: int, n_classes: int, **positive: int) -> None:
    if not isinstance(n_inputs, int) or n_inputs < 1:
        raise ConfigError(f"n_inputs must be a positive integer (one per focal image); got {n_inputs!r}.")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ConfigError("n_classes counts the background class too, so it must be an integer >= 2; "
                          f"got {n_classes!r}.")
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}.")


class _Network(nn.Module):
    """What the three architectures share: sizes, the arguments that rebuild them, the softmax."""

    arch: str = ""

    def __init__(self, n_inputs: int, n_classes: int):
        super().__init__()
        self.n_inputs = n_inputs
        self.n_classes = n_classes

    @property
    def arch_args(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this network with :func:`build_network` (JSON-able)."""
        raise NotImplementedError(f"{type(self).__name__} must define arch_args")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define _logits")

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """Class probabilities ``[B, n_classes, H, W]`` of a batch ``[B, n_inputs, H, W]``.

        With ``logits=True`` the pre-softmax scores are returned instead (for training).
        """
        scores = self._logits(x)
        return scores if logits else torch.softmax(scores, dim=1)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.arch_args.items())


# ---------------------------------------------------------------------------------------------
# architectures

class FusionNet(_Network):
    """The residual U-Net of Madsen et al. (2018), after FusionNet (Quan et al. 2016).

    At every level five 3x3 convolutions (each with batch norm and ReLU) with a residual connection
    over the middle three; max-pooling on the way down, 2x2 transposed convolutions on the way up,
    and additive long skip connections between the levels; a final 1x1 convolution and a softmax
    over the classes. Level ``l`` has ``width * 2**l`` feature maps.

    Parameters
    ----------
    n_inputs
        Input channels: the number of focal images per sample.
    n_classes
        Output classes ``K`` including the background (channel 0).
    width
        Feature maps at the top (full resolution) level.
    depth
        Levels below the top; the lowest works at ``1 / 2**depth`` of the input size
        (1/8 for the default 3).
    unshuffle
        Space-to-depth factor ``s`` of the input (``pixel_unshuffle``): the top level works at
        ``1 / s`` of the input size on ``s * s`` times the input channels, with no pixel
        discarded, and the head's ``s * s * n_classes`` maps are put back at full resolution
        (``pixel_shuffle``). 1 (the default) is Madsen's network; 2 costs about a third of
        its work per pixel (the cheap network for CPUs).
    """

    arch = "fusionnet"

    def __init__(self, n_inputs: int, n_classes: int, width: int = 32, depth: int = 3, unshuffle: int = 1):
        super().__init__(n_inputs, n_classes)
        _check_sizes(n_inputs, n_classes, width=width, unshuffle=unshuffle)
        if not isinstance(depth, int) or depth < 0:
            raise ConfigError(f"depth must be a non-negative integer; got {depth!r}.")
        self.width, self.depth, self.unshuffle = width, depth, unshuffle
        s2 = unshuffle * unshuffle
        chans = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(_ResidualBlock(c_in, c)
                                  for c_in, c in zip([n_inputs * s2, *chans[:-2]], chans[:-1]))
        self.bottom = _ResidualBlock(chans[-2] if depth else n_inputs * s2, chans[-1])
        self.upsample = nn.ModuleList(_up(chans[i + 1], chans[i]) for i in range(depth))
        self.up = nn.ModuleList(_ResidualBlock(c, c) for c in chans[:-1])
        self.head = nn.Conv2d(width, n_classes * s2, kernel_size=1)

    @property
    def arch_args(self) -> dict[str, Any]:
        args = {"n_inputs": self.n_inputs, "n_classes": self.n_classes, "width": self.width, "depth": self.depth}
        if self.unshuffle != 1:  # cards of full-resolution networks stay as they were
            args["unshuffle"] = self.unshuffle
        return args

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, 2**self.depth * self.unshuffle)
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for level in reversed(range(self.depth)):
            x = self.up[level](self.upsample[level](x) + skips[level])
        x = self.head(x)
        if self.unshuffle > 1:
            x = F.pixel_shuffle(x, self.unshuffle)
        return x[..., :h, :w]


class UNet(_Network):
    """A plain U-Net (Ronneberger et al. 2015) with batch norm: the baseline of Larsen et al.

    Two 3x3 convolutions (batch norm, ReLU) per level, max-pooling down, 2x2 transposed
    convolutions up, long skips by concatenation, a final 1x1 convolution and softmax.
    Level ``l`` has ``width * 2**l`` feature maps; parameters as for :class:`FusionNet`.
    """

    arch = "unet"

    def __init__(self, n_inputs: int, n_classes: int, width: int = 32, depth: int = 3):
        super().__init__(n_inputs, n_classes)
        _check_sizes(n_inputs, n_classes, width=width)
        if not isinstance(depth, int) or depth < 0:
            raise ConfigError(f"depth must be a non-negative integer; got {depth!r}.")
        self.width, self.depth = width, depth
        chans = [width * 2**level for level in range(depth + 1)]

        def block(c_in: int, c: int) -> nn.Sequential:
            return nn.Sequential(_conv_bn_relu(c_in, c), _conv_bn_relu(c, c))

        self.down = nn.ModuleList(block(c_in, c) for c_in, c in zip([n_inputs, *chans[:-2]], chans[:-1]))
        self.bottom = block(chans[-2] if depth else n_inputs, chans[-1])
        self.upsample = nn.ModuleList(_up(chans[i + 1], chans[i]) for i in range(depth))
        self.up = nn.ModuleList(block(2 * c, c) for c in chans[:-1])
        self.head = nn.Conv2d(width, n_classes, kernel_size=1)

    @property
    def arch_args(self) -> dict[str, Any]:
        return {"n_inputs": self.n_inputs, "n_classes": self.n_classes,
                "width": self.width, "depth": self.depth}

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, 2**self.depth)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for level in reversed(range(self.depth)):
            x = self.up[level](torch.cat([self.upsample[level](x), skips[level]], dim=1))
        return self.head(x)[..., :h, :w]


class _MSDTrunk(torch.autograd.Function):
    """All dilated layers of an MSD-net, with gradients, in one buffer and plain matrix products.

    The maps are kept channel-first, ``[maps, B, H, W]``, so that the maps so far are one matrix
    ``[C, B * H * W]``. Layer ``i`` (``C`` maps so far, dilation ``d``) computes its nine taps
    for all ``C`` maps in one matrix product, ``Z = W @ maps`` (``W``: ``[9 * width, C]``), then
    adds the nine ``Z`` planes shifted by ``d``: the 3x3 dilated convolution, written where a CPU
    is fast rather than as a convolution with one output map (the scheme of
    :mod:`etem.train.msd_fast`, without its grouping of layers). The backward pass walks the
    layers in reverse, adding each layer's input gradient into one gradient buffer in place.
    Memory is the buffer and its gradient, linear in ``depth``. Arguments: the input ``[B,
    n_inputs, H, W]``, the dilations, then each layer's weight and bias; returns the maps
    ``[n_inputs + depth * width, B, H, W]``.
    """

    @staticmethod
    def forward(ctx, x, dilations, *params):
        weights, biases = params[0::2], params[1::2]
        b, n_in, h, w = x.shape
        width = weights[0].shape[0] if weights else 0
        buf = x.new_empty((n_in + len(weights) * width, b, h, w))
        buf[:n_in] = x.transpose(0, 1)
        c = n_in
        for wt, bias, d in zip(weights, biases, dilations):
            z = (_taps(wt) @ buf[:c].view(c, -1)).view(3, 3, width, b, h, w)
            out = buf[c:c + width]
            torch.add(z[1, 1], bias.view(-1, 1, 1, 1), out=out)
            _add_shifted(out, z, d)
            out.relu_()
            c += width
        ctx.dilations = dilations
        ctx.save_for_backward(buf, *weights)
        return buf

    @staticmethod
    def backward(ctx, g_buf):
        buf, *weights = ctx.saved_tensors
        total, b, h, w = buf.shape
        width = weights[0].shape[0] if weights else 0
        g = g_buf.clone(memory_format=torch.contiguous_format)
        grads: list[torch.Tensor] = []
        c = total
        for wt, d in zip(reversed(weights), reversed(ctx.dilations)):
            c -= width
            gy = g[c:c + width] * (buf[c:c + width] > 0)  # through the ReLU
            gz = _shifted_adjoint(gy, d).view(9 * width, -1)
            g_w = gz @ buf[:c].view(c, -1).t()  # [9 * width, C]
            g[:c].view(c, -1).addmm_(_taps(wt).t(), gz)
            grads += [gy.sum((1, 2, 3)), g_w.view(3, 3, width, c).permute(2, 3, 0, 1)]
        n_in = total - len(weights) * width
        return (g[:n_in].transpose(0, 1), None, *reversed(grads))


def _taps(weight: torch.Tensor) -> torch.Tensor:
    """A ``[width, C, 3, 3]`` kernel as ``[9 * width, C]``, rows ordered (ky, kx, map)."""
    return weight.permute(2, 3, 0, 1).reshape(9 * weight.shape[0], weight.shape[1])


def _shifts(h: int, w: int, d: int):
    """The off-centre taps of a 3x3 stencil with dilation ``d`` on an ``h x w`` image: ``(ky,
    kx, target, source)``, where ``out[target] += taps[ky, kx][source]`` is that tap's share
    (pixels shifted in from outside the image are zero, so each tap adds to a sub-rectangle)."""
    for ky in range(3):
        dy = (ky - 1) * d
        if abs(dy) >= h:
            continue
        for kx in range(3):
            dx = (kx - 1) * d
            if (ky, kx) == (1, 1) or abs(dx) >= w:
                continue
            yield (ky, kx, (..., slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))),
                   (..., slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx))))


def _add_shifted(out: torch.Tensor, taps: torch.Tensor, d: int) -> None:
    """``out += sum of the 8 off-centre taps[ky, kx]`` shifted by ``((ky-1)*d, (kx-1)*d)``.

    ``out`` is ``[..., H, W]``, ``taps`` ``[3, 3, ..., H, W]``; zero padding as in :func:`_shifts`.
    """
    for ky, kx, target, source in _shifts(*out.shape[-2:], d):
        out[target] += taps[ky, kx][source]


def _shifted_adjoint(g: torch.Tensor, d: int) -> torch.Tensor:
    """The gradient of the taps ``[3, 3, ...]`` of ``out = taps[1, 1] + shifted taps`` (see
    :func:`_add_shifted`) from the gradient ``g`` of ``out``."""
    gz = g.new_zeros((3, 3, *g.shape))
    gz[1, 1] = g
    for ky, kx, target, source in _shifts(*g.shape[-2:], d):
        gz[ky, kx][source] = g[target]
    return gz


class MSDNet(_Network):
    """The mixed-scale dense network of Pelt & Sethian (PNAS 2018).

    Layer ``i`` is a 3x3 convolution with dilation ``dilations[i % len(dilations)]`` over *all*
    earlier feature maps, the inputs included, followed by a ReLU; it adds ``width`` maps. A final
    1x1 convolution over all ``n_inputs + depth * width`` maps gives the class scores. There is
    no down-sampling, so any ``H, W`` works as is; borders are zero-padded.

    Parameters
    ----------
    n_inputs, n_classes
        As for :class:`FusionNet`.
    depth
        Number of dilated layers (100 in Pelt & Sethian and Larsen et al.).
    width
        Feature maps each layer adds (1 in the papers).
    dilations
        Dilations cycled through by the layers; 1, 2, ... 10 by default.

    Notes
    -----
    Without gradients (inference) the maps are written into one preallocated buffer (the
    engines run :class:`~etem.train.msd_fast.FastMSDNet` instead). With gradients on a CPU the
    layers run as :class:`_MSDTrunk`: one buffer, each layer one matrix product and nine shifted
    sums, a hand-written backward pass (about 7x faster per training step at depth 100 than
    convolutions with one output map); on other devices each layer is recomputed in the
    backward pass (activation checkpointing). Either way training memory grows linearly, not
    quadratically, with ``depth``.
    """

    arch = "msdnet"

    def __init__(self, n_inputs: int, n_classes: int, depth: int = 100, width: int = 1,
                 dilations: Sequence[int] = tuple(range(1, 11))):
        super().__init__(n_inputs, n_classes)
        _check_sizes(n_inputs, n_classes, depth=depth, width=width)
        dilations = tuple(dilations)
        if not dilations or not all(isinstance(d, int) and d >= 1 for d in dilations):
            raise ConfigError(f"dilations must be a non-empty sequence of positive integers; got {dilations!r}.")
        self.depth, self.width, self.dilations = depth, width, dilations
        self.layers = nn.ModuleList()
        for i in range(depth):
            d = dilations[i % len(dilations)]
            self.layers.append(nn.Conv2d(n_inputs + i * width, width, kernel_size=3, padding=d, dilation=d))
        self.head = nn.Conv2d(n_inputs + depth * width, n_classes, kernel_size=1)

    @property
    def arch_args(self) -> dict[str, Any]:
        return {"n_inputs": self.n_inputs, "n_classes": self.n_classes, "depth": self.depth,
                "width": self.width, "dilations": list(self.dilations)}

    @property
    def receptive_field(self) -> int:
        """Side of the square of input pixels one output pixel can see [px]."""
        return 1 + 2 * sum(layer.dilation[0] for layer in self.layers)

    def _layer(self, i: int, *maps: torch.Tensor) -> torch.Tensor:
        return F.relu(self.layers[i](torch.cat(maps, dim=1)))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._logits_buffered(x)
        if x.device.type == "cpu" and self.depth:
            return self._logits_gemm(x)
        return self._logits_checkpointed(x)

    def _logits_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """All layers as matrix products into one channel-first buffer (:class:`_MSDTrunk`)."""
        params = [t.to(x.dtype) for layer in self.layers for t in (layer.weight, layer.bias)]
        dilations = tuple(layer.dilation[0] for layer in self.layers)
        with torch.autocast(x.device.type, enabled=False):
            buf = _MSDTrunk.apply(x, dilations, *params)
        return self.head(buf.transpose(0, 1))

    def _logits_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        """Each layer a convolution, recomputed in the backward pass."""
        maps = [x]
        for i in range(self.depth):
            maps.append(checkpoint(self._layer, i, *maps, use_reentrant=False))
        return self.head(torch.cat(maps, dim=1))

    def _logits_buffered(self, x: torch.Tensor) -> torch.Tensor:
        """Each layer a convolution writing into one preallocated buffer (no gradients)."""
        b, _, h, w = x.shape
        # One buffer for all maps, laid out like the weights (NHWC after .to(channels_last)).
        weight = self.layers[-1].weight if self.depth else self.head.weight
        nhwc = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        buffer = torch.empty((b, self.n_inputs + self.depth * self.width, h, w), dtype=x.dtype,
                             device=x.device,
                             memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        buffer[:, :self.n_inputs] = x
        c = self.n_inputs
        for layer in self.layers:
            buffer[:, c:c + self.width] = F.relu(layer(buffer[:, :c]))
            c += self.width
        return self.head(buffer)


#: Architecture name (as stored in a model card) -> class.
ARCHITECTURES: dict[str, type[_Network]] = {cls.arch: cls for cls in (FusionNet, UNet, MSDNet)}


def build_network(arch: str, **kwargs: Any) -> nn.Module:
    """Build a network by architecture name.

    Parameters
    ----------
    arch
        One of ``"fusionnet"``, ``"unet"``, ``"msdnet"`` (case-insensitive).
    **kwargs
        The constructor's arguments (``n_inputs``, ``n_classes``, ...).

    Raises
    ------
    ConfigError
        For an unknown architecture or arguments it does not take.
    """
    key = arch.lower() if isinstance(arch, str) else arch
    if key not in ARCHITECTURES:
        raise choice_error("arch", arch, ARCHITECTURES)
    cls = ARCHITECTURES[key]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for {cls.__name__}: {exc}") from exc


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (weights and biases, not batch-norm running statistics)."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# batch-norm folding

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@torch.no_grad()
def _fold(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    # Output channels are dim 0 of a Conv2d weight and dim 1 of a ConvTranspose2d weight.
    shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
    conv.weight.mul_(scale.reshape(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _CONVS) and isinstance(bn, nn.BatchNorm2d) and conv.groups == 1
            and bn.track_running_stats and bn.running_mean is not None and bn.affine
            and bn.num_features == conv.out_channels)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` with every batch norm folded into the convolution before it.

    A ``BatchNorm2d`` that directly follows a ``Conv2d`` or ``ConvTranspose2d`` in an
    ``nn.Sequential`` is merged into that convolution's weight and bias and replaced by
    ``nn.Identity``; in eval mode the result computes the same function with fewer operations.
    Batch norms that cannot be folded are left in place. ``module`` itself is not changed.
    """
    folded = copy.deepcopy(module).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for prev, name in zip(names, names[1:]):
            conv, bn = seq._modules[prev], seq._modules[name]
            if _foldable(conv, bn):
                _fold(conv, bn)
                seq._modules[name] = nn.Identity()
    return folded
