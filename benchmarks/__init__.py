"""roxxel's benchmarks, side by side with a reference of the original design.

Run ``python -m benchmarks [--quick]`` from the repository root; see README.md.
"""
