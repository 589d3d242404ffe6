"""The PyTorch-free runtime: backends, tiling, pixel conventions and image/video I/O.

Never imports torch (a Jetson runs this with numpy, OpenCV, TensorRT and cuda-python only).

- ``backend``: the :class:`~restorekit.runtime.backend.Backend` interface (context manager,
  validated ``infer``/``infer_many``); ``ort_backend`` (ONNX Runtime, the reference) and
  :class:`restorekit.tensorrt.runner.TrtBackend` (TensorRT engines) implement it; ``artifact``
  opens an ``.onnx``/``.engine`` with its manifest behind the right one. Everything else that
  knows TensorRT (engine compatibility, buffer sizing, device memory) is in
  :mod:`restorekit.tensorrt`.
- ``tiling``: tile plans, reflected edges, feathered/averaged blending (numpy only);
  ``restore``: one image through a backend as the manifest says; ``pixels``: conventions.
- ``imageio``/``media``: images, folders, globs, videos, cameras; ``jobs``: batch runs.
"""
