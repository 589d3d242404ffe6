"""Everything that knows TensorRT, in one torch-free package that export, the CLI and the runtime
all import (after Polygraphy's ``backend/trt``). It never imports the export package.

Plain Python (CPU-tested, no TensorRT needed):

- ``versions``: TensorRT version parsing (``packaging.version``), the major.minor.patch form and
  the feature thresholds (strongly typed, explicit batch, compatibility flags, progress monitor,
  Ampere for hardware compatibility).
- ``device``: :class:`~restorekit.tensorrt.device.DeviceFacts` of a GPU (name, compute
  capability, memory, Jetson) and :func:`~restorekit.tensorrt.device.query_device`.
- ``onnx_source``: the ONNX an engine is built from, and whether it still matches the sha256 its
  manifest records (used by the build and by the compatibility check).
- ``plan``: every build decision (:func:`~restorekit.tensorrt.plan.plan_build` ->
  :class:`~restorekit.tensorrt.plan.BuildPlan`), the ``restore-build`` command line, and the
  messages for failed builds.
- ``compat``: can this device run that engine (TensorRT release, GPU, source ONNX), and the
  command that rebuilds it.
- ``buffers``: an engine's I/O tensors and the buffers sized for them.
- ``onnx_rules``: an ONNX graph checked against ONNX-TensorRT's published operator support,
  without TensorRT.

Thin layers over TensorRT and CUDA (imported lazily, inside functions, never at import):

- ``builder``: carries a plan out with TensorRT (:func:`~restorekit.tensorrt.builder.
  engine_from_onnx`), forwarding build progress to any monitor object the caller passes.
- ``runner``: :class:`~restorekit.tensorrt.runner.TrtBackend`, which runs an engine behind the
  runtime's :class:`~restorekit.runtime.backend.Backend` interface.
- ``cuda_memory``: device memory, pinned buffers, streams and events over cuda-python or PyCUDA.

Progress bars and CLI text are not here: they live in :mod:`restorekit.cli.build`.
"""
