"""Benchmarks of features-gql; run them with `python -m benchmarks`."""
