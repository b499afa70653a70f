"""The report and counts.png name MoS2's intensity classes by species, as the dashboard does
(they said A / B0 / B1 where the dashboard said A (Mo), B0 (S), B1 (S2)); the tables keep the
stored names, and summary.json says what each stands for."""
import json

import pytest

from etem.tracker import track
from etem.tracker.export import export_run
from etem.tracker.report import figure_lines
from etem.tracker.run import open_run


@pytest.fixture(scope="module")
def mos2_run(tmp_path_factory):
    from etem.simulate.insitu_mos2 import mos2_movie

    movie = mos2_movie(n_frames=16, shape=(160, 160), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                       flake_radius_A=6.0, sputter_rate=0.15, refill_rate=0.2, seed=2)
    path = tmp_path_factory.mktemp("labels") / "run.h5"
    track(movie.frames, sampling=0.1, model="haadf-stem", material="mos2",
          config={"locate": {"intensity_classes": True}}, run_path=path)
    return path


def test_the_summary_says_each_class_by_species_and_the_tables_keep_the_names(mos2_run, tmp_path):
    export_run(mos2_run, tmp_path, formats="csv,report", progress=False)
    summ = json.loads((tmp_path / "summary.json").read_text())
    with open_run(mos2_run) as run:
        names = run.class_names
    assert names[0] == "A" and summ["class_labels"]["A"] == "A (Mo)"
    assert all(summ["class_labels"][n].startswith(f"{n} (") for n in names)
    text = "\n".join(figure_lines(summ))
    kinds = summ["class_changes_by_kind"]
    assert kinds and all(k.split(" -> ")[0] in names for k in kinds)  # (stored names in the summary ...)
    first = next(iter(kinds)).split(" -> ")[0]
    assert f"{summ['class_labels'][first]} -> " in text                # (... species in the report's lines)


def test_the_counts_legend_names_the_species(mos2_run):
    from etem.tracker.export import _render_counts
    from etem.tracker.report import run_statistics

    with open_run(mos2_run) as run:
        derived, summ = run_statistics(run)
        fig = _render_counts(run.frames, derived["class_counts"], run.class_names, labels=summ.get("class_labels"))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "A (Mo)" in legend and not {"A", "B0", "B1"} & set(legend)


def test_without_a_material_the_names_are_as_stored(tmp_path):
    from etem.simulate import make_movie

    path = tmp_path / "run.h5"
    track(make_movie(n_frames=4, shape=(64, 64), seed=0).frames, sampling=0.2, classical=True, run_path=path)
    with open_run(path) as run:
        assert run.class_labels == run.class_names and run.material is None
