"""Compiled CPU kernels (plain C, built on first use with the system compiler; see build.py)."""
