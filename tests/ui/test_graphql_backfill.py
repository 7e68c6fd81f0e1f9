"""Backfill one scenario through the webserver's GraphQL API, as the UI's Materialize -> partitions dialog does,
and let the real daemon launch and finish the run; a failing run is reported by the run-failure notifier
running in that daemon."""

import json
import time

import pandas as pd

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions partitionNames }
    ... on PythonError { message }
  }
}"""

RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""

LAUNCH_RUN = """
mutation Run($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""

RUN = """query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""

IN_PROCESS = {"execution": {"config": {"in_process": {}}}}  # one process per run: faster on 2 cores

PARTITIONS = """
{ assetNodeOrError(assetKey: {path: ["raw_interactions"]}) {
    ... on AssetNode { partitionKeys assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } } }
} }"""


def launch_assets(server, location: str, assets: list[str]) -> str:
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": [name]} for name in assets]}
    launched = server.graphql(LAUNCH_RUN, {"params": {"selector": selector, "runConfigData": IN_PROCESS}})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_run(server, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = server.graphql(RUN, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        assert time.monotonic() < deadline, f"run {run_id} still {status}:\n{server.log_tail()}"
        time.sleep(2)


def test_one_scenario_backfill_through_graphql(dagster_server):
    from .conftest import LOCATION_QUERY

    location = dagster_server.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"][0]["name"]
    # The catalog first (the interactions gate checks item ids against it), and a run that must fail:
    # the unified log before any scenario was loaded.
    catalog = launch_assets(dagster_server, location, ["raw_items"])
    doomed = launch_assets(dagster_server, location, ["interaction_log"])
    assert wait_run(dagster_server, catalog) == "SUCCESS"
    assert wait_run(dagster_server, doomed) == "FAILURE"

    node = dagster_server.graphql(PARTITIONS)["assetNodeOrError"]
    assert "cart" in node["partitionKeys"] and len(node["partitionKeys"]) == 6
    assert node["assetPartitionStatuses"]["materializedPartitions"] == []

    params = {"assetSelection": [{"path": ["raw_interactions"]}], "partitionNames": ["cart"],
              "title": "cart refresh (test)", "runConfigData": IN_PROCESS}
    launched = dagster_server.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + 300
    while True:
        backfill = dagster_server.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        assert time.monotonic() < deadline, f"backfill still {backfill['status']}:\n{dagster_server.log_tail()}"
        time.sleep(2)
    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, dagster_server.log_tail())
    assert backfill["numPartitions"] == 1

    runs = dagster_server.graphql(RUNS, {"id": backfill_id})["runsOrError"]["results"]
    assert [r["status"] for r in runs] == ["SUCCESS"]
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags.get("dagster/partition") == "cart" or (
        tags.get("dagster/asset_partition_range_start") == tags.get("dagster/asset_partition_range_end") == "cart"
    )

    # exactly that scenario, on disk in the temp data dir, and in the asset's partition status
    written = sorted(p.name for p in (dagster_server.data / "raw_interactions").iterdir())
    assert written == ["cart.parquet"]
    assert set(pd.read_parquet(dagster_server.data / "raw_interactions" / "cart.parquet")["scenario"]) == {"cart"}
    node = dagster_server.graphql(PARTITIONS)["assetNodeOrError"]
    assert node["assetPartitionStatuses"]["materializedPartitions"] == ["cart"]

    # The daemon's run_failure_notifier wrote the failed run to the notifications file (sensor interval 30 s).
    notifications = dagster_server.data / "notifications" / "run_failures.jsonl"
    deadline = time.monotonic() + 120
    while not notifications.exists() or doomed not in notifications.read_text():
        assert time.monotonic() < deadline, f"no notification for {doomed}:\n{dagster_server.log_tail()}"
        time.sleep(2)
    [record] = [json.loads(line) for line in notifications.read_text().splitlines()]
    assert record["run_id"] == doomed and record["failed_steps"] == ["interaction_log"]
    assert record["error"].startswith("FileNotFoundError: no stored value at") and "raw_interactions" in record["error"]
    assert f"run {doomed} of job '__ASSET_JOB' failed at step 'interaction_log'" in record["message"]
