"""Engines: one protocol test class subclassed per backend, and the factory's choices and errors."""
from __future__ import annotations

import logging

import pytest
import torch

from etem.tracker.engines import ENGINE_KINDS, Engine, make_engine, resolve_device
from etem.tracker.errors import ConfigError, EngineUnavailable, ModelError
from etem.train.bundle import load_bundle, save_bundle
from etem.train.networks import FusionNet

CUDA = torch.cuda.is_available()

CARD = {
    "inputs": [-40.0, 0.0],
    "class_names": ["Au", "C"],
    "sampling_A": 0.12,
    "normalization": {"method": "local", "sigma_A": 12.0},
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A small FusionNet bundle with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = FusionNet(n_inputs=2, n_classes=3, width=4, depth=3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("models") / "toy"
    save_bundle(model, path, CARD)
    return path


class EngineContract:
    """What every engine must do. Subclasses provide the ``engine`` fixture and ``device``."""

    device = "cpu"

    def batch(self, engine, b=2, h=40, w=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(b, engine.n_inputs, h, w, generator=g)

    def test_follows_protocol(self, engine):
        assert isinstance(engine, Engine)
        assert isinstance(engine.name, str) and engine.name
        assert engine.device.type == self.device
        assert engine.n_inputs >= 1
        assert all(isinstance(c, str) for c in engine.class_names)
        assert engine.sampling is None or engine.sampling > 0

    @pytest.mark.parametrize("size", [(40, 48), (37, 53)])
    def test_probability_maps(self, engine, size):
        probs = engine.predict(self.batch(engine, 2, *size))
        assert probs.shape == (2, len(engine.class_names) + 1, *size)
        assert probs.dtype == torch.float32
        assert probs.device.type == self.device
        assert float(probs.min()) >= 0 and float(probs.max()) <= 1
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, *size, device=probs.device))

    def test_batch_from_cpu_and_other_dtype(self, engine):
        probs = engine.predict(self.batch(engine, 1).double())
        assert probs.device.type == self.device and probs.dtype == torch.float32

    def test_batch_elements_are_independent(self, engine):
        batch = self.batch(engine, 3)
        together = engine.predict(batch)
        alone = engine.predict(batch[1:2])
        torch.testing.assert_close(together[1:2], alone, atol=1e-4, rtol=1e-4)


class TestClassical(EngineContract):
    @pytest.fixture(scope="class")
    def engine(self):
        classical = pytest.importorskip("etem.tracker.classical")
        return classical.ClassicalEngine(column_sigma_px=2.0, contrast="bright", device="cpu")


class TestEagerCPU(EngineContract):
    @pytest.fixture(scope="class")
    def engine(self, bundle):
        return make_engine("eager", bundle, device="cpu")

    def test_matches_the_network(self, engine, bundle):
        model, _ = load_bundle(bundle)
        batch = self.batch(engine)
        with torch.no_grad():
            reference = model(batch)
        torch.testing.assert_close(engine.predict(batch), reference, atol=1e-5, rtol=1e-4)

    def test_card_fields(self, engine):
        assert engine.name == "eager"
        assert engine.n_inputs == 2 and engine.class_names == ("Au", "C") and engine.sampling == 0.12

    def test_output_is_an_ordinary_tensor(self, engine):
        probs = engine.predict(self.batch(engine, 1))
        assert not probs.is_inference() and not probs.requires_grad
        probs[:, 0] = 0  # later stages may edit it in place

    def test_wrong_channel_count(self, engine):
        with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
            engine.predict(torch.zeros(1, 3, 16, 16))

    @pytest.mark.parametrize("options", [{"dtype": "bfloat16"}, {"channels_last": True}])
    def test_options_agree_with_float32(self, engine, bundle, options):
        other = make_engine("eager", bundle, device="cpu", **options)
        batch = self.batch(engine)
        atol = 0.05 if options.get("dtype") == "bfloat16" else 1e-5
        torch.testing.assert_close(other.predict(batch), engine.predict(batch), atol=atol, rtol=0)

    def test_float16_needs_cuda(self, bundle):
        with pytest.raises(ConfigError, match="float16.*CUDA"):
            make_engine("eager", bundle, device="cpu", dtype="float16")

    def test_unknown_dtype(self, bundle):
        with pytest.raises(ConfigError, match="'bfloat16', 'float16', 'float32'"):
            make_engine("eager", bundle, device="cpu", dtype="int8")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
class TestEagerCUDA(EngineContract):
    device = "cuda"

    @pytest.fixture(scope="class")
    def engine(self, bundle):
        return make_engine("eager", bundle, device="cuda")

    @pytest.mark.parametrize("options", [{"dtype": "float16"}, {"dtype": "float16", "channels_last": True},
                                         {"dtype": "bfloat16"}])
    def test_reduced_precision_agrees_with_cpu(self, bundle, options):
        cpu = make_engine("eager", bundle, device="cpu")
        gpu = make_engine("eager", bundle, device="cuda", **options)
        batch = self.batch(cpu)
        torch.testing.assert_close(gpu.predict(batch).cpu(), cpu.predict(batch), atol=0.05, rtol=0)


# --- the factory ---------------------------------------------------------------------------------

def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ConfigError, match="kind must be one of") as info:
        make_engine("openvino")
    for kind in ENGINE_KINDS:
        assert repr(kind) in str(info.value)


def test_auto_with_model_picks_the_best_available_and_logs(bundle, caplog):
    from etem.tracker.engines import available_kinds

    caplog.set_level(logging.INFO, logger="etem.engine")
    engine = make_engine("auto", bundle, device="cpu")
    assert engine.name == available_kinds("cpu")[0] and engine.name in ("onnxruntime", "eager")
    assert any(f"'{engine.name}'" in r.getMessage() and r.name == "etem.engine" for r in caplog.records)


def test_auto_without_model_is_classical_and_logged(caplog):
    pytest.importorskip("etem.tracker.classical")
    caplog.set_level(logging.INFO, logger="etem.engine")
    engine = make_engine(device="cpu", contrast="dark")
    assert isinstance(engine, Engine)
    assert any("'classical'" in r.getMessage() for r in caplog.records)


def test_eager_needs_a_model():
    with pytest.raises(ConfigError, match="needs a model"):
        make_engine("eager")


def test_classical_takes_no_model(bundle):
    with pytest.raises(ConfigError, match="uses no model"):
        make_engine("classical", bundle)


def test_unknown_option(bundle):
    with pytest.raises(ConfigError, match="no option 'contrast'.*dtype, channels_last"):
        make_engine("eager", bundle, contrast="dark")


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        make_engine("eager", tmp_path / "nothing", device="cpu")


def test_device_auto():
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("gpu0")


@pytest.mark.skipif(CUDA, reason="checks the error where no CUDA GPU is present")
def test_cuda_without_gpu(bundle):
    with pytest.raises(EngineUnavailable, match="CUDA"):
        make_engine("eager", bundle, device="cuda")
    with pytest.raises(EngineUnavailable, match="no CUDA GPU; use the CPU"):  # (the classical locator too)
        make_engine("classical", device="cuda")
