"""The store port: the protocol every storage adapter implements, and how stores are built."""

from features_gql.stores.base import Store, WrappingStore, redact_url
from features_gql.stores.options import StoreOptions
from features_gql.stores.registry import StoreBuilder, StoreFactory, StorePlugin, StoreRegistry

__all__ = [
    "Store",
    "StoreBuilder",
    "StoreFactory",
    "StoreOptions",
    "StorePlugin",
    "StoreRegistry",
    "WrappingStore",
    "redact_url",
]
