"""The PyTorch-free runtime: backends, tiling, pixel conventions and image/video I/O.

Never imports torch (a Jetson runs this with numpy, OpenCV, TensorRT and cuda-python only).
"""
