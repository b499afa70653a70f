"""The dashboard's counters early in a run: the class changes and hops beside the site count
are those of the frames whose sites are final, and the sites say they are building until the
first frame is (at /api/status, /metrics and on the page in a headless browser)."""
import pytest

from etem.tracker.dashboard import Dashboard, DashboardConfig
from etem.tracker.pipeline import Pipeline, PipelineConfig
from etem.tracker.sources import iter_array
from test_dashboard import _get, _json, parse_metrics


@pytest.fixture(scope="module")
def mos2_adf():
    """An ADF MoS2 movie whose S2 columns lose atoms fast (class changes from the first frames)."""
    from etem.simulate.insitu_mos2 import mos2_movie

    return mos2_movie(n_frames=24, shape=(160, 160), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                      flake_radius_A=6.0, sputter_rate=0.15, refill_rate=0.2, seed=2)


def _pipeline():
    from etem.tracker.config import config_from_dict

    cfg = config_from_dict({"locate": {"intensity_classes": True}, "engine": {"model": "haadf-stem"}},
                           PipelineConfig(default_sampling=0.1))
    return Pipeline(cfg)


def test_class_changes_wait_for_the_sites_they_belong_to(mos2_adf):
    pipe = _pipeline()
    src = iter_array(mos2_adf.frames, sampling=0.1, counters=pipe.counters)
    seen = []
    with Dashboard(DashboardConfig(port=0, snapshot_interval_s=0.0, maps_interval_s=0.0, image_interval_s=0.0)) as dash:
        for res in pipe.run_iter(src):
            dash(res, pipe)
            s = _json(dash.url + "api/status")
            metrics = parse_metrics(_get(dash.url + "metrics")[2].decode())
            raw = len(pipe.sites.class_changes)  # (decided so far, final sites or not)
            seen.append((s["sites"], s["class_changes"], s["hops"], s["sites_building"], raw))
            assert pipe.status()["class_changes"] == s["class_changes"]  # (the terminal's status line too)
            assert metrics[("etem_class_changes_total", ())] == s["class_changes"]
            assert metrics[("etem_hops_total", ())] == s["hops"]
            assert metrics[("etem_sites", ())] == s["sites"]
            assert s["look_ahead_frames"] == pipe.sites.cfg.look_ahead > 0
        end = _json(dash.url + "api/status")
    # the case that read as a contradiction arose: class changes decided while no site was final ...
    assert any(building and raw > 0 for _, _, _, building, raw in seen)
    # ... and was shown as sites building, with no class change and no hop counted yet
    for sites, changes, hops, building, _ in seen:
        assert building == (sites == 0)
        if building:
            assert changes == 0 and hops == 0
    # the counters only grow; at the end every class change counts (the run's, as exported)
    for a, b in zip(seen, seen[1:]):
        assert b[1] >= a[1] and b[2] >= a[2]
    assert end["class_changes"] == len(pipe.sites.class_changes) > 0 and not end["sites_building"]


def test_the_page_says_the_sites_are_building_until_the_first_is_final(mos2_adf, tmp_path):
    """The page in a headless browser, the run held at chosen frames (the tiles of one status
    answer): "building" in the sites tile, and no class change, until a frame's sites are final."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_dashboard_browser import _chromium

    driver = _chromium()
    pipe = _pipeline()
    lag = pipe.cfg.sites.look_ahead
    src = iter_array(mos2_adf.frames, sampling=0.1, counters=pipe.counters)
    shown = []
    try:
        with Dashboard(DashboardConfig(port=0, snapshot_interval_s=0.0, maps_interval_s=0.0, image_interval_s=0.0)) as dash:
            driver.get(dash.url)
            wait = WebDriverWait(driver, 60, poll_frequency=0.2)
            text = lambda k: driver.find_element(By.ID, k).text  # noqa: E731
            for res in pipe.run_iter(src):
                dash(res, pipe)
                if res.frame not in (0, lag - 1, lag + 1, len(mos2_adf.frames) - 2):
                    continue
                wait.until(lambda d: text("last_frame") == str(res.frame))
                s = _json(dash.url + "api/status")
                shown.append((res.frame, text("sites"), text("class_changes"), text("hops"), text("sites_why"),
                              s["sites_building"], len(pipe.sites.class_changes)))
    finally:
        driver.quit()
    for frame, sites, changes, hops, why, building, raw in shown:
        if building:
            assert sites == "building" and f"final {lag} frames after they are seen" == why
            assert changes == "0" and hops == "0"
        else:
            assert int(sites) > 0 and why == ""
    # building at the first frames, with class changes decided already; sites and their changes later
    assert shown[0][5] and shown[1][5] and shown[1][6] > 0
    assert not shown[-1][5] and int(shown[-1][2]) > 0
