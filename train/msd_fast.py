"""Fast inference for the mixed-scale dense network (:class:`~etem.train.networks.MSDNet`).

An MSD-net of depth 100 and width 1 has few parameters but much work per pixel: layer ``i`` is a
3x3 dilated convolution over all ``c_i = n_inputs + i * width`` earlier maps. Run as one
convolution per layer (what :class:`MSDNet` does) each layer is a convolution with a single output
channel, a shape that convolution libraries handle poorly on CPUs and GPUs alike.
:class:`FastMSDNet` computes the same function from the same weights in a different order:

- All maps live in one preallocated *planar* buffer ``[n_inputs + depth * width, B, H, W]``
  (channel-major), written in place layer by layer, so that the input of layer ``i`` -- all
  earlier maps -- is the single contiguous block ``buffer[:c_i]``, a matrix ``[c_i, B*H*W]``.
- The channel sums are matrix products: ``P = W @ buffer[:c]`` gives, for each of the 9 taps of a
  layer, the weighted sum over all input maps; the dilated stencil is then 9 shifted additions
  of those planes (zero padding is the part of a shift that falls outside the image).
- Layers are taken in groups of ``group``: the part of each layer's sum that comes from maps
  written *before* the group is one matrix product for the whole group (``9 * width * group``
  rows), so that those maps are read once per group rather than once per layer, and the product
  is large enough to run at matrix-multiply speed. Each layer then adds the few maps written
  inside its group.
- The final 1x1 convolution over all maps is one matrix product.

Two backends fill the buffer: ``"torch"`` (the scheme above, any device) and ``"triton"`` (CUDA):
a Triton kernel that, per tile of pixels, reads each input map, accumulates the 9 dilated taps
of up to ``8`` output rows in registers, and writes either the partial sums of a whole group of
layers or a finished map (bias, ReLU). Numerics of the Triton kernel are checked here with the
Triton interpreter (``TRITON_INTERPRET=1``, CPU tensors); its speed needs a CUDA GPU.

The module is for inference only; train :class:`MSDNet` (whose training pass on a CPU uses the
same scheme, ungrouped, with a hand-written backward pass) and wrap the trained network.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Literal

import torch
from torch import nn

from etem.tracker.errors import ConfigError, EngineUnavailable, choice_error

from .networks import MSDNet, _add_shifted, fold_batchnorm

try:  # Triton is optional: CUDA builds of torch ship it; the torch backend needs nothing more.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = tl = None

__all__ = ["FastMSDNet", "Backend", "BACKENDS", "msd_flops", "msd_min_bytes", "triton_available"]

log = logging.getLogger("etem.engine")

Backend = Literal["auto", "torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

#: Output rows (layers x width) one launch of the Triton kernel accumulates: its register tile.
_TRITON_ROWS = 8


def msd_flops(depth: int, width: int, n_inputs: int, n_classes: int, height: int, width_px: int,
              batch: int = 1) -> int:
    """Floating-point operations (multiply and add counted apart) of one MSD-net forward pass.

    ``2 * 9 * width * sum_i c_i`` per pixel for the dilated layers, with ``c_i = n_inputs + i *
    width``, plus ``2 * n_classes * (n_inputs + depth * width)`` for the final 1x1 convolution;
    biases, ReLU and softmax are left out.
    """
    channels_in = depth * n_inputs + width * depth * (depth - 1) // 2
    per_pixel = 2 * 9 * width * channels_in + 2 * n_classes * (n_inputs + depth * width)
    return per_pixel * height * width_px * batch


def msd_min_bytes(depth: int, width: int, n_inputs: int, height: int, width_px: int,
                  batch: int = 1, itemsize: int = 2) -> int:
    """Bytes read and written when every layer reads all earlier maps once from memory.

    The memory-traffic floor of a layer-by-layer implementation (``itemsize`` 2 for float16).
    """
    channels_in = depth * n_inputs + width * depth * (depth - 1) // 2
    return (channels_in + depth * width) * height * width_px * batch * itemsize


def triton_available() -> bool:
    """Whether the Triton backend can run here: Triton importable and a CUDA GPU present."""
    return triton is not None and torch.cuda.is_available()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


# ---------------------------------------------------------------------------------------------
# the Triton kernel (compiled on first use; see _kernel)

def _taps_kernel(x_ptr, w_ptr, dil_ptr, init_ptr, out_ptr, c_lo, c_hi, n_rows, H, W, plane,
                 R_PAD: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                 FROM_PART: tl.constexpr, RELU: tl.constexpr, N_COLS: tl.constexpr = -1):
    """One tile of ``n_rows`` output rows: ``out[r] = init[r] + sum_c sum_t w[r, c, t] x[c] shifted``.

    ``x_ptr`` is the planar map buffer (plane stride ``plane = B*H*W``); row ``r`` uses dilation
    ``dil[r]`` and weights ``w[r, c - c_lo, t]`` (tap ``t = 3*ky + kx``) for the input maps
    ``c_lo <= c < c_hi``. ``init`` is a partial-sum buffer (``FROM_PART``) or a bias per row.
    ``N_COLS`` >= 0 gives ``c_hi - c_lo`` as a constant, for the interpreter only (see
    :func:`_launch`); compiled kernels take it at run time, one compilation for all layers.
    """
    tile = tl.program_id(0)
    b = tl.program_id(1)
    # Built-ins only (no tl.cdiv, tl.zeros): the interpreter then runs it even when
    # TRITON_INTERPRET is set after triton was imported.
    n_tiles_w = (W + BLOCK_W - 1) // BLOCK_W
    rows = tl.arange(0, R_PAD)
    ys = (tile // n_tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    xs = (tile % n_tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    row_ok = rows < n_rows
    r3 = rows[:, None, None]
    y3 = ys[None, :, None]
    x3 = xs[None, None, :]
    d3 = tl.load(dil_ptr + rows, mask=row_ok, other=0)[:, None, None]
    inside = (r3 < n_rows) & (y3 < H) & (x3 < W)
    image = b.to(tl.int64) * H * W
    out_offsets = r3.to(tl.int64) * plane + image + y3 * W + x3
    if FROM_PART:
        acc = tl.load(init_ptr + out_offsets, mask=inside, other=0.0).to(tl.float32)
    else:
        bias = tl.load(init_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        acc = tl.full([R_PAD, BLOCK_H, BLOCK_W], 0.0, tl.float32) + bias[:, None, None]
    centre_offsets = image + ys[:, None] * W + xs[None, :]
    centre_ok = (ys[:, None] < H) & (xs[None, :] < W)
    n_cols = c_hi - c_lo
    # (No assignment of N_COLS: the interpreter turns every assigned value into a tensor.)
    for k in range(0, N_COLS if N_COLS >= 0 else n_cols):
        maps = x_ptr + (c_lo + k).to(tl.int64) * plane
        weights = w_ptr + (rows * n_cols + k) * 9
        # The centre tap does not depend on the dilation: one load serves every row.
        v = tl.load(maps + centre_offsets, mask=centre_ok, other=0.0).to(tl.float32)
        wt = tl.load(weights + 4, mask=row_ok, other=0.0).to(tl.float32)
        acc += wt[:, None, None] * v[None, :, :]
        for t in tl.static_range(9):
            if t != 4:
                yy = y3 + (t // 3 - 1) * d3
                xx = x3 + (t % 3 - 1) * d3
                ok = inside & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
                v = tl.load(maps + image + yy * W + xx, mask=ok, other=0.0).to(tl.float32)
                wt = tl.load(weights + t, mask=row_ok, other=0.0).to(tl.float32)
                acc += wt[:, None, None] * v
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(out_ptr + out_offsets, acc.to(out_ptr.dtype.element_ty), mask=inside)


_KERNELS: dict[bool, object] = {}


def _kernel():
    """The jitted kernel (interpreted on CPU tensors when ``TRITON_INTERPRET=1`` is set)."""
    interpret = _interpreting()
    if interpret not in _KERNELS:
        # triton.jit reads TRITON_INTERPRET when it wraps the function, so wrap once per mode.
        _KERNELS[interpret] = triton.jit(_taps_kernel)
    return _KERNELS[interpret]


def _launch(kernel, interpret: bool, grid, *args, **meta) -> None:
    """Run ``kernel`` (from :func:`_kernel`) on ``grid``: ``args`` as :func:`_taps_kernel` takes
    them, ``meta`` its constants and Triton's launch options (``num_warps``).

    Under the interpreter the loop bound is passed as a constant: some Triton releases (3.6, with
    torch 2.11) turn a run-time loop bound into a one-element array there, which NumPy >= 2.4
    refuses to convert to an integer. Fused multiply-adds are asked for by name: it is Triton's
    default, which Triton 3.9 warns it will change.
    """
    meta.setdefault("enable_fp_fusion", True)
    if interpret:
        c_lo, c_hi = args[5], args[6]
        meta["N_COLS"] = c_hi - c_lo
    kernel[grid](*args, **meta)


# ---------------------------------------------------------------------------------------------
# the module

class FastMSDNet(nn.Module):
    """Inference copy of a trained :class:`MSDNet` that computes the same scores faster.

    Parameters
    ----------
    model
        A trained :class:`MSDNet`; its batch norms (if any) are folded, and its weights copied
        with the device and floating-point type they have.
    backend
        ``"torch"``: grouped matrix products and shifted additions, on any device.
        ``"triton"``: the Triton kernel; needs CUDA tensors (or CPU tensors with
        ``TRITON_INTERPRET=1``, for testing). ``"auto"``: ``"triton"`` for CUDA inputs where
        Triton is installed, else ``"torch"``.
    group
        Layers whose inputs from earlier groups are summed by one matrix product (torch backend).
    max_group_mb
        Cap on the memory of that product's result, ``9 * width * group`` maps [MiB]; the group
        shrinks for large images or batches to respect it.
    block
        Output pixels ``(rows, cols)`` per Triton program (powers of two); a launch that sums
        a whole group of layers uses half as many rows.
    warps
        Warps per Triton program ``(group launch, layer launch)`` (powers of two up to 32). The
        group launch keeps 8 rows of accumulators and the taps being loaded: with 4 warps its
        threads run out of registers and spill to local memory (ptxas, sm_80 and sm_90, Triton
        3.6), with 8 they do not, yet on an H200 4 warps ran fastest (18.2 ms per 1024² frame
        at depth 100, 8 warps 26.5, 16 warps 23.7; docs/benchmarks.md), hence the default.

    Notes
    -----
    ``forward(x, logits=False)`` takes and returns what :meth:`MSDNet.forward` does. Any memory
    format of ``x`` is accepted and the scores come back in the same one; internally the maps
    are always planar (channel-major), the layout in which each layer's input is one block.
    The sums run in another order than a convolution's: float32 results agree with
    :class:`MSDNet` to rounding (relative 1e-6 typically), not bit for bit.
    """

    arch = "msdnet"

    def __init__(self, model: MSDNet, *, backend: Backend = "auto", group: int = 10,
                 max_group_mb: float = 256.0, block: tuple[int, int] = (16, 64),
                 warps: tuple[int, int] = (4, 4)):
        super().__init__()
        if not isinstance(model, MSDNet):
            raise ConfigError(f"FastMSDNet wraps an MSDNet; got {type(model).__name__}.")
        if backend not in BACKENDS:
            raise choice_error("backend", backend, BACKENDS)
        if backend == "triton" and triton is None:
            raise EngineUnavailable("backend='triton' needs the triton package (pip install triton; "
                                    "CUDA builds of torch include it); use backend='torch' meanwhile.")
        if not isinstance(group, int) or group < 1:
            raise ConfigError(f"group must be a positive integer; got {group!r}.")
        if not max_group_mb > 0:
            raise ConfigError(f"max_group_mb must be positive; got {max_group_mb!r}.")
        if (not isinstance(block, (tuple, list)) or len(block) != 2
                or not all(isinstance(v, int) and v >= 1 and v & (v - 1) == 0 for v in block)):
            raise ConfigError(f"block must be two powers of two (rows, cols); got {block!r}.")
        if (not isinstance(warps, (tuple, list)) or len(warps) != 2
                or not all(isinstance(v, int) and 1 <= v <= 32 and v & (v - 1) == 0 for v in warps)):
            raise ConfigError(f"warps must be two powers of two up to 32 (group, layer); got {warps!r}.")
        self.warps = tuple(warps)
        model = fold_batchnorm(model)
        self.block = tuple(block)
        self.n_inputs, self.n_classes = model.n_inputs, model.n_classes
        self.depth, self.width, self.dilations = model.depth, model.width, tuple(model.dilations)
        self.backend, self.group, self.max_group_mb = backend, group, float(max_group_mb)
        self.channels = self.n_inputs + self.depth * self.width
        ref = model.head.weight
        # taps[i, o, c, t]: weight of map c, tap t = 3*ky + kx, for output o of layer i (0 past c_i).
        taps = torch.zeros(self.depth, self.width, self.channels, 9, dtype=ref.dtype, device=ref.device)
        bias = torch.zeros(self.depth, self.width, dtype=ref.dtype, device=ref.device)
        for i, layer in enumerate(model.layers):
            c = self.n_inputs + i * self.width
            taps[i, :, :c] = layer.weight.detach().reshape(self.width, c, 9)
            if layer.bias is not None:
                bias[i] = layer.bias.detach()
        self.register_buffer("taps", taps)
        self.register_buffer("bias", bias)
        head = model.head.weight.detach().reshape(self.n_classes, self.channels)
        self.register_buffer("head_weight", head.clone())
        self.register_buffer("head_bias", model.head.bias.detach().clone())
        self._cache: dict[tuple, list] = {}

    def _apply(self, fn, *args, **kwargs):
        self._cache = {}  # weights derived for one device or dtype are stale after .to(...)
        return super()._apply(fn, *args, **kwargs)

    @property
    def arch_args(self) -> dict:
        """The arguments of the :class:`MSDNet` this module computes."""
        return {"n_inputs": self.n_inputs, "n_classes": self.n_classes, "depth": self.depth,
                "width": self.width, "dilations": list(self.dilations)}

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}, backend={self.backend!r}"

    def dilation(self, i: int) -> int:
        """Dilation of layer ``i``."""
        return self.dilations[i % len(self.dilations)]

    def resolve_backend(self, device: torch.device) -> str:
        """The backend that runs for inputs on ``device``."""
        if self.backend == "auto":
            return "triton" if device.type == "cuda" and triton is not None else "torch"
        if self.backend == "triton" and device.type != "cuda" and not _interpreting():
            raise EngineUnavailable("backend='triton' runs on CUDA tensors (or on CPU tensors under "
                                    "TRITON_INTERPRET=1, for tests); use backend='torch' on the CPU.")
        return self.backend

    # -- forward ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """Class probabilities ``[B, n_classes, H, W]`` (scores with ``logits=True``) of ``x``."""
        if x.ndim != 4 or x.shape[1] != self.n_inputs:
            raise ValueError(f"x must have shape [B, {self.n_inputs}, H, W]; got {list(x.shape)}.")
        with torch.no_grad():
            scores = self._scores(x)
        return scores if logits else torch.softmax(scores, dim=1)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n = b * h * w
        buffer = torch.empty((self.channels, b, h, w), dtype=self.taps.dtype, device=x.device)
        buffer[:self.n_inputs] = x.transpose(0, 1)
        if self.resolve_backend(x.device) == "triton":
            try:
                self._layers_triton(buffer)
            except Exception as exc:  # noqa: BLE001 - any compile or launch failure
                if self.backend != "auto":
                    raise
                # 'auto' must not be worse than the torch backend: fall back for good, and say so.
                log.warning("the Triton MSD-net kernel failed (%s: %s); using the torch backend",
                            type(exc).__name__, exc)
                self.backend = "torch"
                self._layers_torch(buffer)
        else:
            self._layers_torch(buffer)
        scores = torch.addmm(self.head_bias[:, None], self.head_weight, buffer.view(self.channels, n))
        scores = scores.view(self.n_classes, b, h, w).transpose(0, 1)
        return scores.contiguous(memory_format=_memory_format(x))

    # -- torch backend ------------------------------------------------------------------------

    def _group_size(self, n: int) -> int:
        per_layer = 9 * self.width * n * self.taps.element_size()
        return max(1, min(self.group, int(self.max_group_mb * 2**20 // per_layer)))

    def _torch_plan(self, group: int) -> list:
        """Per group: (first layer, its input maps, the group's matrix, per-layer in-group matrices)."""
        key = ("torch", group)
        if key not in self._cache:
            plan, w = [], self.width
            for g0 in range(0, self.depth, group):
                g1 = min(g0 + group, self.depth)
                c0 = self.n_inputs + g0 * w
                # Rows ordered (layer, tap, output), columns the maps written before the group.
                outer = self.taps[g0:g1, :, :c0].permute(0, 3, 1, 2).reshape((g1 - g0) * 9 * w, c0)
                inner = [self.taps[i, :, c0:self.n_inputs + i * w].permute(2, 0, 1).reshape(9 * w, -1)
                         for i in range(g0, g1)]
                plan.append((g0, c0, outer.contiguous(), [m.contiguous() for m in inner]))
            self._cache[key] = plan
        return self._cache[key]

    def _layers_torch(self, buffer: torch.Tensor) -> None:
        _, b, h, w = buffer.shape
        flat = buffer.view(self.channels, -1)
        width = self.width
        group = self._group_size(flat.shape[1])
        sums = torch.empty((group * 9 * width, flat.shape[1]), dtype=buffer.dtype, device=buffer.device)
        exact = buffer.dtype == torch.float32
        for g0, c0, outer, inner in self._torch_plan(group):
            part = sums[:outer.shape[0]]
            torch.mm(outer, flat[:c0], out=part)
            for k, extra in enumerate(inner):
                i = g0 + k
                c = self.n_inputs + i * width
                taps = part[k * 9 * width:(k + 1) * 9 * width]
                if extra.shape[1]:
                    taps.addmm_(extra, flat[c0:c])
                taps = taps.view(3, 3, width, b, h, w)
                out = buffer[c:c + width]
                # Reduced precision: the nine taps are added in float32 and rounded once.
                acc = out if exact else torch.empty(out.shape, dtype=torch.float32, device=out.device)
                torch.add(taps[1, 1], self.bias[i].view(width, 1, 1, 1), out=acc)
                _add_shifted(acc, taps, self.dilation(i))
                if exact:
                    acc.relu_()
                else:
                    torch.clamp_min(acc, 0, out=acc)
                    out.copy_(acc)

    # -- triton backend -----------------------------------------------------------------------

    def _triton_plan(self) -> list:
        """Per group: (first layer, its input maps, rows' weights, dilations, biases, per-layer weights)."""
        key = ("triton",)
        if key not in self._cache:
            plan, w = [], self.width
            group = max(1, _TRITON_ROWS // w)
            dev = self.taps.device
            for g0 in range(0, self.depth, group):
                g1 = min(g0 + group, self.depth)
                c0 = self.n_inputs + g0 * w
                outer = self.taps[g0:g1, :, :c0].reshape((g1 - g0) * w, c0, 9).float().contiguous()
                dil = torch.tensor([self.dilation(i) for i in range(g0, g1) for _ in range(w)],
                                   dtype=torch.int32, device=dev)
                bias = self.bias[g0:g1].reshape(-1).float().contiguous()
                inner = [(self.taps[i, :, c0:self.n_inputs + i * w].float().contiguous(),
                          torch.full((w,), self.dilation(i), dtype=torch.int32, device=dev))
                         for i in range(g0, g1)]
                plan.append((g0, c0, outer, dil, bias, inner))
            self._cache[key] = plan
        return self._cache[key]

    def _layers_triton(self, buffer: torch.Tensor) -> None:
        kernel, interpret = _kernel(), _interpreting()
        _, b, h, w = buffer.shape
        plane = b * h * w
        width = self.width
        plan = self._triton_plan()
        rows = max(len(dil) for _, _, _, dil, _, _ in plan)
        partial = torch.empty((rows, b, h, w), dtype=torch.float32, device=buffer.device)
        bh, bw = self.block
        # The group launch holds up to 8 rows of accumulators: a shorter tile (and more warps) keep
        # them in registers.
        grid_rows = (triton.cdiv(h, max(1, bh // 2)) * triton.cdiv(w, bw), b)
        grid_layer = (triton.cdiv(h, bh) * triton.cdiv(w, bw), b)
        for g0, c0, outer, dil, bias, inner in plan:
            _launch(kernel, interpret, grid_rows, buffer, outer, dil, bias, partial, 0, c0, len(dil), h, w, plane,
                    R_PAD=_pow2(len(dil)), BLOCK_H=max(1, bh // 2), BLOCK_W=bw, FROM_PART=False, RELU=False,
                    num_warps=self.warps[0])
            for k, (extra, dil_i) in enumerate(inner):
                c = self.n_inputs + (g0 + k) * width
                _launch(kernel, interpret, grid_layer, buffer, extra, dil_i, partial[k * width:(k + 1) * width],
                        buffer[c:c + width], c0, c, width, h, w, plane,
                        R_PAD=_pow2(width), BLOCK_H=bh, BLOCK_W=bw, FROM_PART=True, RELU=True,
                        num_warps=self.warps[1])


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format
