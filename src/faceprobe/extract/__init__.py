"""Layer activations of a network: which layers there are, and their outputs for a set of images."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)  # __init__.pyi's names
