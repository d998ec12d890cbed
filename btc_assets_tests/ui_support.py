"""Drive ``btc-assets ui`` (``dagster dev``) the way its web app does, for the end-to-end UI test.

The GraphQL documents below are the ones the Dagster 1.13 web app sends (from the ui-core sources shipped as source
maps with dagster-webserver): ``launchPipelineExecution`` (``RunUtils.tsx``), ``launchPartitionBackfill``
(``BackfillUtils.tsx``), ``reloadRepositoryLocation`` (``useRepositoryLocationReload.tsx``), ``terminateRuns``
(``RunUtils.tsx``), the stale-status query of the "Materialize unsynced" dialog (``CalculateUnsyncedDialog.tsx``)
and the partition tags/config query of the partitions dialog (``ConfigFetch.tsx``). :meth:`DagsterUI.materialize`
follows ``useMaterializationAction`` / ``LaunchAssetChoosePartitionsDialog``: add the keys that cannot be split
off, pick the first job all keys share, then one run (no partitions, or exactly one partition: "Launch 1 run") or
a backfill (several partitions; a pure asset backfill when the job is the hidden ``__ASSET_JOB``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from btc_assets_tests.test_cli import EXE

T = TypeVar("T")

UI_TAGS = [{"key": "dagster/from_ui", "value": "true"}]  # tagsWithUIExecutionTags / paramsWithUIExecutionTags
DONE_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
DONE_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

WORKSPACE = """
query Workspace { workspaceOrError { __typename
  ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on RepositoryLocation { name repositories { name } }
                          ... on PythonError { message } } } }
  ... on PythonError { message } } }"""

ASSET_NODES = """
query AssetNodes($assetKeys: [AssetKeyInput!]) { assetNodes(assetKeys: $assetKeys) {
  assetKey { path } groupName jobNames opVersion isPartitioned isMaterializable partitionKeys
  repository { name location { name } } } }"""

ADDITIONAL_REQUIRED_KEYS = """
query Required($assetKeys: [AssetKeyInput!]!) { assetNodeAdditionalRequiredKeys(assetKeys: $assetKeys) { path } }"""

LAUNCH_RUN = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) { __typename
    ... on LaunchRunSuccess { run { id runId pipelineName } }
    ... on PipelineNotFoundError { message } ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } } ... on PresetNotFoundError { message }
    ... on ConflictingExecutionParamsError { message } ... on UnauthorizedError { message }
    ... on PythonError { message stack } } }"""

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) { __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message } ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message } ... on PipelineNotFoundError { message } ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message } ... on PythonError { message stack } } }"""

BACKFILL_STATUS = """
query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status numPartitions error { message } }
  ... on PythonError { message } } }"""

RUN_STATUS = """
query Run($id: ID!) { runOrError(runId: $id) { __typename
  ... on Run { runId status } ... on PythonError { message } } }"""

RUN_EVENTS = """
query RunEvents($id: ID!) { logsForRun(runId: $id) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message stepKey }
    ... on LogsCapturedEvent { pid stepKeys }
    ... on ExecutionStepFailureEvent { error { message } }
    ... on RunFailureEvent { pipelineFailureError: error { message } } } } } }"""

RELOAD_LOCATION = """
mutation ReloadRepositoryLocationMutation($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) { __typename
    ... on WorkspaceLocationEntry { id loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } }
    ... on UnauthorizedError { message } ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message } ... on PythonError { message } } }"""

TERMINATE_RUNS = """
mutation Terminate($runIds: [String!]!, $terminatePolicy: TerminateRunPolicy) {
  terminateRuns(runIds: $runIds, terminatePolicy: $terminatePolicy) { __typename
    ... on TerminateRunsResult { terminateRunResults { __typename
      ... on TerminateRunFailure { message } ... on PythonError { message } } }
    ... on PythonError { message } } }"""

# SensorSwitch.tsx's START_SENSOR_MUTATION / STOP_SENSOR_MUTATION (Automation → a sensor → its toggle)
START_SENSOR = """
mutation StartSensor($sensorSelector: SensorSelector!) {
  startSensor(sensorSelector: $sensorSelector) { __typename
    ... on Sensor { id sensorState { id status } }
    ... on SensorNotFoundError { message } ... on UnauthorizedError { message } ... on PythonError { message } } }"""

STOP_SENSOR = """
mutation StopRunningSensor($id: String!) {
  stopSensor(id: $id) { __typename
    ... on StopSensorMutationResult { instigationState { id status } }
    ... on UnauthorizedError { message } ... on PythonError { message } } }"""

# the Runs page filtered by a tag
RUNS_BY_TAG = """
query RunsByTag($filter: RunsFilter!) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId pipelineName status tags { key value } } } ... on PythonError { message } } }"""

# CalculateUnsyncedDialog.tsx's AssetStaleStatusQuery
ASSET_STALE_STATUS = """
query AssetStaleStatusQuery($assetKeys: [AssetKeyInput!]!) { assetNodes(assetKeys: $assetKeys) {
  id assetKey { path } isMaterializable staleStatus
  partitionStats { numMaterialized numMaterializing numPartitions numFailed } } }"""

STALE_BY_PARTITION = """
query StaleByPartition($assetKeys: [AssetKeyInput!]) { assetNodes(assetKeys: $assetKeys) {
  assetKey { path } partitionKeys staleStatusByPartition } }"""

PARTITION_STATUS = """
query PartitionStatus($assetKeys: [AssetKeyInput!]) { assetNodes(assetKeys: $assetKeys) {
  assetKey { path } partitionStats { numMaterialized numMaterializing numPartitions numFailed }
  assetPartitionStatuses { __typename
    ... on DefaultPartitionStatuses { materializedPartitions failedPartitions unmaterializedPartitions
                                      materializingPartitions } } } }"""

# ConfigFetch.tsx's ConfigPartitionForAssetJobQuery (the partitions dialog's "Launch 1 run")
PARTITION_TAGS_AND_CONFIG = """
query ConfigPartitionForAssetJobQuery($repositoryName: String!, $repositoryLocationName: String!, $jobName: String!,
                                      $partitionName: String!, $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName,
                           repositoryLocationName: $repositoryLocationName}) { __typename
    ... on Pipeline { partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) { name
      runConfigOrError { __typename ... on PartitionRunConfig { yaml } ... on PythonError { message } }
      tagsOrError { __typename ... on PartitionTags { results { key value } }
                    ... on PythonError { message } } } } } }"""

LATEST_MATERIALIZATIONS = """
query Latest { assetNodes { assetKey { path } isPartitioned
  assetMaterializations(limit: 1) { runId timestamp partition }
  latestMaterializationByPartition { runId timestamp partition } } }"""

MATERIALIZATION_METADATA = """
query Metadata($assetKey: AssetKeyInput!, $partitions: [String!]) { assetNodeOrError(assetKey: $assetKey) {
  ... on AssetNode { assetMaterializations(partitions: $partitions, limit: 1) { runId timestamp partition
    metadataEntries { label __typename ... on BoolMetadataEntry { boolValue } ... on IntMetadataEntry { intValue }
      ... on FloatMetadataEntry { floatValue } ... on TextMetadataEntry { text } } } } } }"""


def key_input(name: str) -> dict[str, list[str]]:
    """An ``AssetKeyInput`` for a one-part asset key."""
    return {"path": [name]}


def key_name(node: dict[str, Any]) -> str:
    return "/".join(node["assetKey"]["path"])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The outer environment without ``BTC_ASSETS_*`` / ``DAGSTER_*``, pointed at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    env["BTC_ASSETS_HOME"] = str(home)
    env.update(extra)
    return env


def is_descendant(pid: int, ancestor: int) -> bool:
    """Whether process ``pid`` descends from ``ancestor`` (walks ``/proc/<pid>/stat``)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


