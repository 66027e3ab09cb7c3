"""Runs end to end: reproducibility, the run directory, configuration precedence and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from dmtl.cli import main
from dmtl.config import load_config, parse_value
from dmtl.errors import ConfigError, DataError
from dmtl.problem import Placement, Problem
from dmtl.runner import run

SMALL = [
    "problem.d=30",
    "problem.tasks=30",
    "problem.samples=15",
    "topology.nodes=5",
    "rounds=30",
    "eval_every=5",
]


def test_same_seed_gives_bitwise_identical_metrics_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run("lowrank", SMALL + [f"seed={seed}"], out=tmp_path / name)
    a, b, c = ((tmp_path / n / "metrics.csv").read_bytes() for n in "abc")
    assert a == b
    assert a != c
    # another seed means other data, not only another initialisation
    cfg = load_config("lowrank", SMALL)
    from dmtl.runner import build_problem
    from dmtl.seeding import RunStreams

    p1, p2 = build_problem(cfg, RunStreams(1)), build_problem(cfg, RunStreams(2))
    assert not np.array_equal(p1.X, p2.X)


def test_run_directory_contents(tmp_path):
    res = run("lowrank", SMALL + ["algorithm.name=altgdmin"], out=tmp_path / "run")
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "timing.csv", "summary.json", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "altgdmin"
    assert summary["ledger"]["messages"] == res.summary["ledger"]["messages"] > 0
    assert set(summary["versions"]) >= {"dmtl", "numpy", "python"}
    # the resolved configuration reruns to the same metrics
    again = run(yaml.safe_load((out / "config.yaml").read_text()))
    assert again.history.equals(res.history)
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header == "round,metric,value,messages,floats,bytes,comm_rounds,virtual_time"


def test_command_line_overrides_file_overrides_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("rounds: 7\ntopology: {kind: star, nodes: 4}\nproblem: {kind: lowrank, d: 12}\n")
    cfg = load_config(path, ["topology.nodes=5", "problem.tasks=9"])
    assert cfg["rounds"] == 7  # file over default
    assert cfg["topology"]["kind"] == "star" and cfg["topology"]["nodes"] == 5  # CLI over file
    assert cfg["problem"]["d"] == 12 and cfg["problem"]["tasks"] == 9
    assert cfg["problem"]["rank"] == 2  # default
    assert cfg["eval_every"] == 10


def test_parse_value():
    assert parse_value("1e-3") == 1e-3 and parse_value("3") == 3
    assert parse_value("true") is True and parse_value("null") is None
    assert parse_value("ring") == "ring" and parse_value("nodes") == "nodes"


def test_target_stops_early():
    res = run("lowrank", SMALL + ["rounds=500", "target.metric=sd_f_max", "target.below=1e-3"])
    assert res.summary["stopped_by"] == "target" and res.summary["rounds"] < 500


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["algorithm.name=altgdmn"], "unknown algorithm 'altgdmn'; known algorithms: .*altgdmin"),
        (["topology.kind=moebius"], "moebius"),
        (
            ["topology.kind=erdos_renyi", "topology.p=0.05", "topology.connected=false"],
            "needs a connected graph",
        ),
        (["problem.rank=40"], r"problem.rank=40 must be <= min\(problem.d, problem.tasks\)=30"),
        (
            ["algorithm.name=dif-altgdmin", "topology.weights=uniform", "topology.kind=star"],
            "doubly stochastic",
        ),
        (["rounds=-1"], "rounds must be >= 0"),
        (["problem.kind=mnist"], "unknown problem.kind 'mnist'"),
        (["topology.colour=red"], "unknown field topology.colour"),
        (["algorithm.tempo=3"], "has no parameter 'tempo'"),
        (["target.metric=sd_f_max"], "target needs both"),
        (["seed=abc"], "seed must be int"),
    ],
)
def test_bad_configuration_gets_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        run("lowrank", SMALL + overrides)


def test_problem_rejects_nan_and_inconsistent_shapes():
    X = np.ones((3, 4, 2))
    y = np.ones((3, 4))
    place = Placement.one_per_node(3)
    bad = X.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(DataError, match=r"non-finite values \(first at index \(1, 2, 0\)\)"):
        Problem(bad, y, place)
    y_inf = y.copy()
    y_inf[0, 0] = np.inf
    with pytest.raises(DataError, match="problem y has non-finite"):
        Problem(X, y_inf, place)
    with pytest.raises(DataError, match=r"y must have shape \(3, 4\)"):
        Problem(X, np.ones((3, 5)), place)
    with pytest.raises(DataError, match="placement covers 2 tasks but the data have 3"):
        Problem(X, y, Placement.one_per_node(2))
    with pytest.raises(DataError, match="must have shape \\(tasks, samples, features\\)"):
        Problem(np.ones((3, 4)), y, place)


def test_cli_prints_one_line_errors(capsys):
    assert main(["run", "lowrank", "algorithm.name=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmtl: error: unknown algorithm 'nope'") and "\n" not in err
    assert main(["run", "no_such_file.yaml"]) == 2
    assert "built-in experiments: " in capsys.readouterr().err


def test_cli_run_list_and_demo(tmp_path, capsys):
    assert main(["run", "lowrank", *SMALL, "--out", str(tmp_path / "r"), "-q"]) == 0
    assert "sd_f_max" in capsys.readouterr().out
    assert (tmp_path / "r" / "metrics.csv").exists()
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for word in ("dif-altgdmin", "erdos_renyi", "metropolis", "school", "lowrank"):
        assert word in listing
    assert main(["demo", "--rounds", "15", "--out", str(tmp_path / "demo")]) == 0
    table = capsys.readouterr().out
    assert "Dif-AltGDmin" in table and (tmp_path / "demo" / "demo.png").stat().st_size > 10_000


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "dmtl", "run", "lowrank", "topology.kind=moebius"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_cli_plot_overlays_saved_runs(tmp_path, capsys):
    for name in ("dif-altgdmin", "altgdmin"):
        main(["run", "lowrank", *SMALL, f"algorithm.name={name}", "--out", str(tmp_path / name), "-q"])
    runs = [str(tmp_path / "dif-altgdmin"), str(tmp_path / "altgdmin")]
    assert main(["plot", *runs, "--metric", "sd_f_max", "--out", str(tmp_path / "o.png")]) == 0
    assert (tmp_path / "o.png").stat().st_size > 10_000
    assert main(["plot", *runs, "--metric", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "in none of the runs" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing")]) == 2
