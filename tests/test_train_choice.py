"""Training: what chooses the weights a run keeps and its threshold (validation images, frames
of simulated movies, F1 or F1 x class accuracy)."""
import numpy as np
import pytest

from etem.train.bundle import load_bundle
from etem.train.loop import train
from test_train import _tiny, wave_set  # noqa: F401 (wave_set: a fixture)


def test_frames_of_simulated_movies_choose_the_weights_and_threshold(wave_set, tmp_path):
    """`TrainConfig.validate_movies` (`etem train --validate MOVIE`): the F1 on frames of a
    simulated movie, not on the wave set's validation images, picks the weights kept and the
    threshold; the wave set's scores are kept beside it; the card names the movies."""
    from etem.simulate.movie_io import save_movie
    from etem.simulate.toy import make_movie
    from etem.train.loop import THRESHOLDS, evaluate_model
    from etem.train.validation import movie_validation

    movie = make_movie(n_frames=6, shape=(96, 96), particle_radius_A=6.0, seed=4)
    save_movie(movie, tmp_path / "scene.h5")
    cfg = _tiny(steps=4, validate_every=1, n_validation=3, validate_movies=(str(tmp_path / "scene.h5"),))
    card = train(wave_set, tmp_path / "chosen", cfg)
    h = card["training"]["history"]
    assert all({"f1", "movie_f1", "select_f1"} <= set(r) for r in h) and all(r["select_f1"] == r["movie_f1"] for r in h)
    m = card["evaluation"]["movie_validation"]
    assert m["movies"] == ["scene.h5"] and m["frames"] == 3
    assert card["training"]["config"]["validate_movies"] == ["scene.h5"]  # names, not paths
    # the kept weights are those of the best movie F1
    model, _ = load_bundle(tmp_path / "chosen")
    images, truth = movie_validation([tmp_path / "scene.h5"], cfg)
    assert images.shape == (3, 1, 96, 96) and sorted(set(truth["frame"])) == [0, 1, 2]
    assert len(truth) == sum((movie.truth.positions["frame"] == i).sum() for i in (0, 2, 5))
    best = max(r["select_f1"] for r in h)
    assert evaluate_model(model, images, truth, 0.2)["f1"] == pytest.approx(best)
    # the threshold is the movie scan's best
    f1 = {r["threshold"]: (r["f1"] if r["f1"] is not None else -1) for r in m["threshold_scan"]}
    assert [r["threshold"] for r in m["threshold_scan"]] == list(THRESHOLDS)
    assert f1[card["threshold"]] == max(f1.values()) or (card["threshold"] == 0.5 and max(f1.values()) < f1[0.5] + 0.01)
    # a focal-series network cannot be validated on single-image frames; a file that is no movie is refused
    with pytest.raises(Exception, match="hold 1 image"):
        train(wave_set, tmp_path / "x", _tiny(steps=1, focal_offsets_A=(-50.0, 0.0, 50.0),
                                              validate_movies=(str(tmp_path / "scene.h5"),)))
    with pytest.raises(Exception, match="not a simulated movie"):
        train(wave_set, tmp_path / "x", _tiny(steps=1, validate_movies=(str(wave_set),)))


