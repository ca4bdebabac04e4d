"""Face-recognition networks: the registry, backbones, weight origins and preprocessing.

``load_model(architecture, weights)`` is the entry point: it returns a :class:`LoadedModel` (module in eval
mode, weights digest, :class:`Preprocessing`); :data:`ARCHITECTURES` lists the names it knows.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)  # __init__.pyi's names
