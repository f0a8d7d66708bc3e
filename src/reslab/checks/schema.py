"""The config schema is the code: each node with a `_target_` is checked against the real
signature of what it builds, by pydantic (types, `Literal` choices, `Annotated` ranges, and
unknown keys refused), before anything is built. No schema is re-typed beside the code.

pydantic, not OmegaConf structured configs: OmegaConf types cannot say `Literal`, ranges or
`Sequence[float]`, and would need a dataclass re-typed beside every torch and Lightning
signature; pydantic reads the signatures as they are."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Iterable, Iterator
from typing import Any, ForwardRef

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from reslab.errors import ConfigError, reslab_cause

HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}


def nearest(word: str, names: Iterable[str], prefix: str = "") -> str:
    """ "did you mean X?" for a misspelt `word`: every name tied for closest (difflib, case
    ignored; `resnet2O` is as near `resnet20` as `resnet32`), or "" when none is near."""
    scored = [(difflib.SequenceMatcher(None, word.lower(), n.lower()).ratio(), n) for n in names]
    best = max((s for s, _ in scored), default=0.0)
    near = [f"{prefix}{n}" for s, n in scored if s == best and s >= 0.6]
    return f"did you mean {' or '.join(near)}?" if near else ""


def targets(node: Any, key: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every node with a `_target_`, depth first, with its dotted key."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for k in node:
            yield from targets(node._get_node(k), f"{key}.{k}" if key else str(k))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from targets(node._get_node(i), f"{key}[{i}]")


def import_target(key: str, target: Any) -> Any:
    try:
        return get_object(str(target))
    except Exception:
        raise ConfigError(
            f"{key}._target_={target!r} cannot be imported; check its spelling"
        ) from None


def _checkable(annotation: Any) -> bool:
    """Whether pydantic can build a validator for `annotation` (every name in it resolved)."""
    try:
        probe = create_model(
            "Probe", __config__=ConfigDict(arbitrary_types_allowed=True), x=(annotation, None)
        )
        return probe.model_rebuild(raise_errors=True) is not False
    except Exception:
        return False


@functools.cache
def signature_model(obj: Any) -> tuple[type[BaseModel], tuple[str, ...]]:
    """A pydantic model of `obj`'s keyword arguments (none required: a partial or the code may
    supply some), and their names. An annotation pydantic cannot check is taken as `Any`."""
    try:
        params = inspect.signature(obj, eval_str=True).parameters
    except Exception:
        params = inspect.signature(obj).parameters
    fields: dict[str, Any] = {}
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name == "self":
            continue
        annotation = p.annotation
        if annotation is p.empty or isinstance(annotation, str | ForwardRef):
            annotation = Any  # unannotated, or a name the signature's module cannot resolve
        if not _checkable(annotation):
            annotation = Any
        fields[name] = (annotation, None)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    config = ConfigDict(
        extra="allow" if takes_any else "forbid", arbitrary_types_allowed=True, strict=True
    )
    return create_model(f"Schema_{id(obj)}", __config__=config, **fields), tuple(fields)


def _is_built(value: Any) -> bool:
    """A value the config builds itself (a nested `_target_` node, or a list holding one):
    checked as its own node."""
    if isinstance(value, DictConfig | dict):
        return "_target_" in value
    if isinstance(value, ListConfig | list | tuple):
        return any(_is_built(v) for v in value)
    return False


def check_node(key: str, node: DictConfig) -> None:
    """Raise a one-line `ConfigError` for an unknown option or a value the signature of the
    node's target refuses."""
    target = node._target_
    obj = import_target(key, target)
    try:
        model, names = signature_model(obj)
    except (TypeError, ValueError):
        return  # no signature to check against (a C builtin)
    values: dict[str, Any] = {}
    for name in node:
        name = str(name)
        if name in HYDRA_KEYS:
            continue
        try:
            value = OmegaConf.select(node, name, throw_on_missing=False)
        except InterpolationResolutionError as e:
            if reslab_cause(e) is not None:
                continue  # a value read from the data (a class count): checked as it is read
            raise
        if _is_built(value):
            continue
        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        values[name] = value
    try:
        model.model_validate(values)
    except ValidationError as e:
        error = e.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "?"
        if error["type"] == "extra_forbidden":
            hint = nearest(name, names, f"{key}.") or f"valid: {list(names)}"
            raise ConfigError(f"unknown option {key}.{name} for {target}; {hint}") from None
        raise ConfigError(
            f"{key}.{name}={values.get(name)!r} is not valid for {target}: "
            f"{error['msg'][0].lower()}{error['msg'][1:]}"
        ) from None


def check_targets(cfg: DictConfig) -> None:
    """`check_node` for every node of a run config."""
    for key, node in targets(cfg):
        check_node(key, node)


# Where reslab's classes lived before its modules were grouped into subpackages, and what a
# group built before reslab built it otherwise: checkpoints written then name them so in their
# stored config.
MOVED = {
    # callbacks.model_summary, before Rich's table was kept to a terminal of its own
    "lightning.pytorch.callbacks.RichModelSummary": "reslab.training.callbacks.model_summary",
    "reslab.callbacks.": "reslab.training.callbacks.",
    "reslab.checkpoints.": "reslab.runs.checkpoints.",
    "reslab.classifier.": "reslab.training.classifier.",
    "reslab.diagnostics.": "reslab.training.diagnostics.",
    "reslab.distributed.": "reslab.training.distributed.",
    "reslab.loggers.": "reslab.training.loggers.",
    "reslab.schedules.": "reslab.training.schedules.",
}


def moved_targets(stored: Any) -> None:
    """Rename, in place, each `_target_` of a stored config that names a class where it was
    before it moved (`MOVED`), so an older checkpoint's config reads as today's."""
    if isinstance(stored, dict):
        target = stored.get("_target_")
        if isinstance(target, str):
            for old, new in MOVED.items():
                if target.startswith(old):
                    stored["_target_"] = new + target[len(old) :]
        for v in stored.values():
            moved_targets(v)
    elif isinstance(stored, list):
        for v in stored:
            moved_targets(v)


def trusted_values(stored: Any, schema: Any, key: str, source: str) -> None:
    """Refuse a stored config (a checkpoint's) that would build anything `schema` (the config
    reslab composes from its own groups) does not: a `_target_` or other Hydra key that differs,
    a node to build where the schema has a value, or an interpolation. Values pass."""
    where = f"{source}: stored config key"
    if isinstance(stored, dict):
        for k, v in stored.items():
            path = f"{key}.{k}" if key else str(k)
            expected = schema.get(k) if isinstance(schema, dict) else None
            if k in HYDRA_KEYS and v != expected:
                raise ConfigError(
                    f"{where} {path}={v!r} is not reslab's ({expected!r}); a checkpoint gives "
                    "values only: choose the config group on the command line instead"
                )
            trusted_values(v, expected, path, source)
    elif isinstance(stored, list):
        for i, v in enumerate(stored):
            expected = schema[i] if isinstance(schema, list) and i < len(schema) else None
            trusted_values(v, expected, f"{key}[{i}]", source)
    elif isinstance(stored, str) and "${" in stored:
        raise ConfigError(f"{where} {key}={stored!r} is an interpolation; a stored config is plain")
