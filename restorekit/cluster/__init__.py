"""Beyond one machine: batch restoration on Ray Data and online serving on Ray Serve.

Ray is an optional dependency (``pip install "restorekit[cluster]"``), imported lazily by the
functions that need it; nothing here imports PyTorch.
"""
