"""The conftest hook ``pytest_iotperf_extract`` on both sides of a run.

pytest side (:func:`extract_refs`): the implementations that apply to a test
are named by file and function (``{"path": "/abs/conftest.py", "function":
"pytest_iotperf_extract"}``), in the order pluggy would call them, and travel
in the sink specs as ``"extract"``.

Sink side (:func:`load_extractors`): each file is imported by path under a
name of its own, the way pytest's default ``prepend`` import mode does it (the
first directory above it without ``__init__.py`` goes first on ``sys.path``,
so the conftest's own imports work; inside a package it gets its dotted name,
so relative imports work), and the function is wrapped so that it is called
with the arguments it declares (pluggy lets an implementation take fewer).  A
file that does not import is a :class:`ExtractLoadError` naming it: the sink
then fails to start, before any device connects.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypedDict

HOOK_NAME: Final = "pytest_iotperf_extract"
_ARGUMENTS: Final = ("body", "properties")
_module_numbers = itertools.count()


class ExtractRef(TypedDict):
    """Where an implementation of the hook is defined."""

    path: str  # absolute path of the file
    function: str  # module-level function name


class ExtractLoadError(Exception):
    """An implementation of the hook cannot be found or imported in the sink process."""


class _HookImpl(Protocol):
    """What we read of a pluggy ``HookImpl``."""

    function: Callable[..., object]
    hookwrapper: bool
    wrapper: bool


class _HookCaller(Protocol):
    def get_hookimpls(self) -> Sequence[Any]: ...


def extract_refs(hook: _HookCaller) -> list[ExtractRef]:
    """The implementations of ``hook`` (``item.ihook.pytest_iotperf_extract``: the conftests that apply to the
    test), first called first.

    Raises:
        ValueError: an implementation cannot be loaded by file and name in another process (a method, a nested
            function, one without a source file), naming it.
    """
    refs: list[ExtractRef] = []
    for impl in reversed(list(hook.get_hookimpls())):  # pluggy calls the last registered first
        if impl.hookwrapper or impl.wrapper:
            continue  # a wrapper only wraps the others: nothing to call in a sink
        refs.append(_ref(impl))
    return refs


def _ref(impl: _HookImpl) -> ExtractRef:
    function = impl.function
    name = getattr(function, "__qualname__", "")
    try:
        path = inspect.getsourcefile(function) or inspect.getfile(function)
    except TypeError:
        path = None
    if not path or not name or "." in name or not inspect.isfunction(function):
        raise ValueError(
            f"{HOOK_NAME} {function!r} must be a module-level function in a file (a conftest.py or a plugin module): "
            "the sink processes import it by file and name"
        )
    return {"path": str(Path(path).resolve()), "function": name}


class LoadedExtract:
    """One implementation, callable as ``(body, properties)`` whatever subset of them it declares."""

    __slots__ = ("_function", "_names", "where")

    def __init__(self, function: Callable[..., Any], where: str) -> None:
        self._function = function
        self.where = where
        parameters = inspect.signature(function).parameters
        unknown = [name for name in parameters if name not in _ARGUMENTS]
        if unknown:
            raise ExtractLoadError(f"{where} takes {', '.join(unknown)}: the hook passes only body and properties")
        self._names = tuple(parameters)

    def __call__(self, body: bytes, properties: dict[str, Any]) -> Iterable[Any] | None:
        arguments = {"body": body, "properties": properties}
        result: Iterable[Any] | None = self._function(**{name: arguments[name] for name in self._names})
        return result


def load_extractors(refs: Iterable[ExtractRef]) -> list[LoadedExtract]:
    """Import every referenced file and take its function.

    Raises:
        ExtractLoadError: a file is missing or does not import, or has no such function; the message names it.
    """
    return [_load(ref) for ref in refs]


def _load(ref: ExtractRef) -> LoadedExtract:
    try:
        path = Path(ref["path"])
        function_name = ref["function"]
    except (KeyError, TypeError):
        raise ExtractLoadError(f"a bad extract hook reference in the sink spec: {ref!r}") from None
    where = f"{function_name} in {path}"
    module = _import(path, where)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ExtractLoadError(f"cannot load {where}: the file defines no function {function_name}")
    return LoadedExtract(function, where)


def _import(path: Path, where: str) -> Any:
    if not path.is_file():
        raise ExtractLoadError(f"cannot load {where}: no such file")
    base, dotted = _import_base(path)
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    name = dotted if dotted else f"_iotperf_extract_{next(_module_numbers)}_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExtractLoadError(f"cannot load {where}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit, pytest.skip() at import and the like too: all a failed load
        sys.modules.pop(name, None)
        raise ExtractLoadError(f"cannot load {where}: {type(exc).__name__}: {exc}") from None
    return module


def _import_base(path: Path) -> tuple[Path, str | None]:
    """The directory pytest's ``prepend`` mode puts on ``sys.path``, and the module's dotted name inside a package."""
    parts = [path.stem]
    directory = path.parent
    while (directory / "__init__.py").is_file() and directory.parent != directory:
        parts.insert(0, directory.name)
        directory = directory.parent
    return directory, ".".join(parts) if len(parts) > 1 else None
