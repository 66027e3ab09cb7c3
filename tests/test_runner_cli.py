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


# -- review findings: config / CLI / runner ---------------------------------------------------------


def test_one_per_node_placement_needs_as_many_nodes_as_tasks():
    # 20 tasks, one per node, on the default 10 nodes used to keep only the first 10 tasks
    with pytest.raises(ConfigError, match=r"problem.placement=one_per_node needs topology.nodes = problem"):
        run("lowrank", [*SMALL, "problem.tasks=20", "problem.placement=one_per_node", "rounds=1"])
    res = run("lowrank", [*SMALL, "topology.nodes=30", "problem.placement=one_per_node", "rounds=1"])
    assert len(res.state.data.tasks) == 30


def test_build_problem_refuses_a_problem_on_another_number_of_nodes(monkeypatch):
    from dmtl.data.registry import PROBLEMS, ProblemKind
    from dmtl.data.synthetic import lowrank_regression
    from dmtl.runner import build_problem
    from dmtl.seeding import RunStreams

    def six_nodes(params, n_nodes, streams):  # a builder that ignores n_nodes
        return lowrank_regression(4, 6, 1, 3, placement="one_per_node")

    monkeypatch.setitem(PROBLEMS, "six_nodes", ProblemKind("six_nodes", six_nodes, {}, "test"))
    cfg = load_config(None, ["problem.kind=six_nodes", "topology.nodes=5"])
    with pytest.raises(ConfigError, match="placed its tasks on 6 nodes but topology.nodes=5"):
        build_problem(cfg, RunStreams(0))


