"""Discovers plugins (entry points, a plugins directory, explicit objects) with pluggy."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pluggy

from features_gql import hookspecs
from features_gql.errors import PluginError
from features_gql.events import OperationSink
from features_gql.loggers import LoggerRegistry
from features_gql.stores.registry import StoreRegistry

ENTRY_POINT_GROUP = "features_gql"


def _load_plugins_dir(pm: pluggy.PluginManager, directory: Path) -> None:
    if not directory.is_dir():
        raise PluginError(f"plugins directory {str(directory)!r} does not exist")
    for path in sorted(directory.glob("*.py")):
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
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {exc.plugin!r} implements a hook that does not exist: {exc}. "
            f"Hooks are: {', '.join(_hook_names())}"
        ) from exc
    return pm


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
    """Call the registration hooks one plugin at a time, so errors name the plugin."""
    stores = StoreRegistry()
    loggers = LoggerRegistry()
    for impl in pm.hook.features_gql_register_stores.get_hookimpls():
        stores.current_plugin = impl.plugin_name
        _call(impl, registry=stores)
    for impl in pm.hook.features_gql_register_loggers.get_hookimpls():
        loggers.current_plugin = impl.plugin_name
        _call(impl, registry=loggers)
    sinks: list[tuple[str, OperationSink]] = [
        (impl.plugin_name, cast(OperationSink, impl.function))
        for impl in pm.hook.features_gql_operation_event.get_hookimpls()
    ]
    return Plugins(pm, stores, loggers, sinks)


def _call(impl: Any, **kwargs: Any) -> None:
    try:
        impl.function(**{name: kwargs[name] for name in impl.argnames})
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"plugin {impl.plugin_name!r} failed in {impl.function.__name__}: {exc!r}"
        ) from exc


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
