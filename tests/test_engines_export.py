"""Engines beyond eager: onnxruntime (checked against eager), compiled, tensorrt, the engine cache,
``auto``'s choice, ``etem engine`` and the deploy config example."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from etem.tracker.cli import main
from etem.tracker.engines import available_kinds, make_engine
from etem.tracker.engines.cache import EngineCache, default_cache_dir, model_digest
from etem.tracker.errors import ConfigError, EngineUnavailable
from etem.train.bundle import save_bundle
from etem.train.networks import FusionNet, MSDNet, UNet

from test_engines import CARD, EngineContract

ort = pytest.importorskip("onnxruntime", reason="the onnxruntime engine needs onnxruntime")

CUDA = torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[1]


def _randomize_batchnorm(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


NETWORKS = {
    "fusionnet": lambda: FusionNet(n_inputs=2, n_classes=3, width=4, depth=3),
    "fusionnet-unshuffle": lambda: FusionNet(n_inputs=2, n_classes=3, width=4, depth=2, unshuffle=2),
    "unet": lambda: UNet(n_inputs=2, n_classes=3, width=4, depth=2),
    "msdnet": lambda: MSDNet(n_inputs=2, n_classes=3, depth=8, width=2, dilations=(1, 2, 3)),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """One small bundle per architecture, with non-trivial batch-norm statistics."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for i, (arch, build) in enumerate(NETWORKS.items()):
        torch.manual_seed(i)
        out[arch] = save_bundle(_randomize_batchnorm(build()), folder / arch, CARD)[1]
    return out


@pytest.fixture(scope="module")
def bundle(bundles):
    return bundles["fusionnet"]


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def _pristine(bundle, tmp_path_factory):
    """A cache holding the fusionnet bundle's ONNX graph (exported once for the module)."""
    root = tmp_path_factory.mktemp("pristine")
    assert not make_engine("onnxruntime", bundle, device="cpu", cache_dir=root).cache_hit
    return root


@pytest.fixture
def warm_cache(_pristine, cache_dir):
    """A copy of the pristine cache, for a test to use and spoil."""
    import shutil

    shutil.copytree(_pristine, cache_dir)
    return cache_dir


def _batch(b, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, h, w, generator=g)


# --- onnxruntime -----------------------------------------------------------------------------

