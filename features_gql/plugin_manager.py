"""Discovers plugins (entry points, a plugins directory, explicit objects) with pluggy."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pluggy

from features_gql import hookspecs
from features_gql.errors import PluginError
from features_gql.events import OperationEvent, OperationSink
from features_gql.loggers import LoggerRegistry
from features_gql.stores.registry import StoreRegistry

ENTRY_POINT_GROUP = "features_gql"


def _load_plugins_dir(pm: pluggy.PluginManager, directory: Path) -> None:
    if not directory.is_dir():
        raise PluginError(f"plugins directory {str(directory)!r} does not exist")
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue  # a plugin's tests may sit beside it; they are not plugins
        module_name = f"features_gql_local_plugins.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"cannot import plugin file {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise PluginError(f"plugin file {str(path)!r} failed to import: {exc!r}") from exc
        pm.register(module, name=f"{path.name}")


def create_plugin_manager(
    plugins_dir: Path | None = None, extra: Sequence[object] = ()
) -> pluggy.PluginManager:
    """Load installed plugins from the ``features_gql`` entry-point group, then local ones."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:
        raise PluginError(
            f"an installed features_gql plugin failed to load: {exc!r} "
            "(see `pip show` for the package that provides it)"
        ) from exc
    if plugins_dir is not None:
        _load_plugins_dir(pm, plugins_dir)
    for plugin in extra:
        pm.register(plugin, name=_name_for(pm, plugin))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {pm.get_name(exc.plugin)!r} implements a hook that does not exist: {exc}. "
            f"Hooks are: {', '.join(_hook_names())}"
        ) from exc
    return pm


def _name_for(pm: pluggy.PluginManager, plugin: object) -> str:
    """A name for a plugin object that says what it is (pluggy's default is its id)."""
    base = getattr(plugin, "__name__", None)
    if not isinstance(base, str):
        kind = type(plugin)
        base = f"{kind.__module__}.{kind.__qualname__}"
    name, number = base, 1
    while pm.has_plugin(name):
        number += 1
        name = f"{base}#{number}"
    return name


def _hook_names() -> list[str]:
    return sorted(name for name in vars(hookspecs) if name.startswith("features_gql_"))


@dataclass
class Plugins:
    """What the loaded plugins provide."""

    manager: pluggy.PluginManager
    stores: StoreRegistry
    loggers: LoggerRegistry
    operation_sinks: list[tuple[str, OperationSink]] = field(default_factory=list)


def collect(pm: pluggy.PluginManager) -> Plugins:
    """Call the registration hooks, and gather the operation-event sinks.

    Hooks are called through pluggy, so wrappers (``@hookimpl(wrapper=True)``), ``tryfirst``
    and ``trylast`` work as everywhere else; registrations and errors still name the
    plugin whose implementation made them.
    """
    stores_hook = pm.hook.features_gql_register_stores
    stores = StoreRegistry(provider=_Running(stores_hook).plugin)
    _call(stores_hook, registry=stores)
    loggers_hook = pm.hook.features_gql_register_loggers
    loggers = LoggerRegistry(provider=_Running(loggers_hook).plugin)
    _call(loggers_hook, registry=loggers)
    return Plugins(pm, stores, loggers, _operation_sinks(pm))


class _Running:
    """Which plugin's implementation of ``hook`` is running now, seen from inside it.

    pluggy calls every implementation (and wrapper) itself, so the code that a plugin's
    implementation calls (``registry.add``) finds the plugin by walking up the stack to
    the first frame that runs one of the hook's implementations. Two instances of one
    plugin class share their methods' code, and are told apart by ``self``.
    """

    def __init__(self, hook: pluggy.HookCaller) -> None:
        self._by_code: dict[CodeType, list[tuple[object, str]]] = {}
        for impl in hook.get_hookimpls():
            code = getattr(impl.function, "__code__", None)
            if isinstance(code, CodeType):
                self._by_code.setdefault(code, []).append((impl.plugin, impl.plugin_name))

    def _owner(self, frame: FrameType) -> str | None:
        candidates = self._by_code.get(frame.f_code)
        if not candidates:
            return None
        if len(candidates) > 1:
            this = frame.f_locals.get("self")
            for plugin, name in candidates:
                if plugin is this:
                    return name
        return candidates[0][1]

    def plugin(self) -> str:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            name = self._owner(frame)
            if name is not None:
                return name
            frame = frame.f_back
        return "?"

    def raised(self, exc: BaseException) -> str:
        """The plugin whose implementation raised ``exc`` (the innermost one in its trace)."""
        found = "?"
        trace = exc.__traceback__
        while trace is not None:
            found = self._owner(trace.tb_frame) or found
            trace = trace.tb_next
        return found


def _call(hook: pluggy.HookCaller, **kwargs: Any) -> None:
    try:
        hook(**kwargs)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"plugin {_Running(hook).raised(exc)!r} failed in {hook.name}: {exc!r}"
        ) from exc


def _operation_sinks(pm: pluggy.PluginManager) -> list[tuple[str, OperationSink]]:
    """One sink per plugin implementing ``features_gql_operation_event``, in pluggy's order.

    Each sink is called on its own, through a hook caller without the other sinks (so one
    that raises or is slow never keeps an event from the others); a plugin that only
    wraps the hook (``@hookimpl(wrapper=True)``) wraps every sink's call.
    """
    hook = pm.hook.features_gql_operation_event
    sinks: dict[str, object] = {}
    for impl in reversed(hook.get_hookimpls()):  # pluggy calls the last one first
        if not (impl.wrapper or impl.hookwrapper):
            sinks.setdefault(impl.plugin_name, impl.plugin)
    return [
        (
            name,
            _sink(
                pm.subset_hook_caller(
                    "features_gql_operation_event",
                    remove_plugins=[other for other in sinks.values() if other is not plugin],
                )
            ),
        )
        for name, plugin in sinks.items()
    ]


def _sink(caller: pluggy.HookCaller) -> OperationSink:
    def sink(event: OperationEvent) -> None:
        caller(event=event)

    return sink


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str | None
    hooks: list[str]
    stores: list[str]
    loggers: list[str]


def describe(plugins: Plugins) -> list[PluginInfo]:
    """Name, version, hooks and what each plugin provides; for ``features-gql plugins``."""
    versions: dict[str, str] = {}
    for plugin, dist in plugins.manager.list_plugin_distinfo():
        name = plugins.manager.get_name(plugin)
        if name is not None:
            versions[name] = f"{dist.project_name} {dist.version}"
    infos = []
    for name, plugin in sorted(plugins.manager.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(caller.name for caller in plugins.manager.get_hookcallers(plugin) or [])
        infos.append(
            PluginInfo(
                name=name,
                version=versions.get(name),
                hooks=hooks,
                stores=[s.name for s in plugins.stores.all() if s.provided_by == name],
                loggers=[lg.name for lg in plugins.loggers.all() if lg.provided_by == name],
            )
        )
    return infos
