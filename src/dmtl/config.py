"""The run configuration: schema, defaults, YAML files and ``key=value`` overrides.

Precedence: command-line overrides over the file (or built-in experiment) over the defaults below.
Every field is checked once, here, with a message that names the field and what it accepts; the
algorithm's own parameters are checked by the algorithm (``algorithm.<param>``).
"""

from __future__ import annotations

import copy
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dmtl.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "load_config",
    "load_yaml",
    "resolve",
    "parse_value",
    "builtin_experiments",
    "apply_overrides",
]

# section -> key -> default. ``None`` means "derived" (see ``resolve``).
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "rounds": 300,
    "eval_every": 10,
    "target": {"metric": None, "below": None},
    "problem": {"kind": "lowrank"},  # other fields: see dmtl.data.registry (per kind)
    "topology": {
        "kind": "ring",
        "nodes": 10,
        "weights": "metropolis",
        "p": None,
        "radius": None,
        "connected": True,
    },
    "algorithm": {"name": "dif-altgdmin"},
    "backend": {"name": "local", "procs": 1, "timeout": 60.0, "blas_threads": None, "mpiexec": None},
    "clock": {
        "latency": 1e-3,
        "link_bandwidth": 1.25e7,
        "server_bandwidth": 1.25e8,
        "compute_rate": 1e9,
    },
    # the channel of graph links (dmtl.network.channel): all defaults = perfect links
    "faults": {"drop_prob": 0.0, "compression": "none", "bits": 8, "topk": 0.1},
    "output": {"plots": True, "progress": "auto"},
}

_TYPES: dict[str, Any] = {
    "name": str,
    "seed": int,
    "rounds": int,
    "eval_every": int,
    "target.metric": (str, type(None)),
    "target.below": (float, type(None)),
    "topology.kind": str,
    "topology.nodes": int,
    "topology.weights": str,
    "topology.p": (float, type(None)),
    "topology.radius": (float, type(None)),
    "topology.connected": bool,
    "backend.name": str,
    "backend.procs": int,
    "backend.timeout": float,
    "backend.blas_threads": (int, type(None)),
    "backend.mpiexec": (str, type(None)),
    "clock.latency": float,
    "clock.link_bandwidth": float,
    "clock.server_bandwidth": float,
    "clock.compute_rate": float,
    "faults.drop_prob": float,
    "faults.compression": str,
    "faults.bits": int,
    "faults.topk": float,
    "output.plots": bool,
    "output.progress": (str, bool),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "backend.name": ("local", "mpi"),
    "output.progress": ("auto", "on", "off"),
    "faults.compression": ("none", "quantize", "topk"),
}

_MINIMUM: dict[str, float] = {
    "seed": 0,  # numpy's SeedSequence refuses negative seeds
    "rounds": 0,
    "eval_every": 1,
    "topology.nodes": 1,
    "backend.procs": 1,
    "backend.timeout": 0.0,
    "backend.blas_threads": 1,
    "faults.drop_prob": 0.0,
    "faults.bits": 2,
}


_FLOAT_TAG = "tag:yaml.org,2002:float"


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats.

    PyYAML follows YAML 1.1, where a float needs a dot, so ``1e-3`` or ``5E+2`` would load as strings and
    a step size written that way would be refused as "not a number"; the command line already reads them
    as floats, and a file must agree with it.
    """


# the safe loader's resolvers minus its float rule (copied, so yaml.SafeLoader itself is untouched)
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse configuration YAML (safe loading; YAML 1.2 floats such as ``1e-3`` are numbers)."""
    return yaml.load(text, Loader=_YamlLoader)  # safe: _YamlLoader is a SafeLoader


def parse_value(text: str) -> Any:
    """Parse a command-line value: int, float (``1e-3`` too), bool, null, list/dict (YAML), or str."""
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        return value
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip().lower() not in ("null", "none", "~") else value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a (nested) configuration dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. topology.kind=ring")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = config
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(text.strip())
    return config


def builtin_experiments() -> dict[str, Path]:
    """Built-in experiment configurations by name (``dmtl run NAME``)."""
    folder = resources.files("dmtl") / "experiments"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith((".yaml", ".yml"))}


