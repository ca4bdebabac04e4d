"""Running a study: configuration, work units, executors, resume, and the run folder's tables."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)  # __init__.pyi's names
