"""features-gql: attach any feature to any resource, and ask for it over GraphQL."""

from features_gql.api import FeaturesAPI
from features_gql.domain import ChangeEvent, Resource, ResourcePage, WriteResult
from features_gql.errors import (
    ConfigError,
    FeaturesError,
    InvalidInput,
    PluginError,
    StartupError,
    StoreConflict,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    StoreUnsupported,
)
from features_gql.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "ChangeEvent",
    "ConfigError",
    "FeaturesAPI",
    "FeaturesError",
    "InvalidInput",
    "PluginError",
    "Resource",
    "ResourcePage",
    "StartupError",
    "StoreConflict",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "StoreUnsupported",
    "WriteResult",
    "__version__",
    "hookimpl",
]
