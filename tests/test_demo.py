"""`make demo`'s script, run as the Makefile runs it (a subprocess with DAGSTER_HOME set)."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_demos_script_runs_end_to_end_on_tiny(tmp_path):
    """What `make demo` runs (`python -m mup_dagster.demo`), on `tiny` and one layer: the
    extraction's share of the machine's floor, the metrics table, the figure and the monitor."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "MUP_HOME": str(tmp_path / "mup_home"), "MUP_EXECUTOR": "in_process"}
    env.pop("MUP_ARTIFACT_ROOT", None)
    proc = subprocess.run([sys.executable, "-m", "mup_dagster.demo", "--model", "tiny", "--layers", "2",
                           "--probe-types", "logistic_regression", "attention"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"extraction: \d+ tokens/s = \d+% of this machine's floor \(\w+ matmul \d+ GFLOP/s", out), out
    assert "corpus-test" in out and "logistic_regression" in out
    figure = re.search(r"figure: (\S+)", out).group(1)
    assert Path(figure).is_file() and Path(figure).read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"monitor: \w+ at layer 2, threshold", out) and "done in" in out


def test_a_missing_evaluation_file_stops_the_demos_before_any_run(tmp_path, capsys):
    import pytest

    from mup_dagster import demo, demo_study

    for main, flag in ((demo.main, "--eval-file"), (demo_study.main, "--selection-file")):
        with pytest.raises(SystemExit) as stopped:
            main([flag, str(tmp_path / "dev.jsonl")])
        assert stopped.value.code == 2
        assert f"argument {flag}: {tmp_path / 'dev.jsonl'}: no such file" in capsys.readouterr().err
