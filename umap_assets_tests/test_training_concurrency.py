"""At most one training per home, enforced by Dagster's own run queue (issue 30).

The home's ``dagster.yaml`` (``home.DAGSTER_YAML``) gives pool ``training`` one slot counted per run.
These tests run Dagster's real queue daemon over a real instance configured from that very file;
only the launcher records the runs it is asked to start instead of starting processes.
"""

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.execution.api import create_execution_plan
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from umap_assets import planner
from umap_assets.definitions import load_definitions
from umap_assets.home import DAGSTER_YAML
from umap_assets.runner import Runner, RunSummary


@pytest.fixture(scope="module")
def defs():
    return load_definitions()


@pytest.fixture
def instance():
    overrides = {
        "concurrency": yaml.safe_load(DAGSTER_YAML)["concurrency"],
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
        "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"},
    }
    with instance_for_test(overrides=overrides) as instance:
        planner.limit_training(instance)
        yield instance


def _run(instance, defs, job_name: str, *, status=dg.DagsterRunStatus.NOT_STARTED, tags=None, partition=None):
    """A run of ``job_name`` as the UI or a sensor submits it: with its execution plan, so its pools are known."""
    job = defs.resolve_job_def(job_name)
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="umap_assets.definitions")), "__repository__"), job_name)
    tags = {**(tags or {}), **({"dagster/partition": partition} if partition else {})}
    run = instance.create_run_for_job(job_def=job, execution_plan=create_execution_plan(job, tags=tags),
                                      remote_job_origin=origin, status=status, tags=tags)
    if status == dg.DagsterRunStatus.NOT_STARTED:  # submitted to the queue
        instance.report_dagster_event(DagsterEvent(event_type_value=DagsterEventType.PIPELINE_ENQUEUED.value,
                                                   job_name=job_name), run_id=run.run_id)
    return run


def _dequeue(instance) -> set[str]:
    """One look of the queue daemon; the ids of the runs it has launched so far."""
    with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as context:
        list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(context))
    return {run.run_id for run in instance.run_launcher.queue()}


def _finish(instance, run) -> None:
    instance.report_dagster_event(DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value,
                                               job_name=run.job_name), run_id=run.run_id)


def test_two_training_runs_submitted_at_once_run_one_after_the_other(instance, defs):
    instance.add_dynamic_partitions("slices", ["a"])
    first, second = _run(instance, defs, planner.TRAIN_JOB), _run(instance, defs, planner.TRAIN_JOB)
    maps = _run(instance, defs, planner.EMBED_JOB, partition="a")
    launched = _dequeue(instance)
    assert maps.run_id in launched  # the pool limits training only
    assert len(launched & {first.run_id, second.run_id}) == 1
    waiting = second if first.run_id in launched else first
    assert instance.get_run_by_id(waiting.run_id).status == dg.DagsterRunStatus.QUEUED
    assert waiting.run_id not in _dequeue(instance)  # still held while the first one runs
    _finish(instance, first if waiting is second else second)
    assert waiting.run_id in _dequeue(instance)


def test_a_training_run_of_umap_assets_run_holds_the_queue(instance, defs):
    """``umap-assets run`` trains in its own process; the queue counts that run as holding the pool."""
    in_process = _run(instance, defs, planner.TRAIN_JOB, status=dg.DagsterRunStatus.STARTED,
                      tags={planner.LAUNCHER_TAG: planner.launcher()})
    queued = _run(instance, defs, planner.TRAIN_JOB)
    assert queued.run_id not in _dequeue(instance)
    _finish(instance, in_process)
    assert queued.run_id in _dequeue(instance)


def test_umap_assets_run_refuses_to_train_over_a_training_run_in_one_line(instance, defs):
    launched = _run(instance, defs, planner.TRAIN_JOB)
    assert launched.run_id in _dequeue(instance)  # started by the daemon (the UI, a sensor, the schedule)
    lines, summary = [], RunSummary()
    runner = Runner(defs, instance, summary, say=lines.append)
    before = len(instance.get_runs())
    assert not runner.execute(planner.Step(planner.TRAIN_JOB, planner.TRAIN_JOB))
    assert len(instance.get_runs()) == before  # refused before any run was recorded
    assert lines == [f"  FAILED  train_model: {summary.failed['train_model']}"]
    assert launched.run_id[:8] in lines[0] and "at most one trains at a time" in lines[0]
    _finish(instance, launched)
    assert planner.training_refusal(instance) is None


def test_the_pool_has_one_slot_from_the_first_look(instance):
    assert instance.event_log_storage.get_concurrency_info("training").slot_count == 1
    assert instance.get_concurrency_config().pool_config.pool_granularity.value == "run"