class DagsterUI:
    """One ``btc-assets ui`` process (its own process group) and the GraphQL calls the web app makes."""

    def __init__(self, home: Path, port: int, log: Path, **env: str) -> None:
        self.home, self.port, self.log = home, port, log
        self.url = f"http://127.0.0.1:{port}"
        with open(log, "wb") as output:  # a file, not a pipe: nobody reads a pipe, and a full one blocks dagster dev
            self.proc = subprocess.Popen(
                [EXE, "ui", "--port", str(port)],
                env=clean_env(home, **env),
                cwd=home,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.location = ""
        self.repository = ""

    # -- process -----------------------------------------------------------------------------------------------

    def tail(self, lines: int = 60) -> str:
        """The last lines of the ``dagster dev`` output (for failure messages)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n--- dagster dev output (tail) ---\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after 20 s (run workers share the group)."""
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children that outlived dagster dev, or a stuck shutdown
        self.proc.wait(timeout=10)

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float, every: float = 2.0) -> T:
        """Call ``probe`` until it returns something other than None/False; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.fail(f"dagster dev exited ({self.proc.returncode}) while waiting for {what}")
            try:
                value = probe()
                if value is not None and value is not False:
                    return value
            except (OSError, urllib.error.URLError) as err:  # the server is not up yet / busy
                last_error = err
            time.sleep(every)
        raise self.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")

    # -- GraphQL -----------------------------------------------------------------------------------------------

    def gql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
        """POST one GraphQL document; the ``data`` of the answer (GraphQL errors fail the test)."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise self.fail(f"GraphQL errors: {json.dumps(answer['errors'])[:2000]}")
        return answer["data"]

    def wait_until_loaded(self, timeout: float = 240) -> None:
        """Wait until GraphQL answers and the code location is loaded; remember its location/repository names."""

        def probe() -> tuple[str, str] | None:
            workspace = self.gql(WORKSPACE, timeout=10)["workspaceOrError"]
            for entry in workspace.get("locationEntries", []):
                loaded = entry["locationOrLoadError"] or {}
                if loaded.get("__typename") == "PythonError":
                    raise self.fail(f"code location {entry['name']} failed to load: {loaded['message']}")
                if entry["loadStatus"] == "LOADED" and loaded.get("__typename") == "RepositoryLocation":
                    return loaded["name"], loaded["repositories"][0]["name"]
            return None

        self.location, self.repository = self.wait_for("the code location to load", probe, timeout)

    def reload_location(self, timeout: float = 180) -> None:
        """What the UI's "Reload definitions" does: ``reloadRepositoryLocation``, then wait until loaded."""
        answer = self.gql(RELOAD_LOCATION, {"location": self.location}, timeout=timeout)["reloadRepositoryLocation"]
        if answer["__typename"] != "WorkspaceLocationEntry":
            raise self.fail(f"reloadRepositoryLocation: {answer}")
        error = answer.get("locationOrLoadError") or {}
        if error.get("__typename") == "PythonError":
            raise self.fail(f"the code location failed to reload: {error['message']}")
        self.wait_until_loaded(timeout)

    def asset_nodes(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        keys = None if names is None else [key_input(n) for n in names]
        return {key_name(n): n for n in self.gql(ASSET_NODES, {"assetKeys": keys})["assetNodes"]}

    def stale_status(self, names: Iterable[str]) -> dict[str, str]:
        nodes = self.gql(ASSET_STALE_STATUS, {"assetKeys": [key_input(n) for n in names]})["assetNodes"]
        return {key_name(n): n["staleStatus"] for n in nodes}

    def stale_by_partition(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        nodes = self.gql(STALE_BY_PARTITION, {"assetKeys": [key_input(n) for n in names]})["assetNodes"]
        return {key_name(n): dict(zip(n["partitionKeys"], n["staleStatusByPartition"], strict=True)) for n in nodes}

    def partition_status(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        nodes = self.gql(PARTITION_STATUS, {"assetKeys": [key_input(n) for n in names]})["assetNodes"]
        return {key_name(n): {**n["assetPartitionStatuses"], "stats": n["partitionStats"]} for n in nodes}

    def unsynced(self, names: Iterable[str]) -> list[str]:
        """The assets the "Materialize unsynced" dialog lists for a selection (``isAssetStale || isAssetMissing``).

        In Dagster 1.13 a partitioned asset's asset-level ``staleStatus`` is always FRESH (the stale-status loader
        does not answer for a partitioned asset without a partition), so the dialog lists a partitioned asset only
        when some partition is missing, never for stale partitions."""
        out = []
        for node in self.gql(ASSET_STALE_STATUS, {"assetKeys": [key_input(n) for n in names]})["assetNodes"]:
            stats = node["partitionStats"]
            missing = (
                stats["numPartitions"] - stats["numMaterializing"] - stats["numMaterialized"] > 0
                if stats
                else node["staleStatus"] == "MISSING"
            )
            if node["isMaterializable"] and (node["staleStatus"] == "STALE" or missing):
                out.append(key_name(node))
        return out

    def latest_materializations(self) -> dict[tuple[str, str | None], tuple[str, str]]:
        """(asset, partition or None) → (run id, timestamp) of its latest materialisation, for every asset."""
        out: dict[tuple[str, str | None], tuple[str, str]] = {}
        for node in self.gql(LATEST_MATERIALIZATIONS)["assetNodes"]:
            events = (
                node["latestMaterializationByPartition"] if node["isPartitioned"] else node["assetMaterializations"]
            )
            for event in events:
                if event is not None:
                    out[(key_name(node), event["partition"])] = (event["runId"], event["timestamp"])
        return out

    def materialization_metadata(self, name: str, partition: str | None = None) -> dict[str, Any]:
        """The latest materialisation of ``name`` (partition): run id and metadata values by label."""
        data = self.gql(
            MATERIALIZATION_METADATA, {"assetKey": key_input(name), "partitions": [partition] if partition else None}
        )
        event = data["assetNodeOrError"]["assetMaterializations"][0]
        values: dict[str, Any] = {"run_id": event["runId"], "timestamp": event["timestamp"]}
        for entry in event["metadataEntries"]:
            for field in ("boolValue", "intValue", "floatValue", "text"):
                if field in entry:
                    values[entry["label"]] = entry[field]
        return values

    # -- launching ---------------------------------------------------------------------------------------------

    def launch_run(
        self, job: str, asset_names: list[str], tags: list[dict[str, str]] | None = None, run_config: str = "{}"
    ) -> str:
        """``launchPipelineExecution`` with the params of ``executionParamsForAssetJob`` (+ the UI tag)."""
        params = {
            "mode": "default",
            "executionMetadata": {"tags": [*(tags or []), *UI_TAGS]},
            "runConfigData": run_config,
            "selector": {
                "repositoryLocationName": self.location,
                "repositoryName": self.repository,
                "pipelineName": job,
                "assetSelection": [key_input(n) for n in asset_names],
                "assetCheckSelection": [],
            },
        }
        answer = self.gql(LAUNCH_RUN, {"executionParams": params})["launchPipelineExecution"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise self.fail(f"launchPipelineExecution failed: {answer}")
        return answer["run"]["runId"]

    def launch_backfill(self, asset_names: list[str], partitions: list[str]) -> str:
        """``launchPartitionBackfill`` as the partitions dialog sends it for the hidden asset job."""
        params = {
            "tags": UI_TAGS,
            "assetSelection": [key_input(n) for n in asset_names],
            "partitionNames": partitions,
            "fromFailure": False,
        }
        answer = self.gql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise self.fail(f"launchPartitionBackfill failed: {answer}")
        return answer["backfillId"]

    def materialize(self, names: list[str], partitions: list[str] | None = None) -> tuple[str, str]:
        """Materialise ``names`` (and ``partitions``) as the UI's Materialize button does; ("run" | "backfill", id).

        ``useMaterializationAction``: add the keys that cannot be split off (``assetNodeAdditionalRequiredKeys``),
        take the first job every key belongs to (``getCommonJob``), then launch one run when nothing is
        partitioned, and otherwise what ``LaunchAssetChoosePartitionsDialog`` launches for the chosen partitions:
        one run for exactly one partition ("Launch 1 run"), a backfill for several."""
        extra = self.gql(ADDITIONAL_REQUIRED_KEYS, {"assetKeys": [key_input(n) for n in names]})
        names = [*names, *("/".join(k["path"]) for k in extra["assetNodeAdditionalRequiredKeys"])]
        nodes = self.asset_nodes(names)
        first = nodes[names[0]]
        jobs = [j for j in first["jobNames"] if all(j in nodes[n]["jobNames"] for n in names)]
        if not jobs:
            raise self.fail(f"no job contains all of {names}")
        job = jobs[0]
        if not any(nodes[n]["isPartitioned"] for n in names):
            return "run", self.launch_run(job, names)
        if not partitions:
            raise self.fail(f"{names} are partitioned: choose partitions")
        if len(partitions) > 1:
            if not job.startswith("__ASSET_JOB"):
                raise self.fail(f"a job backfill ({job}) is not what this helper reproduces")
            return "backfill", self.launch_backfill(names, partitions)
        answer = self.gql(
            PARTITION_TAGS_AND_CONFIG,
            {
                "repositoryName": self.repository,
                "repositoryLocationName": self.location,
                "jobName": job,
                "partitionName": partitions[0],
                "assetKeys": [key_input(n) for n in names],
            },
        )
        partition = answer["pipelineOrError"]["partition"]
        tags = partition["tagsOrError"]["results"]
        return "run", self.launch_run(job, names, tags=tags, run_config=partition["runConfigOrError"]["yaml"])

    def start_sensor(self, name: str) -> str:
        """Turn a sensor on as its toggle does; returns its instigation state id (for :meth:`stop_sensor`)."""
        selector = {"repositoryName": self.repository, "repositoryLocationName": self.location, "sensorName": name}
        answer = self.gql(START_SENSOR, {"sensorSelector": selector})["startSensor"]
        if answer["__typename"] != "Sensor" or answer["sensorState"]["status"] != "RUNNING":
            raise self.fail(f"startSensor {name} failed: {answer}")
        return answer["sensorState"]["id"]

    def stop_sensor(self, state_id: str) -> None:
        answer = self.gql(STOP_SENSOR, {"id": state_id})["stopSensor"]
        if answer["__typename"] != "StopSensorMutationResult":
            raise self.fail(f"stopSensor {state_id} failed: {answer}")

    def runs_tagged(self, key: str, value: str) -> list[dict[str, Any]]:
        """The runs carrying tag ``key=value``: run id, job (``pipelineName``), status and tags (as a dict)."""
        answer = self.gql(RUNS_BY_TAG, {"filter": {"tags": [{"key": key, "value": value}]}})["runsOrError"]
        if answer["__typename"] != "Runs":
            raise self.fail(f"runsOrError failed: {answer}")
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in answer["results"]]

    def terminate(self, run_id: str, policy: str = "MARK_AS_CANCELED_IMMEDIATELY") -> None:
        """The run page's Terminate (``terminateRuns``; force = ``MARK_AS_CANCELED_IMMEDIATELY``)."""
        answer = self.gql(TERMINATE_RUNS, {"runIds": [run_id], "terminatePolicy": policy})["terminateRuns"]
        results = answer.get("terminateRunResults") or []
        if answer["__typename"] != "TerminateRunsResult" or any(
            r["__typename"] != "TerminateRunSuccess" for r in results
        ):
            raise self.fail(f"terminateRuns failed: {answer}")

    # -- waiting -----------------------------------------------------------------------------------------------

    def run_status(self, run_id: str) -> str:
        return self.gql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        return self.gql(RUN_EVENTS, {"id": run_id})["logsForRun"].get("events", [])

    def run_errors(self, run_id: str) -> str:
        messages = []
        for event in self.run_events(run_id):
            error = event.get("error") or event.get("pipelineFailureError")
            if error:
                messages.append(error["message"].strip())
        return "\n".join(messages)[-4000:]

    def wait_run(self, run_id: str, timeout: float, expect: str | None = "SUCCESS") -> str:
        """Poll ``runOrError`` until the run is done; check its final status (``expect``, None: any)."""
        status = self.wait_for(
            f"run {run_id}", lambda: (s := self.run_status(run_id)) in DONE_RUN and s, timeout, every=2.0
        )
        if expect and status != expect:
            raise self.fail(f"run {run_id} ended {status}, expected {expect}:\n{self.run_errors(run_id)}")
        return status

    def wait_backfill(self, backfill_id: str, timeout: float) -> str:
        """Poll ``partitionBackfillOrError`` until the backfill is done; it must have succeeded."""

        def probe() -> str | None:
            answer = self.gql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            return answer["status"] if answer.get("status") in DONE_BACKFILL else None

        status = self.wait_for(f"backfill {backfill_id}", probe, timeout, every=5.0)
        if status not in ("COMPLETED", "COMPLETED_SUCCESS"):
            raise self.fail(f"backfill {backfill_id} ended {status}")
        return status

    def wait_launched(self, kind: str, launched_id: str, timeout: float) -> None:
        if kind == "run":
            self.wait_run(launched_id, timeout)
        else:
            self.wait_backfill(launched_id, timeout)
