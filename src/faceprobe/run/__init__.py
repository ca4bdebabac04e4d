"""Running a study: configuration, work units, executors, resume, and the run folder's tables."""

from faceprobe.run.config import RunConfig, load_config, parse_config
from faceprobe.run.runner import run_status, run_study
from faceprobe.run.tables import read_table

__all__ = ["RunConfig", "load_config", "parse_config", "read_table", "run_status", "run_study"]
