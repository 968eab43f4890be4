"""Test support for plugin authors: the store contract suite.

    from features_gql.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "data")

Needs the ``testing`` extra: ``pip install "features-gql[testing]"``.
"""

from features_gql.testing.store_contract import StoreContract, run_with_store

__all__ = ["StoreContract", "run_with_store"]
