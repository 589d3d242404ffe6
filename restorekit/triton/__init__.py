"""NVIDIA Triton Inference Server model repositories from restorekit artifacts.

``config.py`` decides what a model's ``config.pbtxt`` says (platform, batch, dims, data types,
dynamic batching, instance groups, the ONNX Runtime TensorRT accelerator) from the artifact and
its manifest; ``validate.py`` parses the text into Triton's own ``ModelConfig`` protobuf (from
``tritonclient``, the ``triton`` extra) so a misspelt field or enum is caught here rather than by
a server; ``repository.py`` writes ``<name>/config.pbtxt`` and ``<name>/1/model.onnx|model.plan``
with the manifest beside the model, atomically.

Writing needs nothing beyond the core; torch-free and TensorRT-free. Triton itself is not run by
restorekit or its tests.
"""
