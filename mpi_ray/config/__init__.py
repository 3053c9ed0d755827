"""Typed pipeline configuration: YAML files in configs/ plus `section.key=value` overrides."""

from mpi_ray.config.loader import ConfigError, load_config
from mpi_ray.config.schema import PipelineConfig

__all__ = ["ConfigError", "PipelineConfig", "load_config"]