def load_config(
    source: str | Path | dict | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Load a configuration from a YAML file, a run directory (its ``config.yaml``), a built-in
    experiment name or a dict, apply overrides, and return the resolved, validated configuration."""
    overrides = list(overrides or [])
    if source is None:
        raw: dict[str, Any] = {}
        origin = "the defaults"
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
        origin = "the given configuration"
    else:
        path, origin = _config_path(source)
        raw = _read_config_file(path)
    from_file = copy.deepcopy(raw)
    apply_overrides(raw, overrides)
    texts = _override_texts(overrides)
    _check_switched_sections(from_file, raw, texts, origin)
    return resolve(raw, texts)


def _config_path(source: str | Path) -> tuple[Path, str]:
    """The YAML file ``source`` names, and how to name it in messages.

    A file wins; a directory holding ``config.yaml`` is a run directory (rerun it); anything else that
    is a built-in experiment's name is that experiment, so a folder that happens to be called ``lowrank``
    does not hide the built-in one.
    """
    path = Path(source)
    if path.is_file():
        return path, str(path)
    if path.is_dir() and (path / "config.yaml").is_file():
        return path / "config.yaml", str(path / "config.yaml")
    experiments = builtin_experiments()
    if str(source) in experiments:
        return experiments[str(source)], f"built-in experiment {str(source)!r}"
    what = (
        f"{str(source)!r} is a directory without config.yaml (not a run directory)"
        if path.is_dir()
        else f"no configuration file {str(source)!r}"
    )
    raise ConfigError(
        f"{what} and no built-in experiment of that name; "
        f"built-in experiments: {', '.join(sorted(experiments))}"
    )


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file; give a YAML configuration file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" + (
        f" ({context})" if context else ""
    )


def _override_texts(overrides: list[str]) -> dict[str, str]:
    """The raw text of each ``key=value`` override by dotted key, the last one winning.

    Kept so that a string field given numeric-looking text (``name=2024``) gets that text, not the number
    ``parse_value`` made of it. An override of a whole section forgets the texts of its fields.
    """
    texts: dict[str, str] = {}
    for item in overrides:
        key, _, text = item.partition("=")
        key = key.strip()
        for old in [k for k in texts if k.startswith(key + ".")]:
            del texts[old]
        texts[key] = text.strip()
    return texts


def _check_switched_sections(
    from_file: dict[str, Any], raw: dict[str, Any], texts: dict[str, str], origin: str
) -> None:
    """Refuse a ``problem.kind`` / ``algorithm.name`` override that strands fields set by the file.

    Without this the error blames e.g. ``problem.d`` for ``problem.kind=dataset``, a field the user never
    wrote; dropping such fields silently would hide settings instead.
    """
    for section, key in (("problem", "kind"), ("algorithm", "name")):
        dotted = f"{section}.{key}"
        before, after = from_file.get(section), raw.get(section)
        if dotted not in texts or not isinstance(before, dict) or not isinstance(after, dict):
            continue
        old, new = before.get(key, DEFAULTS[section][key]), after.get(key)
        accepted = _section_fields(section, new)
        if old == new or accepted is None:
            continue  # same kind, or an unknown one (resolve / make_algorithm say which are known)
        stranded = sorted(
            f for f in before if f != key and f not in accepted and f"{section}.{f}" not in texts
        )
        if stranded:
            raise ConfigError(
                f"{dotted}={new} on the command line replaces {dotted}={old} of {origin}, whose {section} "
                f"section also sets {', '.join(stranded)}, which {dotted}={new} does not take; override "
                f"the whole section instead, e.g. {section}='{{{key}: {new}, ...}}', or write a YAML file"
            )


def _section_fields(section: str, name: Any) -> set[str] | None:
    """The fields problem kind / algorithm ``name`` accepts (None when ``name`` is unknown)."""
    if section == "problem":
        from dmtl.data import PROBLEMS

        return set(PROBLEMS[name].defaults) if isinstance(name, str) and name in PROBLEMS else None
    import dataclasses

    from dmtl.algorithms import ALGORITHMS

    if not isinstance(name, str) or name not in ALGORITHMS:
        return None
    return {f.name for f in dataclasses.fields(ALGORITHMS[name])}  # type: ignore[arg-type]


def resolve(raw: dict[str, Any], texts: dict[str, str] | None = None) -> dict[str, Any]:
    """Merge ``raw`` over the defaults and validate every field.

    ``texts`` maps dotted keys to the raw command-line text they were given (see ``load_config``): a
    string field keeps that text where ``parse_value`` read a number or a boolean.
    """
    texts = texts or {}
    config = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown configuration section {key!r}; known: {', '.join(DEFAULTS)}")
        if isinstance(DEFAULTS[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"configuration section {key!r} must be a mapping, got {value!r}")
            if key in ("algorithm", "problem"):
                # checked by the algorithm / the problem kind's declared parameters
                config[key] = {**config[key], **value}
                continue
            for sub, subval in value.items():
                if sub not in DEFAULTS[key] and not (key == "topology" and sub in _TOPOLOGY_EXTRA):
                    known = list(DEFAULTS[key]) + (list(_TOPOLOGY_EXTRA) if key == "topology" else [])
                    raise ConfigError(f"unknown field {key}.{sub}; known fields: {', '.join(known)}")
                config[key][sub] = subval
        else:
            config[key] = value
    for dotted, types in _TYPES.items():
        section, _, field = dotted.partition(".")
        holder = config[section] if field else config
        name = field or section
        holder[name] = _check(dotted, holder[name], types, texts.get(dotted))
    from dmtl.data import problem_params

    problem_texts = {k.partition(".")[2]: v for k, v in texts.items() if k.startswith("problem.")}
    config["problem"] = problem_params(config["problem"], problem_texts)
    if not isinstance(config["algorithm"].get("name"), str):
        raise ConfigError("algorithm.name must be a string, e.g. dif-altgdmin (see `dmtl list`)")
    target = config["target"]
    if (target["metric"] is None) != (target["below"] is None):
        raise ConfigError("target needs both target.metric and target.below (or neither)")
    _check_unused_settings(config)
    return config


def _check_unused_settings(config: dict[str, Any]) -> None:
    """Refuse settings that the rest of the configuration would silently ignore."""
    backend = config["backend"]
    if backend["name"] == "local" and backend["procs"] != 1:
        raise ConfigError(
            f"backend.procs={backend['procs']} needs backend.name=mpi (the local backend runs all nodes in "
            "one process); add backend.name=mpi or drop backend.procs"
        )
    from dmtl.network.channel import Channel

    faults = config["faults"]
    Channel.from_config(faults, 0)  # the channel's own range checks speak first
    for key, used_by in (("bits", "quantize"), ("topk", "topk")):
        if faults[key] != DEFAULTS["faults"][key] and faults["compression"] != used_by:
            raise ConfigError(
                f"faults.{key}={faults[key]!r} does nothing with faults.compression={faults['compression']}; "
                f"add faults.compression={used_by} or drop faults.{key}"
            )


_TOPOLOGY_EXTRA = ("rows", "cols", "periodic", "dim")


def _check(dotted: str, value: Any, types: Any, text: str | None = None) -> Any:
    """Validate and normalise one field; ``text`` is its raw command-line text, if it was given there."""
    types = types if isinstance(types, tuple) else (types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, str) and str not in types and bool not in types:
        parsed = parse_value(value)
        value = float(parsed) if float in types and isinstance(parsed, int) else parsed
    if bool in types and isinstance(value, str) and value.lower() in ("on", "off"):
        value = value.lower()
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types)
    if not ok and str in types and text is not None and isinstance(value, (int, float)):
        value, ok = text, True  # name=2024: the text typed, not the number parse_value made of it
    if not ok:
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        hint = f" (quote it in YAML: '{value}')" if str in types and numeric else ""
        raise ConfigError(f"{dotted} must be {expected}, got {value!r}{hint}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{dotted} must be finite, got {value!r}")
    if dotted in _CHOICES and value not in _CHOICES[dotted] and not isinstance(value, bool):
        raise ConfigError(f"{dotted} must be one of {', '.join(_CHOICES[dotted])}, got {value!r}")
    if dotted in _MINIMUM and isinstance(value, (int, float)) and value < _MINIMUM[dotted]:
        raise ConfigError(f"{dotted} must be >= {_MINIMUM[dotted]}, got {value!r}")
    return value
