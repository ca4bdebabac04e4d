"""Names of :mod:`faceprobe.run`, for type checkers; ``__init__.py`` imports each on first use."""

from .config import RunConfig as RunConfig, load_config as load_config, parse_config as parse_config
from .folder import RunStatus as RunStatus, run_status as run_status
from .runner import run_study as run_study
from .tables import read_table as read_table
