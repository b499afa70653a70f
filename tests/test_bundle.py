"""Model bundles: safetensors weights + JSON card, verified on load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from etem.tracker.errors import ModelError
from etem.train import bundle as bundle_module
from etem.train.bundle import FORMAT, bundled_models, load_bundle, save_bundle
from etem.train.networks import FusionNet, MSDNet, UNet, build_network

CARD = {
    "inputs": [-50.0, 0.0, 50.0],
    "class_names": ["Mo", "S2", "S"],
    "sampling_A": 0.1,
    "normalization": {"method": "local", "sigma_A": 12.0},
    "training": {"data": "simulated MoS2 focal series", "epochs": 0},
    "evaluation": {"f1": None},
}


def make(arch: str = "fusionnet") -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"fusionnet": {"width": 4}, "unet": {"width": 4}, "msdnet": {"depth": 6}}[arch]
    model = build_network(arch, n_inputs=3, n_classes=4, **kwargs)
    with torch.no_grad():  # non-trivial batch-norm statistics, so that they must round-trip too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = make()
    save_bundle(model, tmp_path / "mos2", CARD)
    return model, tmp_path / "mos2"


@pytest.mark.parametrize("arch", ["fusionnet", "unet", "msdnet"])
def test_round_trip_gives_identical_outputs(tmp_path, arch):
    model = make(arch)
    weights, card_path = save_bundle(model, tmp_path / "m", CARD)
    assert (weights.name, card_path.name) == ("m.safetensors", "m.json")
    assert weights.stat().st_mode & 0o777 == card_path.stat().st_mode & 0o777  # (not the owner's alone)
    loaded, card = load_bundle(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    x = torch.randn(2, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for key, value in CARD.items():
        assert card[key] == value
    assert card["arch"] == arch and card["format"] == FORMAT and card["name"] == "m"
    assert card["arch_args"] == model.arch_args


@pytest.mark.parametrize("suffix", ["", ".json", ".safetensors"])
def test_path_with_or_without_suffix(saved, suffix):
    _, base = saved
    loaded, card = load_bundle(str(base) + suffix)
    assert isinstance(loaded, FusionNet) and card["name"] == "mos2"


def test_card_fields(saved):
    _, base = saved
    card = json.loads(base.with_suffix(".json").read_text())
    assert set(card) == {"name", "arch", "arch_args", "inputs", "class_names", "sampling_A",
                         "normalization", "training", "evaluation", "sha256", "format"}
    assert len(card["inputs"]) == card["arch_args"]["n_inputs"]
    assert len(card["class_names"]) == card["arch_args"]["n_classes"] - 1


def test_no_pickle_only_safetensors_and_json(saved):
    _, base = saved
    files = sorted(p.name for p in base.parent.iterdir())
    assert files == ["mos2.json", "mos2.safetensors"]
    raw = base.with_suffix(".safetensors").read_bytes()
    # safetensors: 8-byte little-endian header length, then a JSON header, then raw tensor bytes
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"]["format"] == FORMAT
    assert all(set(v) == {"dtype", "shape", "data_offsets"} for k, v in header.items() if k != "__metadata__")
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # neither pickle nor torch zip
    json.loads(base.with_suffix(".json").read_text())


def test_load_to_device(saved):
    model, card = load_bundle(saved[1], device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_tampered_weights(saved):
    _, base = saved
    weights = base.with_suffix(".safetensors")
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="modified or is corrupt"):
        load_bundle(base)


def _edit_card(base: Path, **changes) -> None:
    path = base.with_suffix(".json")
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def test_unknown_arch(saved):
    _edit_card(saved[1], arch="resnet")
    with pytest.raises(ModelError, match="resnet"):
        load_bundle(saved[1])


def test_wrong_arch(saved):
    _edit_card(saved[1], arch="unet")  # same arguments, different layers
    with pytest.raises(ModelError, match="do not fit"):
        load_bundle(saved[1])


def test_shape_mismatch(saved):
    card = json.loads(saved[1].with_suffix(".json").read_text())
    _edit_card(saved[1], arch_args={**card["arch_args"], "width": 8})
    with pytest.raises(ModelError, match="do not fit"):
        load_bundle(saved[1])


def test_card_inconsistent_with_network(saved):
    _edit_card(saved[1], class_names=["Mo"])
    with pytest.raises(ModelError, match="foreground classes"):
        load_bundle(saved[1])


def test_wrong_format(saved):
    _edit_card(saved[1], format="something-else/3")
    with pytest.raises(ModelError, match="etem-model/1"):
        load_bundle(saved[1])


@pytest.mark.parametrize("missing", [".json", ".safetensors"])
def test_missing_file_names_the_path(saved, missing):
    path = saved[1].with_suffix(missing)
    path.unlink()
    with pytest.raises(ModelError, match="not found") as info:
        load_bundle(saved[1])
    assert str(path) in str(info.value)


def test_save_checks_card(tmp_path):
    model = make()
    with pytest.raises(ModelError, match="inputs"):
        save_bundle(model, tmp_path / "m", {**CARD, "inputs": [0.0]})
    with pytest.raises(ModelError, match="lacks sampling_A"):
        save_bundle(model, tmp_path / "m", {k: v for k, v in CARD.items() if k != "sampling_A"})
    with pytest.raises(ModelError, match="arch"):
        save_bundle(model, tmp_path / "m", {**CARD, "arch": "unet"})
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_foreign_module(tmp_path):
    with pytest.raises(ModelError, match="build_network"):
        save_bundle(torch.nn.Conv2d(3, 4, 1), tmp_path / "m", CARD)


def test_bundled_models_is_a_dict():
    models = bundled_models()
    assert isinstance(models, dict)
    assert all(isinstance(p, Path) and p.suffix == ".json" for p in models.values())


def test_bare_name_resolves_in_package_folder(tmp_path, monkeypatch):
    save_bundle(make("msdnet"), tmp_path / "mos2-msd", CARD)
    monkeypatch.setattr(bundle_module, "_models_folder", lambda: tmp_path)
    assert bundled_models() == {"mos2-msd": tmp_path / "mos2-msd.json"}
    model, card = load_bundle("mos2-msd")
    assert isinstance(model, MSDNet) and card["name"] == "mos2-msd"


def test_auto_choice_among_several_fitting_models_is_the_best_held_out(tmp_path, monkeypatch):
    from etem.train.bundle import choose_model

    monkeypatch.setattr(bundle_module, "_models_folder", lambda: tmp_path)
    use = {"imaging": "hrtem", "materials": ["mos2"], "task": "columns"}

    def heldout(name, f1s):
        rows = [{"method": name, "dose": d, "f1": f} for d, f in zip((100.0, 1000.0), f1s)]
        rows += [{"method": "classical", "dose": 100.0, "f1": 0.99}, {"method": name, "dose": None, "f1": 0.0}]
        return {"table": rows}

    save_bundle(make("msdnet"), tmp_path / "a-msd", {**CARD, "use": use, "heldout": heldout("a-msd", (0.6, 0.8))})
    save_bundle(make("unet"), tmp_path / "b-unet", {**CARD, "use": use, "heldout": heldout("b-unet", (0.8, 0.9))})
    assert choose_model("mos2", "hrtem", n_inputs=3) == "b-unet"  # mean 0.85 against 0.70; classical rows ignored
    save_bundle(make("unet"), tmp_path / "c-unet", {**CARD, "use": use, "evaluation": {"f1": 0.95}})
    assert choose_model("mos2", "hrtem", n_inputs=3) == "c-unet"  # no held-out table: its training F1
    assert choose_model("mos2", "hrtem", n_inputs=1) is None
    assert choose_model("au", "hrtem", n_inputs=3) is None


def test_unknown_bare_name_lists_bundled(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_module, "_models_folder", lambda: tmp_path)
    save_bundle(make("unet"), tmp_path / "gold", CARD)
    with pytest.raises(ModelError, match="no bundled model named 'silver'.*'gold'"):
        load_bundle("silver")
    assert isinstance(load_bundle("gold")[0], UNet)


def test_a_users_model_without_trust_ranges_is_said_so(saved, tmp_path, capsys):
    """A freshly trained model has no trust ranges, so the tracker judges no frame out of range:
    the line the tracker prints says so and how to measure them; a card with them, a bundled
    model and the classical locator get no line."""
    import io

    from etem.train.bundle import missing_trust_note, say_missing_trust, update_card

    _, base = saved
    note = missing_trust_note(str(base))
    assert note.startswith("no trust ranges in the card") and f"etem evaluate {base} WAVES.h5 --sweep --write-card" in note
    out = io.StringIO()
    say_missing_trust(str(base) + ".json", out)
    assert out.getvalue().count("\n") == 1 and "no trust ranges" in out.getvalue()
    for model in (None, "auto", "classical", "au-hrtem", str(tmp_path / "none")):
        assert missing_trust_note(model) is None
    # ... as etem find and etem replay say it, once
    import numpy as np

    from etem.tracker.cli import main

    np.save(tmp_path / "img.npy", np.random.default_rng(0).normal(100, 10, (3, 64, 64)).astype(np.float32))
    for cmd in (["find", str(tmp_path / "img.npy"), str(tmp_path / "img.npy"), "-o", str(tmp_path / "c.csv")],
                ["replay", str(tmp_path / "img.npy"), "--quiet", "-o", str(tmp_path / "run.h5")]):
        assert main([*cmd, "--model", str(base), "--focal", "3", "--sampling", "0.1"]) in (0, 1)
        said = capsys.readouterr().out
        assert said.count("no trust ranges in the card of") == 1, said
    update_card(base, {"trust": {"snr_min": 1.0}})
    assert missing_trust_note(base) is None
