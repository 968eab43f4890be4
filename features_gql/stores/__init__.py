"""The store port: the protocol every storage adapter implements, and how stores are built."""

from features_gql.stores.base import (
    OPERATIONS,
    Store,
    WrappingStore,
    check_not_trimmed,
    redact_url,
)
from features_gql.stores.operations import Kind, Operation
from features_gql.stores.options import StoreOptions
from features_gql.stores.registry import StoreBuilder, StoreFactory, StorePlugin, StoreRegistry

__all__ = [
    "OPERATIONS",
    "Kind",
    "Operation",
    "Store",
    "StoreBuilder",
    "StoreFactory",
    "StoreOptions",
    "StorePlugin",
    "StoreRegistry",
    "WrappingStore",
    "check_not_trimmed",
    "redact_url",
]
