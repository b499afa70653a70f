"""The camera sender of docs/guides/live.md, run as it is written, as a process of its own,
against a real `etem track` process: every frame it sends is tracked, and the run ends on its
end marker."""
import re
import subprocess
import sys
from pathlib import Path

from _procs import ENV, etem, free_port
from etem.tracker import open_run

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "live.md"


def example_sender() -> str:
    text = GUIDE.read_text()
    part = text[text.index("**Writing the camera's sender.**"):]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)


def test_the_documented_sender_is_tracked_frame_by_frame(tmp_path):
    code = example_sender()
    n = int(re.search(r"for i in range\((\d+)\)", code).group(1))
    sender = tmp_path / "camera.py"
    sender.write_text(code)
    address = f"tcp://127.0.0.1:{free_port()}"
    run = tmp_path / "run.h5"
    tracker = etem("track", "--listen", address, "--mode", "pull", "--bind", "--classical", "--quiet",
                   "-o", str(run), "--idle-timeout", "120")
    try:
        camera = subprocess.run([sys.executable, str(sender), address], env=ENV, capture_output=True,
                                text=True, timeout=120)
        assert camera.returncode == 0, camera.stderr
        out, err = tracker.communicate(timeout=300)
    finally:
        if tracker.poll() is None:
            tracker.kill()
    assert tracker.returncode == 0, err
    assert "rejected a message" not in err and "seq gap" not in err, err
    with open_run(run) as r:
        assert r.status == "complete"  # (the end marker ended it, not the idle timeout: that would also say complete)
        c = r.counters
        assert c["received"] == n and c["processed"] == n and c["missing"] == 0 and c["rejected"] == 0, c
        frames = r.frames
        assert list(frames["frame"]) == list(range(n))
        assert (frames["t"].diff().dropna() >= 0).all() and (frames["n_columns"] > 0).all()
