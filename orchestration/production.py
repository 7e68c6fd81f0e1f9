"""The production code location: ``dagster api grpc -m orchestration.production`` (see deploy/README.md).

The same assets, checks, jobs, schedules and sensors as :mod:`orchestration.definitions`, with the resources
built from ``OXYREC_CONFIG`` (``deploy/params.production.yaml``: shared volume, warehouse export, Redis, LLM
reasoner) and the production executor: each run (one Kubernetes pod under the Helm chart's
``K8sRunLauncher``, see ``deploy/helm/values.yaml``) executes its steps in parallel child processes with
retries. ``dagster-k8s``'s per-step ``k8s_job_executor`` is a drop-in replacement once that package is in
the image; it is not installed here, so nothing below imports it.
"""

from __future__ import annotations

from dagster import Definitions, multiprocess_executor

from .definitions import build_definitions

PRODUCTION_EXECUTOR_CONFIG = {"max_concurrent": 4, "retries": {"enabled": {}}}
production_executor = multiprocess_executor.configured(PRODUCTION_EXECUTOR_CONFIG, name="production_multiprocess")


def build_production_definitions(resources: dict | None = None) -> Definitions:
    return Definitions.merge(build_definitions(resources), Definitions(executor=production_executor))


defs = build_production_definitions()