def test_movie_validation_frames_of_another_pixel_size_keep_their_columns_in_place(tmp_path):
    """A movie taken at 0.1 Å/px, validated at the model's 0.2: the true columns move with the
    resampling, onto the columns' peaks in the resampled frames."""
    from scipy.ndimage import maximum_filter

    from etem.simulate.movie_io import save_movie
    from etem.simulate.toy import make_movie
    from etem.train.validation import movie_validation

    movie = make_movie(n_frames=2, shape=(192, 192), sampling=0.1, particle_radius_A=6.0, seed=5,
                       dose_per_frame=1e5)
    save_movie(movie, tmp_path / "fine.h5")
    images, truth = movie_validation([tmp_path / "fine.h5"], _tiny(sampling_A=0.2, n_validation=2))
    assert images.shape == (2, 1, 96, 96)
    from scipy.spatial import cKDTree

    img = images[0, 0].numpy()
    peaks = np.argwhere((img == maximum_filter(img, size=5)) & (img > img.mean() + 2 * img.std()))
    peaks = peaks[(peaks > 1).all(1) & (peaks < 94).all(1)]
    sub = []  # each peak's centre of mass over its 5x5 window, above the window's lowest value
    oy, ox = np.mgrid[-2:3, -2:3]
    for y, x in peaks:
        w = img[y - 2:y + 3, x - 2:x + 3]
        w = w - w.min()
        sub.append((y + (w * oy).sum() / w.sum(), x + (w * ox).sum() / w.sum()))
    t = truth[truth["frame"] == 0][["y", "x"]].to_numpy()
    sub = np.array(sub)
    d, i = cKDTree(sub).query(t)
    # on the peaks: no offset on average (a quarter-pixel error in the mapping would show as 0.25)
    assert len(sub) > 5 and np.median(d) < 0.25
    assert np.abs((sub[i] - t).mean(0)).max() < 0.08


def test_weights_can_be_chosen_by_finding_and_classing_together(wave_set, tmp_path, monkeypatch):
    """`TrainConfig.select = "classes"` (`etem train --select classes`): the weights kept are
    those of the best validation F1 x class accuracy, not of the best F1; a one-class model is
    refused that choice; the options reach the config."""
    import etem.train.loop as loop
    from etem.tracker.cli_parser import build_parser
    from etem.tracker.errors import ConfigError
    from etem.train.cli import train_config

    # the validations' scores, scripted so that the two choices part: F1 is best at step 1,
    # F1 x class accuracy at step 2 (0.72 against 0.45 and 0.51)
    scripted = iter([(0.9, 0.5), (0.8, 0.9), (0.85, 0.6)])
    real = loop.evaluate_model

    def scores(model, images, truth, sampling, threshold=0.5):
        if not isinstance(threshold, (int, float)):
            return real(model, images, truth, sampling, threshold)
        f1, acc = next(scripted)
        return {"f1": f1, "precision": f1, "recall": f1, "rms_A": 0.1, "cls_accuracy": acc}

    monkeypatch.setattr(loop, "evaluate_model", scores)
    cfg = _tiny(steps=3, validate_every=1, classes="height", select="classes")
    card = train(wave_set, tmp_path / "counted", cfg)
    h = card["training"]["history"]
    assert [r["select_score"] for r in h] == pytest.approx([0.45, 0.72, 0.51])
    assert card["training"]["kept_step"] == 2 and card["training"]["config"]["select"] == "classes"
    scripted = iter([(0.9, 0.5), (0.8, 0.9), (0.85, 0.6)])
    card = train(wave_set, tmp_path / "found", _tiny(steps=3, validate_every=1, classes="height"))
    assert card["training"]["kept_step"] == 1 and "select_score" not in card["training"]["history"][0]
    # no column matched at any validation (class accuracy undefined): nothing classed right
    # scores 0, and the first weights are kept
    scripted = iter([(0.0, float("nan"))] * 2)
    card = train(wave_set, tmp_path / "young", _tiny(steps=2, validate_every=1, classes="height", select="classes"))
    assert [r["select_score"] for r in card["training"]["history"]] == [0.0, 0.0]
    assert card["training"]["kept_step"] == 1
    monkeypatch.setattr(loop, "evaluate_model", real)
    with pytest.raises(ConfigError, match="one class"):
        train(wave_set, tmp_path / "x", _tiny(steps=1, select="classes"))
    with pytest.raises(ConfigError, match="select must be one of"):
        train(wave_set, tmp_path / "x", _tiny(steps=1, select="recall"))
    args = build_parser().parse_args(["train", str(wave_set), "-o", str(tmp_path / "m"), "--select", "classes",
                                      "--validation-images", "40"])
    c = train_config(args)
    assert c.select == "classes" and c.n_validation == 40
    c = train_config(build_parser().parse_args(["train", str(wave_set), "-o", str(tmp_path / "m")]))
    assert c.select == "f1" and c.n_validation == 16