class TestOnnxRuntimeCPU(EngineContract):
    @pytest.fixture(scope="class")
    def engine(self, bundle, _pristine):
        return make_engine("onnxruntime", bundle, device="cpu", cache_dir=_pristine)

    def test_card_fields(self, engine):
        assert engine.name == "onnxruntime"
        assert engine.n_inputs == 2 and engine.class_names == ("Au", "C") and engine.sampling == 0.12
        assert engine.card["normalization"] == CARD["normalization"]

    def test_output_is_an_ordinary_tensor(self, engine):
        probs = engine.predict(_batch(1))
        assert not probs.is_inference() and not probs.requires_grad
        probs[:, 0] = 0

    def test_wrong_channel_count(self, engine):
        with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
            engine.predict(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("arch", list(NETWORKS))
@pytest.mark.parametrize("b", [1, 3])
def test_onnxruntime_matches_eager(bundles, arch, b, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / f"cache-{arch}"  # one export per architecture
    eager = make_engine("eager", bundles[arch], device="cpu")
    onnx = make_engine("onnxruntime", bundles[arch], device="cpu", cache_dir=cache)
    for size in [(40, 48), (37, 53)]:  # a size the U-Nets must pad, as a dynamic axis
        batch = _batch(b, *size, seed=b)
        torch.testing.assert_close(onnx.predict(batch), eager.predict(batch), atol=1e-4, rtol=0)


def test_second_engine_hits_the_cache(bundle, cache_dir, caplog):
    first = make_engine("onnxruntime", bundle, device="cpu", cache_dir=cache_dir)
    assert not first.cache_hit and first.cache_path.is_file() and first.cache_path.is_relative_to(cache_dir)
    stamp = first.cache_path.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="etem.engine")
    second = make_engine("onnxruntime", bundle, device="cpu", cache_dir=cache_dir)
    assert second.cache_hit and second.cache_path == first.cache_path
    assert second.cache_path.stat().st_mtime_ns == stamp  # not exported again
    assert not any("building" in r.getMessage() for r in caplog.records)
    assert len(EngineCache(cache_dir).entries()) == 1


def test_cache_dir_from_environment(bundle, warm_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ETEM_CACHE_DIR", str(warm_cache))
    engine = make_engine("onnxruntime", bundle, device="cpu")
    assert engine.cache_hit and engine.cache_path.is_relative_to(warm_cache)
    assert default_cache_dir(tmp_path / "option") == tmp_path / "option"  # the option wins


def test_default_cache_dir_is_the_user_cache(monkeypatch):
    monkeypatch.delenv("ETEM_CACHE_DIR", raising=False)
    root = default_cache_dir()
    assert root.name == "etem-tracker" and root.is_absolute()


def _corrupt_artifact(engine):
    engine.cache_path.write_bytes(b"not an onnx graph")


def _consistent_garbage(engine):
    """Garbage whose entry.json agrees with it: only loading it shows that it is bad."""
    import hashlib

    data = b"\x08\x07garbage that onnxruntime cannot parse"
    engine.cache_path.write_bytes(data)
    meta_path = engine.cache_path.parent / "entry.json"
    meta = json.loads(meta_path.read_text())
    meta.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    meta_path.write_text(json.dumps(meta))


def _foreign_key(engine):
    meta_path = engine.cache_path.parent / "entry.json"
    meta = json.loads(meta_path.read_text())
    meta["key"]["torch"] = "0.0.1"
    meta_path.write_text(json.dumps(meta))


def _broken_entry_json(engine):
    (engine.cache_path.parent / "entry.json").write_text('{"format": "etem-engine-cache/1", "key": ')


@pytest.mark.parametrize("damage, says", [
    (_corrupt_artifact, "does not match its recorded size and sha256"),
    (_consistent_garbage, "cannot be loaded"),
    (_foreign_key, "built from something else"),
    (_broken_entry_json, "unreadable"),
])
def test_damaged_cache_entry_is_rebuilt(bundle, warm_cache, caplog, damage, says):
    first = make_engine("onnxruntime", bundle, device="cpu", cache_dir=warm_cache)
    assert first.cache_hit
    damage(first)
    caplog.set_level(logging.WARNING, logger="etem.engine.cache")
    again = make_engine("onnxruntime", bundle, device="cpu", cache_dir=warm_cache)
    assert not again.cache_hit
    assert any(says in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
    torch.testing.assert_close(again.predict(_batch(1)), make_engine("eager", bundle, device="cpu").predict(_batch(1)),
                               atol=1e-4, rtol=0)
    assert make_engine("onnxruntime", bundle, device="cpu", cache_dir=warm_cache).cache_hit


def test_model_digest_covers_weights_and_card():
    torch.manual_seed(0)
    model = FusionNet(2, 3, width=4, depth=1)
    base = model_digest(model, CARD)
    assert model_digest(model, dict(CARD)) == base
    assert model_digest(model, {**CARD, "sampling_A": 0.13}) != base
    with torch.no_grad():
        model.head.bias[0] += 1e-3
    assert model_digest(model, CARD) != base


def test_cache_list_and_clear_touch_only_entries(warm_cache):
    cache_dir = warm_cache
    (cache_dir / "notes.txt").write_text("mine")
    (cache_dir / "onnx" / "not-an-entry").mkdir()
    cache = EngineCache(cache_dir)
    [entry] = cache.entries()
    assert entry.kind == "onnx" and entry.key["profile"]["height"] == "dynamic" and entry.size > 0
    assert cache.clear() == 1
    assert cache.entries() == [] and (cache_dir / "notes.txt").exists() and (cache_dir / "onnx" / "not-an-entry").is_dir()
    with pytest.raises(ValueError, match="kind must be one of"):
        cache.clear("pickles")


def test_threads_option(bundle, warm_cache):
    cache_dir = warm_cache
    engine = make_engine("onnxruntime", bundle, device="cpu", cache_dir=cache_dir, threads=1)
    assert engine.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ConfigError, match="threads must be a non-negative integer"):
        make_engine("onnxruntime", bundle, device="cpu", cache_dir=cache_dir, threads=-2)


def test_unknown_option_lists_the_engines_options(bundle):
    with pytest.raises(ConfigError, match="no option 'dtype'.*threads, cache_dir, opset"):
        make_engine("onnxruntime", bundle, device="cpu", dtype="float16")


@pytest.mark.skipif(CUDA, reason="checks the error where no CUDA GPU is present")
def test_onnxruntime_cuda_without_gpu(bundle, cache_dir):
    with pytest.raises(EngineUnavailable, match="CUDA"):
        make_engine("onnxruntime", bundle, device="cuda", cache_dir=cache_dir)


# --- auto ------------------------------------------------------------------------------------

def test_auto_on_cpu_picks_onnxruntime_and_logs(bundle, caplog):
    caplog.set_level(logging.INFO, logger="etem.engine")
    engine = make_engine("auto", bundle, device="cpu", dtype="float32")
    assert available_kinds("cpu") == ["onnxruntime", "eager"]
    assert engine.name == "onnxruntime"
    said = [r.getMessage() for r in caplog.records if "'auto' chose" in r.getMessage()]
    assert said and "'onnxruntime'" in said[0] and "left out: dtype" in said[0]


def test_auto_on_cpu_runs_an_msdnet_in_torch(bundles, caplog):
    """MSD-net's own inference path beats its exported graph under onnxruntime on the CPU."""
    caplog.set_level(logging.INFO, logger="etem.engine")
    assert make_engine("auto", bundles["msdnet"], device="cpu").name == "eager"
    assert make_engine("auto", bundles["unet"], device="cpu").name == "onnxruntime"


def test_auto_rejects_an_option_no_engine_takes(bundle):
    with pytest.raises(ConfigError, match="no engine takes the option.*'colour'"):
        make_engine("auto", bundle, device="cpu", colour="red")


# --- tensorrt --------------------------------------------------------------------------------

def _tensorrt_imports() -> bool:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


@pytest.mark.skipif(_tensorrt_imports(), reason="checks the message where tensorrt is not installed")
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_tensorrt_missing_says_what_to_install(bundle, device):
    with pytest.raises(EngineUnavailable, match="pip install tensorrt") as info:
        make_engine("tensorrt", bundle, device=device)
    assert "CUDA GPU" in str(info.value) and "'compiled'" in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and _tensorrt_imports()), reason="needs a CUDA GPU and TensorRT")
