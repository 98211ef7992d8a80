"""jetquant: INT8 TensorRT engines for Jetson image classifiers, with proof they lost no accuracy."""

__version__ = "0.1.0"
