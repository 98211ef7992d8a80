"""jetquant: INT8 TensorRT engines for Jetson image classifiers, with proof of no accuracy loss."""

__version__ = "0.1.0"
