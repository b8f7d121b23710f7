"""Benchmarks: figures are ratios measured side by side in one run, never assertions in tests."""
