"""Training the networks to probe: face recognition by the thesis recipe, and the attribute baseline.

:mod:`~faceprobe.train.loop` is the shared loop (seeded, resumable, AMP, DDP),
:mod:`~faceprobe.train.recognition` and :mod:`~faceprobe.train.attributes` the two tasks,
:mod:`~faceprobe.train.heads` the ArcFace/CosFace margins, and :mod:`~faceprobe.train.jobs` whole jobs from
a dataset spec to a checkpoint folder.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)  # __init__.pyi's names
