"""The fast MSD-net inference module against the reference MSDNet, and its use by the eager engine."""
from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from test_engines import CARD, EngineContract

from etem.tracker.engines import make_engine
from etem.tracker.errors import ConfigError, EngineUnavailable
from etem.train.bundle import load_bundle, save_bundle
from etem.train.msd_fast import FastMSDNet, msd_flops, msd_min_bytes, triton_available
from etem.train.networks import FusionNet, MSDNet

CUDA = torch.cuda.is_available()
TRITON = importlib.util.find_spec("triton") is not None


def msdnet(n_inputs=1, n_classes=3, depth=12, width=1, dilations=tuple(range(1, 11)), seed=0):
    """An MSDNet with random weights and biases large enough to keep most ReLUs alive."""
    torch.manual_seed(seed)
    model = MSDNet(n_inputs, n_classes, depth=depth, width=width, dilations=dilations).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.uniform_(-0.1, 0.3)
    return model


def reference(model, x):
    with torch.no_grad():
        return model(x, logits=True)


def assert_matches(fast, ref, rtol=1e-5):
    """Agreement within ``rtol`` of the largest score (the sums run in another order)."""
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    # Not a vacuous comparison: the scores vary over the image, so the maps are not all dead.
    assert float(ref.std(dim=(2, 3)).min()) > 0
    torch.testing.assert_close(fast, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


# --- torch backend --------------------------------------------------------------------------------

@pytest.mark.parametrize("n_inputs, n_classes, depth, width, dilations, batch, size, group", [
    (1, 3, 22, 1, tuple(range(1, 11)), 2, (29, 37), 4),   # groups of 4 do not divide 22
    (3, 4, 12, 2, (1, 3, 7), 3, (20, 17), 5),
    (2, 2, 5, 3, (2, 16), 1, (9, 9), 10),                 # a dilation beyond the image: taps fall out
    (1, 2, 1, 1, (1,), 2, (8, 11), 10),                   # a single layer
    (2, 3, 7, 1, (1, 2), 1, (1, 6), 3),                   # a one-row image
])
def test_torch_backend_matches_msdnet(n_inputs, n_classes, depth, width, dilations, batch, size, group):
    model = msdnet(n_inputs, n_classes, depth, width, dilations)
    x = torch.randn(batch, n_inputs, *size)
    fast = FastMSDNet(model, backend="torch", group=group)
    assert_matches(fast(x, logits=True), reference(model, x))


def test_depth_100_width_1():
    model = msdnet(3, 4, depth=100)
    x = torch.randn(1, 3, 16, 20)
    assert_matches(FastMSDNet(model, backend="torch")(x, logits=True), reference(model, x))


def test_memory_cap_shrinks_the_group():
    model = msdnet(depth=9)
    fast = FastMSDNet(model, backend="torch", group=8, max_group_mb=1e-4)
    assert fast._group_size(16 * 16) == 1
    x = torch.randn(2, 1, 16, 16)
    assert_matches(fast(x, logits=True), reference(model, x))


def test_probabilities_and_memory_format():
    model = msdnet(n_inputs=2, depth=6)
    fast = FastMSDNet(model)
    x = torch.randn(2, 2, 15, 19)
    probs = fast(x)
    with torch.no_grad():
        torch.testing.assert_close(probs, model(x), atol=1e-6, rtol=1e-5)
    nhwc = fast(x.contiguous(memory_format=torch.channels_last), logits=True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert_matches(nhwc, reference(model, x))


def test_follows_to_and_bfloat16():
    model = msdnet(depth=10)
    x = torch.randn(1, 1, 16, 20)
    ref = reference(model, x)
    fast = FastMSDNet(model)
    assert_matches(fast(x, logits=True), ref)
    # .to() drops the float32 weights derived for the first call.
    out = fast.to(torch.bfloat16)(x, logits=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05 * float(ref.abs().max()), rtol=0)
    rounded = copy.deepcopy(model).bfloat16().float()
    assert_matches(fast.float()(x, logits=True), reference(rounded, x))


def test_batch_elements_are_independent():
    model = msdnet(depth=8)
    fast = FastMSDNet(model)
    x = torch.randn(3, 1, 12, 14)
    torch.testing.assert_close(fast(x)[1:2], fast(x[1:2]), atol=1e-6, rtol=1e-5)


def test_flop_count_matches_the_layers():
    model = msdnet(3, 4, depth=20, width=2)
    h, w = 64, 48
    per_pixel = sum(2 * m.weight.numel() for m in [*model.layers, model.head])
    assert msd_flops(20, 2, 3, 4, h, w) == per_pixel * h * w
    assert msd_flops(20, 2, 3, 4, h, w, batch=3) == 3 * per_pixel * h * w
    reads = sum(layer.in_channels for layer in model.layers) + 20 * 2
    assert msd_min_bytes(20, 2, 3, h, w) == reads * h * w * 2


def test_bad_arguments():
    model = msdnet(depth=3)
    with pytest.raises(ConfigError, match="wraps an MSDNet"):
        FastMSDNet(FusionNet(1, 2, width=4))
    with pytest.raises(ConfigError, match="backend must be one of.*'torch'"):
        FastMSDNet(model, backend="cuda")
    with pytest.raises(ConfigError, match="group"):
        FastMSDNet(model, group=0)
    with pytest.raises(ConfigError, match="max_group_mb"):
        FastMSDNet(model, max_group_mb=0)
    with pytest.raises(ConfigError, match="powers of two"):
        FastMSDNet(model, block=(16, 48))
    for warps in ((8,), (3, 4), (8, 64), (8.0, 4)):
        with pytest.raises(ConfigError, match="warps"):
            FastMSDNet(model, warps=warps)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        FastMSDNet(model)(torch.zeros(1, 2, 8, 8))


def test_triton_backend_needs_cuda_or_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = msdnet(depth=3)
    with pytest.raises(EngineUnavailable, match="triton"):
        FastMSDNet(model, backend="triton")(torch.zeros(1, 1, 8, 8))
    assert FastMSDNet(model).resolve_backend(torch.device("cpu")) == "torch"


# --- Triton kernel, run by the Triton interpreter on CPU tensors -----------------------------------

@pytest.mark.skipif(not TRITON, reason="needs the triton package")
@pytest.mark.parametrize("n_inputs, depth, width, dilations, batch, size, block", [
    (1, 4, 1, (1, 2, 12), 2, (9, 13), (16, 16)),   # one group; a dilation beyond the image
    (2, 3, 3, (1, 4), 1, (9, 13), (16, 16)),       # groups of two layers and one
    pytest.param(1, 9, 1, (1, 3, 5), 1, (17, 19), (8, 16),  # groups of 8 and 1 layers, 3x2 tiles
                 marks=pytest.mark.slow),
])
def test_triton_kernel_in_the_interpreter(monkeypatch, n_inputs, depth, width, dilations, batch, size, block):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = msdnet(n_inputs, 3, depth, width, dilations)
    x = torch.randn(batch, n_inputs, *size)
    fast = FastMSDNet(model, backend="triton", block=block, warps=(4, 2) if batch > 1 else (8, 4))
    assert fast.resolve_backend(x.device) == "triton"
    assert_matches(fast(x, logits=True), reference(model, x))


@pytest.mark.skipif(not TRITON, reason="needs the triton package")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_kernel_in_the_interpreter_in_low_precision(monkeypatch, dtype):
    """Maps stored in float16 / bfloat16 (the compiled engine's CUDA default), sums in float32."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = msdnet(2, 3, depth=5, dilations=(1, 2, 3))
    x = torch.randn(1, 2, 11, 13)
    ref = reference(model, x)
    fast = FastMSDNet(copy.deepcopy(model).to(dtype), backend="triton", block=(16, 16))
    out = fast(x.to(dtype), logits=True)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=0.02 * float(ref.abs().max()), rtol=0)


def _taps_signature(buffer: str, from_part: bool) -> dict[str, str]:
    """The kernel's argument types as ``FastMSDNet._layers_triton`` launches it."""
    return {"x_ptr": f"*{buffer}", "w_ptr": "*fp32", "dil_ptr": "*i32", "init_ptr": "*fp32",
            "out_ptr": f"*{buffer}" if from_part else "*fp32", "c_lo": "i32", "c_hi": "i32",
            "n_rows": "i32", "H": "i32", "W": "i32", "plane": "i32", "R_PAD": "constexpr",
            "BLOCK_H": "constexpr", "BLOCK_W": "constexpr", "FROM_PART": "constexpr", "RELU": "constexpr",
            "N_COLS": "constexpr"}


def _compile_taps(arch: int, buffer: str, from_part: bool, warps: int | None = None):
    """The kernel compiled by Triton for ``sm_<arch>`` as FastMSDNet launches it by default (group
    launch: 8 rows over half-height tiles; layer launch: 1 row; run-time loop bound); no GPU needed."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from etem.train import msd_fast

    default = FastMSDNet(msdnet(depth=3))
    (bh, bw), warps = default.block, warps or default.warps[1 if from_part else 0]
    try:
        src = ASTSource(triton.jit(msd_fast._taps_kernel), _taps_signature(buffer, from_part),
                        constexprs={"R_PAD": 1 if from_part else 8, "BLOCK_H": bh if from_part else bh // 2,
                                    "BLOCK_W": bw, "FROM_PART": from_part, "RELU": from_part, "N_COLS": -1})
    except TypeError as exc:  # ASTSource's arguments before Triton 3.3
        pytest.skip(f"triton {triton.__version__}: {exc}")
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"enable_fp_fusion": True, "num_warps": warps})


@pytest.mark.skipif(not TRITON, reason="needs the triton package")
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("buffer", ["fp16", "bf16", "fp32"])
def test_triton_kernel_compiles_for_gpus_without_one(arch, buffer):
    """The kernel as CUDA runs it, compiled to a cubin for A100 / H100-class GPUs on this
    machine: Triton's front end, its GPU passes and ptxas, no GPU needed."""
    for from_part in (False, True):
        compiled = _compile_taps(arch, buffer, from_part)
        assert f".target sm_{arch}" in compiled.asm["ptx"] and len(compiled.asm["cubin"]) > 1000


def _ptxas_report(folder: Path, arch: int, buffer: str, from_part: bool, warps: int | None = None) -> tuple[int, int]:
    """(registers per thread, bytes of spill stores) of one launch kind, from Triton's own ptxas."""
    import re
    import subprocess

    try:
        from triton.backends.nvidia.compiler import get_ptxas
        ptxas = get_ptxas(arch).path
    except Exception as exc:  # noqa: BLE001 - an older Triton or no bundled ptxas
        pytest.skip(f"Triton's ptxas is not at hand: {exc}")
    ptx = folder / f"taps-{arch}-{buffer}-{from_part}-{warps}.ptx"
    ptx.write_text(_compile_taps(arch, buffer, from_part, warps).asm["ptx"])
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    log = subprocess.run([ptxas, "-v", "--gpu-name", gpu, str(ptx), "-o", os.devnull],
                         capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = re.search(r"(\d+) bytes spill stores", log)
    return registers, int(spills.group(1)) if spills else 0


@pytest.mark.skipif(not TRITON, reason="needs the triton package")
@pytest.mark.parametrize("arch", [80, 90])
def test_the_default_warps_compile_and_the_layer_launch_keeps_its_sums_in_registers(tmp_path, arch):
    """Both launches compile for the GPU at the default warps; the layer launch spills nothing.
    The group launch holds 8 rows of sums and spills at 4 warps (200-1,100 bytes a thread, none
    at 8 with Triton 3.6), but 4 warps ran fastest on an H200 (docs/benchmarks.md), so 4 it is."""
    registers, _ = _ptxas_report(tmp_path, arch, "fp16", False)
    assert 0 < registers <= 255
    assert _ptxas_report(tmp_path, arch, "fp16", True)[1] == 0


# --- CUDA -----------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cuda_backends_match_cpu(backend):
    if backend == "triton" and not triton_available():
        pytest.skip("needs triton")
    model = msdnet(3, 4, depth=100)
    x = torch.randn(2, 3, 131, 257)
    ref = reference(model, x)
    fast = FastMSDNet(model, backend=backend).cuda()
    assert_matches(fast(x.cuda(), logits=True).cpu(), ref, rtol=1e-4)
    half = FastMSDNet(model.half(), backend=backend).cuda()
    out = half(x.cuda().half(), logits=True).float().cpu()
    torch.testing.assert_close(out, ref, atol=0.02 * float(ref.abs().max()), rtol=0)


# --- the eager engine uses it ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def msd_bundle(tmp_path_factory):
    model = msdnet(n_inputs=2, n_classes=3, depth=10, dilations=(1, 2, 3))
    path = tmp_path_factory.mktemp("models") / "msd"
    save_bundle(model, path, CARD)
    return path


class TestEagerMSD(EngineContract):
    """The engine contract on an MSD-net bundle, which the eager engine runs with FastMSDNet."""

    @pytest.fixture(scope="class")
    def engine(self, msd_bundle):
        return make_engine("eager", msd_bundle, device="cpu")

    def test_uses_the_fast_module(self, engine):
        assert isinstance(engine.model, FastMSDNet)
        assert "FastMSDNet" in repr(engine)

    def test_same_result_as_the_plain_module(self, engine, msd_bundle):
        model, _ = load_bundle(msd_bundle)
        batch = self.batch(engine, 3, 33, 47)
        with torch.no_grad():
            plain = model(batch)
        torch.testing.assert_close(engine.predict(batch), plain, atol=1e-6, rtol=1e-5)

    @pytest.mark.parametrize("options", [{"dtype": "bfloat16"}, {"channels_last": True}])
    def test_options_agree_with_float32(self, engine, msd_bundle, options):
        other = make_engine("eager", msd_bundle, device="cpu", **options)
        batch = self.batch(engine)
        atol = 0.05 if options.get("dtype") == "bfloat16" else 1e-5
        torch.testing.assert_close(other.predict(batch), engine.predict(batch), atol=atol, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_eager_cuda_msd_agrees_with_cpu(msd_bundle, dtype):
    cpu = make_engine("eager", msd_bundle, device="cpu")
    gpu = make_engine("eager", msd_bundle, device="cuda", dtype=dtype)
    batch = torch.randn(2, 2, 40, 48)
    atol = 1e-4 if dtype == "float32" else 0.02
    torch.testing.assert_close(gpu.predict(batch).cpu(), cpu.predict(batch), atol=atol, rtol=0)
