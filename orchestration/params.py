"""The ``params`` resource: gives assets their section of ``params.yaml`` and records it as metadata."""

from __future__ import annotations

import os

from dagster import ConfigurableResource

from .settings import Settings, load_settings


class ParamsResource(ConfigurableResource):
    """Path of the pipeline's config file (default: ``OXYREC_CONFIG`` or ``params.yaml``)."""

    config_path: str | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(self.config_path or os.environ.get("OXYREC_CONFIG"))
