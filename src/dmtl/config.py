"""The run configuration: schema, defaults, YAML files and ``key=value`` overrides.

Precedence: command-line overrides over the file (or built-in experiment) over the defaults below.
Every field is checked once, here, with a message that names the field and what it accepts; the
algorithm's own parameters are checked by the algorithm (``algorithm.<param>``).
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dmtl.errors import ConfigError

__all__ = ["DEFAULTS", "load_config", "resolve", "parse_value", "builtin_experiments", "apply_overrides"]

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
    "rounds": 0,
    "eval_every": 1,
    "topology.nodes": 1,
    "backend.procs": 1,
    "backend.timeout": 0.0,
    "backend.blas_threads": 1,
    "faults.drop_prob": 0.0,
    "faults.bits": 2,
}


def parse_value(text: str) -> Any:
    """Parse a command-line value: int, float (``1e-3`` too), bool, null, list/dict (YAML), or str."""
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        return value
    try:
        value = yaml.safe_load(text)
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
    """Load a configuration from a YAML file, a built-in experiment name or a dict, apply overrides,
    and return the resolved, validated configuration."""
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = Path(source)
        experiments = builtin_experiments()
        if not path.exists() and str(source) in experiments:
            path = experiments[str(source)]
        if not path.exists():
            raise ConfigError(
                f"no configuration file {str(source)!r} and no built-in experiment of that name; "
                f"built-in experiments: {', '.join(sorted(experiments))}"
            )
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    apply_overrides(raw, overrides or [])
    return resolve(raw)


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Merge ``raw`` over the defaults and validate every field."""
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
        holder[name] = _check(dotted, holder[name], types)
    from dmtl.data import problem_params

    config["problem"] = problem_params(config["problem"])
    if not isinstance(config["algorithm"].get("name"), str):
        raise ConfigError("algorithm.name must be a string, e.g. dif-altgdmin (see `dmtl list`)")
    target = config["target"]
    if (target["metric"] is None) != (target["below"] is None):
        raise ConfigError("target needs both target.metric and target.below (or neither)")
    return config


_TOPOLOGY_EXTRA = ("rows", "cols", "periodic", "dim")


def _check(dotted: str, value: Any, types: Any) -> Any:
    types = types if isinstance(types, tuple) else (types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, str) and str not in types and bool not in types:
        parsed = parse_value(value)
        value = float(parsed) if float in types and isinstance(parsed, int) else parsed
    if bool in types and isinstance(value, str) and value.lower() in ("on", "off"):
        value = value.lower()
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types)
    if not ok:
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ConfigError(f"{dotted} must be {expected}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{dotted} must be finite, got {value!r}")
    if dotted in _CHOICES and value not in _CHOICES[dotted] and not isinstance(value, bool):
        raise ConfigError(f"{dotted} must be one of {', '.join(_CHOICES[dotted])}, got {value!r}")
    if dotted in _MINIMUM and isinstance(value, (int, float)) and value < _MINIMUM[dotted]:
        raise ConfigError(f"{dotted} must be >= {_MINIMUM[dotted]}, got {value!r}")
    return value
