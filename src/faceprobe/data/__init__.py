"""Datasets: readers for every published layout, synthetic faces, images as tensors, the sampling protocol."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)  # __init__.pyi's names