def test_bad_out_fails_before_the_run_with_one_line(tmp_path, monkeypatch, capsys):
    import dmtl.runner

    afile = tmp_path / "afile"
    afile.write_text("")

    def no_run(*args, **kwargs):
        raise AssertionError("the run started although --out is unusable")

    monkeypatch.setattr(dmtl.runner, "execute", no_run)
    for out, match in ((afile, "is an existing file, not a directory"), (afile / "sub", "afile is a file")):
        with pytest.raises(ConfigError, match=match):
            run("lowrank", SMALL, out=out)
        assert main(["run", "lowrank", *SMALL, "--out", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dmtl: error: ") and err.count("\n") == 1
    assert not (afile.parent / "sub").exists()


def test_write_and_plot_errors_are_one_line(tmp_path, capsys):
    from dmtl.results import OutputError

    blocked = tmp_path / "blocked"
    (blocked / "config.yaml").mkdir(parents=True)  # the run directory is fine, one of its files is not
    assert main(["run", "lowrank", *SMALL, "rounds=2", "--out", str(blocked), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dmtl: error: cannot write the run directory") and err.count("\n") == 1
    assert issubclass(OutputError, OSError)
    assert main(["run", "lowrank", *SMALL, "rounds=2", "--out", str(tmp_path / "r"), "-q"]) == 0
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "r"), "--out", str(tmp_path / "nodir" / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dmtl: error: cannot write the plot") and err.count("\n") == 1


def test_a_folder_named_like_a_builtin_experiment_does_not_hide_it(tmp_path, monkeypatch):
    import dmtl.demo
    from dmtl.config import builtin_experiments

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lowrank").mkdir()
    assert load_config("lowrank") == load_config(builtin_experiments()["lowrank"])
    seen = []

    def first_run_only(source, *args, **kwargs):
        seen.append(source)
        raise KeyboardInterrupt  # enough: the demo's source is known

    monkeypatch.setattr(dmtl.demo, "run", first_run_only)
    with pytest.raises(KeyboardInterrupt):
        dmtl.demo.demo(out=tmp_path / "demo", rounds=1, echo=False)
    assert seen == [builtin_experiments()["lowrank"]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="'empty' is a directory without config.yaml"):
        load_config("empty")


def test_a_run_directory_reruns_and_unreadable_files_are_config_errors(tmp_path, capsys):
    res = run("lowrank", [*SMALL, "rounds=5", "name=first"], out=tmp_path / "r1")
    assert load_config(tmp_path / "r1") == res.config
    assert main(["run", str(tmp_path / "r1"), "--out", str(tmp_path / "r2"), "-q"]) == 0
    assert (tmp_path / "r2" / "metrics.csv").read_bytes() == (tmp_path / "r1" / "metrics.csv").read_bytes()
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00rounds")
    with pytest.raises(ConfigError, match="bin.yaml is not a UTF-8 text file"):
        load_config(binary)


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    import yaml as pyyaml

    from dmtl.results import read_run

    path = tmp_path / "sci.yaml"
    path.write_text(
        "rounds: 2\nproblem: {kind: lowrank, d: 30, tasks: 20, samples: 10, noise: 1e-3}\n"
        "algorithm: {name: dif-altgdmin, step_scale: 5e-1}\ntarget: {metric: sd_f_max, below: 5E-20}\n"
        "clock: {latency: 1e-3}\n"
    )
    cfg = load_config(path)
    assert cfg["algorithm"]["step_scale"] == 0.5 and cfg["problem"]["noise"] == 1e-3
    assert cfg["target"]["below"] == 5e-20 and cfg["clock"]["latency"] == 1e-3
    run(path, ["topology.nodes=5"], out=tmp_path / "r")
    assert read_run(tmp_path / "r")[2]["algorithm"]["step_scale"] == 0.5
    assert pyyaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # PyYAML's own loader is left alone


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["seed=-1"], "seed must be >= 0, got -1"),
        (["problem.test_samples=-1"], "problem.test_samples must be an integer >= 0, got -1"),
        (["problem={kind: dataset, split_seed: -3}"], "problem.split_seed must be >= 0, got -3"),
        (["problem={kind: dataset, data_dir: 123}"], "problem.data_dir must be str or null, got 123"),
        (["backend.procs=4"], "backend.procs=4 needs backend.name=mpi"),
        (
            ["faults.bits=4"],
            "faults.bits=4 does nothing with faults.compression=none; add faults.compression=q",
        ),
        (
            ["faults.topk=0.5", "faults.compression=quantize"],
            "faults.topk=0.5 does nothing with faults.compr",
        ),
    ],
)
def test_more_bad_configurations_get_a_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        run("lowrank", SMALL + overrides)


def test_switching_problem_kind_or_algorithm_over_a_file_names_the_file_fields():
    with pytest.raises(
        ConfigError,
        match=r"problem.kind=dataset on the command line replaces problem.kind=lowrank of built-in "
        r"experiment 'lowrank', whose problem section also sets d, noise, rank, samples, tasks, "
        r".*problem='\{kind: dataset",
    ):
        load_config("lowrank", ["problem.kind=dataset"])
    with pytest.raises(
        ConfigError, match=r"also sets lambda1, lambda2, lambda3, lambda4, rho, .*algorithm='"
    ):
        load_config("omtl_cadmm", ["algorithm.name=omtl-gradient"])
    # the whole section replaced, or fields the new kind also takes: fine
    assert load_config("lowrank", ["problem={kind: dataset}"])["problem"]["kind"] == "dataset"
    assert load_config("omtl_cadmm", ["algorithm.name=d-admm"])["algorithm"]["lambda1"] == 0.1


def test_target_is_checked_at_round_zero():
    with pytest.raises(ConfigError, match="target.metric 'bogus' is not a metric of dif-altgdmin"):
        run("lowrank", [*SMALL, "rounds=0", "target.metric=bogus", "target.below=1"])
    res = run("lowrank", [*SMALL, "target.metric=sd_f_max", "target.below=10"])  # met by the initialisation
    assert res.summary["stopped_by"] == "target" and res.summary["rounds"] == 0
    assert set(res.history["round"]) == {0}


def test_messages_keep_the_yaml_position_and_the_placement_hint(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rounds: 2\n  seed: 3\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml is not valid YAML: mapping values .* at line 2, column 7$"
    ):
        load_config(path)
    with pytest.raises(DataError, match="would leave nodes empty; use at most 3 nodes"):
        Placement.even(3, 5)


def test_string_fields_keep_numeric_looking_text(tmp_path):
    cfg = load_config("lowrank", ["name=2024", "target.metric=007", "target.below=1"])
    assert cfg["name"] == "2024" and cfg["target"]["metric"] == "007"
    cfg = load_config(None, ["problem.kind=dataset", "problem.name=2024", "problem.data_dir=123"])
    assert cfg["problem"]["name"] == "2024" and cfg["problem"]["data_dir"] == "123"
    path = tmp_path / "n.yaml"
    path.write_text("name: 2024\n")
    with pytest.raises(ConfigError, match=r"name must be str, got 2024 \(quote it in YAML: '2024'\)"):
        load_config(path)