def test_tensorrt_matches_eager_and_caches_plans(bundles, cache_dir):
    for arch, path in bundles.items():
        trt = make_engine("tensorrt", path, device="cuda", cache_dir=cache_dir, max_batch=4, shape=(40, 48))
        eager = make_engine("eager", path, device="cpu")
        for b in (1, 3, 6):  # 6 > max_batch: run in parts
            batch = _batch(b, seed=b)
            torch.testing.assert_close(trt.predict(batch).cpu(), eager.predict(batch), atol=0.02, rtol=0)
        again = make_engine("tensorrt", path, device="cuda", cache_dir=cache_dir, max_batch=4, shape=(40, 48))
        assert again.plan_for(40, 48).entry.hit and again.cache_path == trt.cache_path


# --- compiled --------------------------------------------------------------------------------

def test_compiled_defaults_on_cpu(bundle, cache_dir):
    engine = make_engine("compiled", bundle, device="cpu", cache_dir=cache_dir)
    assert engine.name == "compiled" and engine.device.type == "cpu"
    assert engine.dtype == torch.float32 and engine.mode == "default" and not engine.aot
    assert not engine.fixed_batch  # no CUDA graphs: batches of any size run as they come
    assert "CompiledEngine(" in repr(engine)
    with pytest.raises(ConfigError, match="mode must be one of"):
        make_engine("compiled", bundle, device="cpu", mode="fastest")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fusionnet", "msdnet"])
