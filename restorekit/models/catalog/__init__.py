"""Torch-free declarations of each architecture's spec and variants (see ``registry.py``)."""
