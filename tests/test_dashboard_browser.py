"""The dashboard's page in a headless browser (Debian's chromium driven by Selenium; skipped
where they are missing)."""
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from etem.simulate.toy import make_movie, save_movie
from etem.tracker import track
from etem.tracker.dashboard import Dashboard, DashboardConfig
from etem.tracker.pipeline import PipelineConfig
from test_dashboard import _get, _json, movie  # noqa: F401 (movie: a fixture)


# -- the page in a real (headless) browser ---------------------------------------------------
def _chromium():
    """A headless chromium WebDriver, or a skip that says what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium; it is in the test extra)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("chromium/chromedriver not found (Debian: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1150", "--hide-scrollbars", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


def _replay_in_a_thread(path: Path, fps: float, dash, out: dict) -> threading.Thread:
    """``track(path)`` paced at ``fps`` with ``dash`` told of each frame, in a thread started:
    its result (or the exception, re-raised by the test) goes into ``out``."""
    def replay():
        try:
            out["result"] = track(path, pace=1.0, fps=fps, on_frame=dash)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    run = threading.Thread(target=replay)
    run.start()
    return run


def _artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("ETEM_TEST_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_dashboard_in_a_headless_browser(tmp_path, capsys):
    driver = _chromium()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    movie = make_movie(n_frames=240, shape=(192, 192), particle_radius_A=11.0, hop_rate=0.15, seed=5)
    save_movie(movie, tmp_path / "movie.h5")
    out: dict = {}
    try:
        with Dashboard(DashboardConfig(port=0)) as dash:
            run = _replay_in_a_thread(tmp_path / "movie.h5", 20, dash, out)
            try:
                js = driver.execute_script
                driver.get(dash.url)
                wait = WebDriverWait(driver, 60, poll_frequency=0.2)
                assert driver.title.startswith("etem")
                # a frame is shown, with its columns drawn over it
                wait.until(lambda d: js("return document.getElementById('frame').naturalWidth") > 0)
                assert js("return document.getElementById('frame').naturalHeight") > 0
                # the counters move
                wait.until(lambda d: int(d.find_element(By.ID, "processed").text) > 0)
                first = int(driver.find_element(By.ID, "processed").text)
                wait.until(lambda d: int(d.find_element(By.ID, "processed").text) > first)
                assert driver.find_element(By.ID, "state").text == "running"
                assert driver.find_element(By.ID, "view_jumps").text == "0"  # the tile is filled from the status
                assert driver.find_element(By.ID, "class_changes").text == "0"  # (one class: none)
                assert not driver.find_element(By.ID, "classes-panel").is_displayed()  # (and no map of them)
                assert driver.find_element(By.ID, "hops").text.isdigit()
                wait.until(lambda d: " of " in d.find_element(By.ID, "trust").text)  # the trust flag, live
                # the maps build up; a click on the occupancy map shows the nearest site's timeline
                wait.until(lambda d: js("return document.getElementById('occupancy').naturalWidth") > 0)
                wait.until(lambda d: int(d.find_element(By.ID, "processed").text) >= 40)
                wait.until(lambda d: "of the last 50" in d.find_element(By.ID, "trust").text)  # past the window
                assert "whole run" in driver.find_element(By.ID, "trust_why").text
                occ = driver.find_element(By.ID, "occupancy-view")
                w = occ.size["width"]
                ActionChains(driver).move_to_element_with_offset(occ, int(0.12 * w), int(-0.1 * w)).click().perform()
                wait.until(lambda d: d.find_element(By.ID, "timeline").get_attribute("data-site") != "")
                site = int(driver.find_element(By.ID, "timeline").get_attribute("data-site"))
                assert driver.find_element(By.ID, "site-info").text.startswith(f"site {site} ")
                assert int(driver.find_element(By.ID, "timeline").get_attribute("data-drawn")) >= 1
                time.sleep(1.5)  # one more refresh of everything, for the picture
                shot = _artifacts(tmp_path) / "dashboard.png"
                assert driver.save_screenshot(str(shot))
                with capsys.disabled():
                    print(f"\ndashboard screenshot: {shot}")
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert not errors, errors
            finally:
                if dash.pipe is not None:
                    dash.pipe.stop.set()  # end the replay early
                run.join(60)
    finally:
        driver.quit()
    assert "error" not in out, out.get("error")
    assert out["result"].counters["processed"] > 40


def test_the_page_shows_how_the_run_ended_and_its_final_maps(tmp_path, capsys):
    """An ADF MoS2 movie with intensity classes and a blank frame, in a headless browser: the
    panels wait without broken images; the frame has a scale bar, the legend a line on what
    its classes are, a clicked column's site its class by name; the blank frame is in the
    table of reasons under its heading; once the tracker has gone, the page says how the run
    ended, with the final maps, and not that the connection was lost."""
    driver = _chromium()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from etem.simulate.insitu_mos2 import mos2_movie
    from etem.tracker.config import config_from_dict
    from etem.tracker.sites import occupied_sites

    m = mos2_movie(n_frames=16, shape=(192, 192), sampling=0.1, mode="stem", dose_per_frame=3000.0,
                   flake_radius_A=7.0, sputter_rate=0.05, refill_rate=0.1, seed=3)
    frames = np.array(m.frames, np.float32)
    frames[6] = 0.0  # the beam blanked: rejected
    cfg = config_from_dict({"locate": {"intensity_classes": True}, "engine": {"model": "haadf-stem"}},
                           PipelineConfig(default_sampling=0.1))
    dash = Dashboard(DashboardConfig(port=0, linger_s=5.0))
    out: dict = {}
    try:
        js = driver.execute_script
        by_id = driver.find_element
        driver.get(dash.start())
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        # before the first frame: no broken images, but what the panels wait for
        wait.until(lambda d: by_id(By.ID, "state").text == "waiting for the first frame")
        assert not by_id(By.ID, "frame").is_displayed() and not by_id(By.ID, "occupancy").is_displayed()
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#panels .placeholder") if e.is_displayed()]
        assert shown == ["waiting for the first frame"] * 3

        def run():
            try:
                out["result"] = track(frames, sampling=0.1, config=cfg, run_path=tmp_path / "run.h5", on_frame=dash)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                out["error"] = exc

        runner = threading.Thread(target=run)
        runner.start()
        runner.join(120)
        assert "error" not in out, out.get("error")
        wait.until(lambda d: js("return frameInfo && frameInfo.frame") == len(frames) - 1)  # (the last frame)
        wait.until(lambda d: not any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, "#panels .placeholder")))
        # the scale bar: a round length, as wide on screen as the frame's pixels say
        label = by_id(By.ID, "scalebar-label").text
        length = float(by_id(By.ID, "scalebar").get_attribute("data-length-a"))
        assert re.fullmatch(r"\d+(\.\d+)? (Å|nm)", label) and length in (1, 2, 5, 10, 20), label
        ratio = by_id(By.ID, "scalebar").size["width"] / by_id(By.ID, "frame").size["width"]
        assert ratio == pytest.approx(length / (192 * 0.1), abs=0.01)
        # what the classes are, said under the legend, and by the class-change map
        wait.until(lambda d: by_id(By.ID, "class-note").text.startswith("classes by column intensity"))
        names = js("return frameInfo.class_names")
        legend = [re.sub(r" \(\d+\)$", "", e.text) for e in driver.find_elements(By.CSS_SELECTOR, "#legend span")]
        assert legend and set(legend) <= set(names)
        assert "S2 → S" not in by_id(By.ID, "classes-example").text or names == ["A", "B0", "B1"]
        # a clicked column: its site's class by name
        col = js("return frameInfo.columns.find(c => c[3] >= 0)")
        view = by_id(By.ID, "frame-view")
        k = view.size["width"] / 192
        ActionChains(driver).move_to_element_with_offset(
            view, int((col[1] + 0.5) * k - view.size["width"] / 2), int((col[0] + 0.5) * k - view.size["height"] / 2)
        ).click().perform()
        wait.until(lambda d: by_id(By.ID, "site-info").text.startswith("site "))
        info = by_id(By.ID, "site-info").text
        # its position in Å as the frame's scale bar and the maps, px beside it (was px only)
        where = re.match(r"site \d+ at \(([\d.]+), ([\d.]+)\) Å \[([\d.]+), ([\d.]+) px\] · ", info)
        assert where, info
        assert float(where.group(1)) == pytest.approx(float(where.group(3)) * 0.1, abs=0.06)
        cls = re.search(r"px\] · (.+?) · occupancy", info).group(1)
        assert cls in names, info
        # the site's class over time, drawn under its occupancy (a class-change run)
        wait.until(lambda d: by_id(By.ID, "timeline").get_attribute("data-classes") not in (None, ""))
        assert int(by_id(By.ID, "timeline").get_attribute("data-classes")) >= 1
        # the scale bar's label on a box of its own (was white text on the noisy frame)
        back = js("return getComputedStyle(document.getElementById('scalebar-label')).backgroundColor")
        assert back.startswith("rgba(0, 0, 0, 0.7"), back
        # the blank frame, under a heading
        wait.until(lambda d: by_id(By.ID, "reasons-panel").is_displayed())
        assert " ".join(by_id(By.ID, "reasons-panel").text.split()) == (
            "Frames rejected or dropped by reason reason frames rejected blank 1")
        # the run file, in the header
        assert "run file run.h5" in by_id(By.ID, "run").text
        # the trust tile stays about one row high (its reason wrapped to two lines), the whole in a tooltip
        js("document.getElementById('trust_why').textContent = 'last out of range: ' + 'contrast '.repeat(40)")
        tile = "return document.getElementById(arguments[0]).getBoundingClientRect().height"
        assert js(tile, "t_trust") < 1.9 * js(tile, "t_rejected")  # (two lines of its reason at most; was 4.5x)
        # a usual reason is read whole at a 1400-px window (it was cut to "last out of range: SN…")
        driver.set_window_size(1400, 1000)
        reason = "last out of range: SNR below 5.2, resolution coarser than 1.50 Å"
        js(f"document.getElementById('trust_why').textContent = '{reason}'")
        why = "const e = document.getElementById('trust_why'); return [e.scrollHeight, e.clientHeight, e.scrollWidth, e.clientWidth]"
        sh, ch, sw, cw = js(why)
        assert sh <= ch + 1 and sw <= cw + 1, (sh, ch, sw, cw)

        # the run has ended; the tracker goes, after the page has its end
        t0 = time.perf_counter()
        dash.close()
        assert time.perf_counter() - t0 < 5.5
        wait.until(lambda d: "exited" in by_id(By.ID, "state").text)
        assert by_id(By.ID, "state").text == ("run ended (complete) — the tracker has exited; "
                                              "these are its final maps")
        result = out["result"]
        n_sites, n_frames = len(occupied_sites(result.sites)), result.counters["processed"]
        assert by_id(By.ID, "maps-info").text.startswith(f"{n_sites} sites · {n_frames} frames · ")
        shot = _artifacts(tmp_path) / "dashboard-ended.png"
        assert driver.save_screenshot(str(shot))
        with capsys.disabled():
            print(f"\ndashboard screenshot: {shot}")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "api/" not in e["message"]
                  and "maps/" not in e["message"] and "frame.png" not in e["message"]]
        assert not errors, errors
    finally:
        dash.close()
        driver.quit()


def test_a_tab_hidden_when_the_run_ends_says_how_it_ended(movie, tmp_path):
    """The page's tab is behind another one (hidden, as the browser itself says) while the run
    ends and the tracker exits: shown again, the page says how the run ended, with its final
    maps, not that the connection was lost. (A hidden tab keeps a status request open, which
    the tracker answers at the end, waiting for the page to fetch it.)"""
    driver = _chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    save_movie(movie, tmp_path / "movie.h5")
    dash = Dashboard(DashboardConfig(port=0, linger_s=5.0))
    out: dict = {}
    try:
        js = driver.execute_script
        driver.get(dash.start())
        page = driver.current_window_handle
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        js("window.visibility = []; document.addEventListener('visibilitychange', "
           "() => window.visibility.push(document.visibilityState))")

        runner = _replay_in_a_thread(tmp_path / "movie.h5", 4, dash, out)
        wait.until(lambda d: d.find_element(By.ID, "state").text == "running")
        driver.switch_to.new_window("tab")  # the dashboard's tab goes to the background
        runner.join(120)
        assert "error" not in out, out.get("error")
        time.sleep(2.5)  # the hidden page has not polled as a shown one does for longer than counts as open
        t0 = time.perf_counter()
        dash.close()
        took = time.perf_counter() - t0
        driver.switch_to.window(page)  # shown again
        assert js("return window.visibility") == ["hidden", "visible"]
        wait.until(lambda d: "exited" in d.find_element(By.ID, "state").text or
                   d.find_element(By.ID, "state").text == "connection lost")
        assert driver.find_element(By.ID, "state").text == ("run ended (complete) — the tracker has exited; "
                                                           "these are its final maps")
        assert took < 5.5
        n = out["result"].counters["processed"]
        assert f" · {n} frames · " in driver.find_element(By.ID, "maps-info").text
    finally:
        dash.close()
        driver.quit()


def test_the_maps_say_how_many_sites_they_leave_out():
    """A site in view in too few frames for a measurement (one lucky frame at the field's edge)
    is left out of the maps; the page says how many beside them, so that the gap is not read as
    empty sites."""
    driver = _chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_figures_export import SHAPE, _sites

    try:
        with Dashboard(DashboardConfig(port=0)) as dash:
            # the site map as a run of 20 frames leaves it: one of its sites seen in 1 frame
            dash._sites = {"table": _sites(), "shape": SHAPE, "radius_px": 3.0, "n_frames": 20, "version": 1}
            driver.get(dash.url)
            info = lambda d: d.find_element(By.ID, "maps-info").text  # noqa: E731
            WebDriverWait(driver, 30, poll_frequency=0.2).until(lambda d: " sites · " in info(d))
            assert info(driver).endswith(" · 1 not shown (in view < 3 frames)"), info(driver)
    finally:
        driver.quit()