def test_compiled_matches_eager_on_cpu(bundles, arch, cache_dir):
    # torch.compile on the CPU generates and builds C++: a minute or more on a small machine.
    compiled = make_engine("compiled", bundles[arch], device="cpu", cache_dir=cache_dir, dynamic=True)
    eager = make_engine("eager", bundles[arch], device="cpu")
    for b, size in [(2, (40, 48)), (3, (37, 53))]:
        batch = _batch(b, *size)
        torch.testing.assert_close(compiled.predict(batch), eager.predict(batch), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_compiled_aot_package_is_cached(bundle, cache_dir):
    # torch.export + AOTInductor: minutes on a small CPU; the package then loads in milliseconds.
    built = make_engine("compiled", bundle, device="cpu", cache_dir=cache_dir, aot=True)
    assert built.aot and not built.cache_entry.hit and built.cache_path.suffix == ".pt2"
    again = make_engine("compiled", bundle, device="cpu", cache_dir=cache_dir)  # aot=None: use the package
    assert again.aot and again.cache_entry.hit
    eager = make_engine("eager", bundle, device="cpu")
    batch = _batch(3, 37, 53)
    torch.testing.assert_close(again.predict(batch), eager.predict(batch), atol=1e-4, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_compiled_cuda_graphs_float16(bundle):
    compiled = make_engine("compiled", bundle, device="cuda")
    assert compiled.dtype == torch.float16 and compiled.cuda_graphs and compiled.fixed_batch
    eager = make_engine("eager", bundle, device="cpu")
    for b in (2, 2, 3):  # the same shape twice: the second replays the graph
        batch = _batch(b)
        torch.testing.assert_close(compiled.predict(batch).cpu(), eager.predict(batch), atol=0.02, rtol=0)


# --- etem engine ---------------------------------------------------------------------------

def test_cli_build_list_clear(bundle, warm_cache, capsys):
    cache_dir = warm_cache
    assert main(["engine", "build", str(bundle), "--engine", "onnxruntime", "--shape", "32", "40",
                 "--batch", "2", "--device", "cpu", "--cache-dir", str(cache_dir)]) == 0
    out, err = capsys.readouterr()
    path = Path(out.strip())
    assert path.is_file() and path.is_relative_to(cache_dir) and "found in the cache" in err
    assert main(["engine", "list", "--cache-dir", str(cache_dir)]) == 0
    out, _ = capsys.readouterr()
    assert str(path) in out and "onnx" in out
    assert main(["engine", "clear", "--cache-dir", str(cache_dir)]) == 0
    assert "removed 1" in capsys.readouterr().out and not path.exists()


def test_cli_build_errors(bundle, cache_dir, capsys):
    assert main(["engine", "build", str(bundle), "--engine", "tensorrt", "--cache-dir", str(cache_dir)]) == 2
    assert "--shape" in capsys.readouterr().err
    assert main(["engine", "build", str(cache_dir / "missing"), "--engine", "onnxruntime",
                 "--cache-dir", str(cache_dir)]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["engine", "build", str(bundle), "--engine", "openvino"])


def test_cli_find_with_onnxruntime(bundle, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "img.npy", np.random.default_rng(0).poisson(50, (2, 48, 40)).astype(np.float32))
    assert main(["find", str(tmp_path / "img.npy"), "--model", str(bundle), "--engine", "onnxruntime",
                 "--focal", "2", "--device", "cpu", "--sampling", "0.12", "-o", str(tmp_path / "cols.csv")]) == 0
    assert (tmp_path / "cols.csv").exists()


# --- deploy ----------------------------------------------------------------------------------

def test_deploy_config_example_loads():
    from etem.tracker.config import load_config

    from etem.train.bundle import load_bundle

    cfg = load_config(ROOT / "deploy" / "track.toml")
    assert cfg.engine.kind in ("auto", "tensorrt", "compiled", "onnxruntime", "eager")
    assert cfg.overflow == "drop" and cfg.batch.max_batch <= cfg.engine.options["max_batch"]
    load_bundle(cfg.engine.model)  # the model it names exists


def test_the_service_units_command_is_one_etem_takes_and_restarts_after_each_acquisition():
    """deploy/etem-track.service's ExecStart parses as `etem` options (a renamed or dropped
    option would stop the service at the microscope), and the unit starts again after a run
    the camera's end of stream ended (exit 0: on-failure left the service down)."""
    import re
    import shlex

    from etem.tracker.cli_parser import build_parser

    unit = (ROOT / "deploy" / "etem-track.service").read_text()
    start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit.replace("\\\n", " "), re.M).group(1)
    inner = shlex.split(start)[2]  # /bin/sh -c '...'
    argv = shlex.split(inner.replace("$ETEM_LISTEN", "tcp://camera:5555").replace("$$(date +%%Y%%m%%d-%%H%%M%%S)", "x"))
    assert argv[:2] == ["exec", "/opt/etem/venv/bin/etem"]
    args = build_parser().parse_args(argv[2:])
    assert args.command == "track" and args.output.name == "run-x.h5" and not args.quiet
    assert re.search(r"^Restart=always$", unit, re.M)


def test_engine_options_from_config(tmp_path, bundle):
    from etem.tracker.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(f'[engine]\nkind = "onnxruntime"\nmodel = "{bundle}"\noptions = {{threads = 1}}\n')
    assert load_config(path).engine.options == {"threads": 1}
    path.write_text('[engine]\noptions = "threads=1"\n')
    with pytest.raises(ConfigError, match=r"^\[engine\] options must be a table"):
        load_config(path)


@pytest.mark.slow
def test_build_engines_script(bundle, tmp_path):
    import shutil
    import subprocess
    import sys

    etem = Path(sys.executable).with_name("etem")
    if not etem.exists() or shutil.which("bash") is None:
        pytest.skip("needs bash and the installed etem command")
    env = {**os.environ, "ETEM": str(etem), "ETEM_CACHE_DIR": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    script = ROOT / "deploy" / "build_engines.sh"
    done = subprocess.run([str(script), str(bundle), "40", "48"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    [entry] = EngineCache(tmp_path / "cache").entries()
    assert entry.kind == "onnx" and str(entry.path) in done.stdout
    bad = subprocess.run([str(script), str(bundle)], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr
    # INT8=1 also builds the int8 graph (a bundled model: it brings calibration images)
    env["ETEM_CACHE_DIR"] = str(tmp_path / "cache8")
    done = subprocess.run([str(script), "haadf-stem", "64", "64"], env={**env, "INT8": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(e.key.get("precision") for e in EngineCache(tmp_path / "cache8").entries()) == ["float32", "int8"]
