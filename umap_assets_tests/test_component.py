"""The UmapMap component (issue 34): its names, its attributes, its scaffold, a project that uses it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from umap_assets.component import SENSORS_ON, UmapMap
from umap_assets.defs.resources import LocalEmbedding, SparkEmbedding
from umap_assets.discovery import IDENTITY_TAG, SLICES
from umap_assets.home import TILE_RUNS_POOL, TRAINING_POOL
from umap_assets.map_names import DEFAULT_MAP, MapNames
from umap_assets.planner import COMPACT_JOB, EMBED_JOB, INGEST_JOB, REMOVE_JOB, RETRAIN_TAG, TRAIN_JOB

from .conftest import make_slice

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"


def every_name(names: MapNames) -> set[str]:
    return {names.asset_key("samples").to_user_string(), names.group("training"), names.job(TRAIN_JOB),
            names.sensor("training_sensor"), names.schedule("weekly_retrain"), names.partitions,
            names.training_pool, names.tag("retrain_reason"), names.resource_key("warehouse"),
            names.asset_key("map_tile_runs").to_user_string(), names.job(COMPACT_JOB), names.tile_runs_pool}


def test_the_default_map_keeps_todays_names():
    names = MapNames()
    assert names.name == DEFAULT_MAP and names.is_default
    assert names.asset_key("samples") == dg.AssetKey("samples")
    assert [names.job(j) for j in (INGEST_JOB, TRAIN_JOB, EMBED_JOB, REMOVE_JOB)] == [INGEST_JOB, TRAIN_JOB, EMBED_JOB,
                                                                                       REMOVE_JOB]
    assert (names.job("compact_tiles"), COMPACT_JOB) == ("compact_tiles", "compact_tiles")
    assert (names.partitions, names.training_pool) == (SLICES, TRAINING_POOL)
    assert names.tile_runs_pool == TILE_RUNS_POOL == "map_tile_runs"
    assert names.asset_key("map_tile_runs") == dg.AssetKey("map_tile_runs")
    assert names.tag("retrain_reason") == RETRAIN_TAG and names.tag("source_identity") == IDENTITY_TAG
    assert names.resource_key("warehouse") == "warehouse" and names.group("maps") == "maps"


def test_two_named_maps_share_no_name_with_each_other_or_the_default():
    products, users, default = (every_name(MapNames(n)) for n in ("products", "users", DEFAULT_MAP))
    # 12 names, 11 strings: a map's asset `<name>/map_tile_runs` and its pool of that name are two namespaces (as the
    # default map's group and pool, both "training")
    assert len(products) == len(users) == 11
    assert not products & users and not products & default and not users & default
    assert MapNames("products").asset_key("samples") == dg.AssetKey(["products", "samples"])
    assert MapNames("products").training_pool == "products/training"
    assert MapNames("products").tile_runs_pool == "products/map_tile_runs"


@pytest.mark.parametrize("bad", ["", "Products", "1st", "a-b", "a__b", "x" * 41])
def test_a_bad_map_name_is_refused_in_one_line(bad):
    with pytest.raises(ValueError, match=r"^map name .*: expected a lowercase identifier") as raised:
        MapNames(bad)
    assert "\n" not in str(raised.value)


def test_the_attributes_reach_the_resources(tmp_path):
    spark = UmapMap(home=str(tmp_path / "h"), seed=7, columns={"id_column": "pid", "dim": 4},
                    quality_gates={"k": 10}, engine={"kind": "spark", "master": "local[1]", "conf": {"a": "b"}})
    made = spark.resources(spark.names())
    assert made["warehouse"].home == str(tmp_path / "h") and made["seed"].value == 7
    assert made["contract"].spec().id_column == "pid" and made["contract"].declared().dim == 4
    assert made["quality_gates"].k == 10 and made["quality_gates"].trust_tolerance == 0.005  # today's default
    assert isinstance(made["embedding_engine"], SparkEmbedding) and made["embedding_engine"].conf == {"a": "b"}
    local = UmapMap(engine={"kind": "local", "chunk_rows": 128})
    assert made.keys() == local.resources(local.names()).keys()
    assert local.resources(local.names())["embedding_engine"].chunk_rows == 128
    assert isinstance(local.resources(local.names())["embedding_engine"], LocalEmbedding)


def test_which_sensors_and_schedules_run_is_an_attribute():
    today = dg.component_defs(component=UmapMap())
    assert {s.name for s in today.sensors if s.default_status == dg.DefaultSensorStatus.RUNNING} == set(SENSORS_ON)
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in today.schedules)
    quiet = dg.component_defs(component=UmapMap(sensors_on=["new_slices_sensor"], schedules_on=["weekly_retrain"]))
    running = {s.name for s in quiet.sensors if s.default_status == dg.DefaultSensorStatus.RUNNING}
    assert running == {"new_slices_sensor"} and len(quiet.sensors) == len(today.sensors)
    assert [s.default_status for s in quiet.schedules] == [dg.DefaultScheduleStatus.RUNNING]


def test_the_component_gives_todays_definitions():
    from umap_assets.definitions import load_definitions

    project = load_definitions()
    component = dg.component_defs(component=UmapMap())
    assert project.resolve_asset_graph().get_all_asset_keys() == component.resolve_asset_graph().get_all_asset_keys()
    assert {j.name for j in project.jobs} == {j.name for j in component.jobs} == {INGEST_JOB, TRAIN_JOB, EMBED_JOB,
                                                                                    REMOVE_JOB, COMPACT_JOB}
    assert set(project.resources) == {"warehouse", "contract", "seed", "quality_gates", "embedding_engine"}


def test_a_map_with_a_name_of_its_own_builds_its_own_definitions(tmp_path):
    names = MapNames("products")
    products = dg.component_defs(component=UmapMap(name="products", home=str(tmp_path)))
    keys = products.resolve_asset_graph().get_all_asset_keys()
    assert keys and all(k.path[0] == "products" for k in keys)
    assert {j.name for j in products.jobs} == {names.job(j) for j in (INGEST_JOB, TRAIN_JOB, EMBED_JOB, REMOVE_JOB,
                                                                        COMPACT_JOB)}
    assert set(products.resources) == {names.resource_key(r) for r in ("warehouse", "contract", "seed", "quality_gates",
                                                                        "embedding_engine")}
    assert products.resources[names.resource_key("warehouse")].home == str(tmp_path)


def new_project(root: Path) -> Path:
    """A new Dagster project made as Dagster's docs say (``create-dagster project``; no uv, nothing downloaded)."""
    done = subprocess.run([str(DG.parent / "create-dagster"), "project", str(root), "--no-uv-sync"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1",
                                                                          "DAGSTER_DG_UPDATE_CHECK_ENABLED": "0"})  # offline
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def dg_cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(project / "src")]),
           "PATH": os.pathsep.join([str(DG.parent), os.environ.get("PATH", "")]), "VIRTUAL_ENV": sys.prefix}
    return subprocess.run([str(DG), *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_scaffold_writes_a_defs_yaml_to_fill_in_and_dg_checks_it(tmp_path):
    project = new_project(tmp_path / "shop")
    done = dg_cli(project, "scaffold", "defs", "umap_assets.UmapMap", "maps/default")
    assert done.returncode == 0, done.stderr
    written = project / "src" / "shop" / "defs" / "maps" / "default" / "defs.yaml"
    declared = yaml.safe_load(written.read_text())
    assert declared["type"] == "umap_assets.UmapMap" and declared["attributes"]["name"] == "default"
    assert declared["attributes"]["sensors_on"] == list(SENSORS_ON)
    assert not [p.name for p in written.parent.iterdir() if p.name != "defs.yaml"], "no temp file left behind"
    checked = dg_cli(project, "check", "defs")
    assert checked.returncode == 0 and "All definitions loaded successfully" in checked.stdout, checked.stderr


def test_the_component_ingests_a_slice_into_its_own_home(tmp_path):
    home = tmp_path / "products"
    make_slice(home / "incoming" / "part_a.parquet", n=200)
    defs = dg.component_defs(component=UmapMap(home=str(home), sensors_on=[]))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MapNames().partitions, ["part_a"])
        job = defs.resolve_job_def(MapNames().job(INGEST_JOB))
        assert job.execute_in_process(partition_key="part_a", instance=instance).success
    assert pq.read_metadata(home / "warehouse" / "raw_slices" / "part_a.parquet").num_rows == 200


MATERIALIZE = """\
import sys
import dagster as dg
from shop.definitions import defs
partitions, job_name, key = sys.argv[1:]
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions(partitions, [key])
    job = defs().resolve_job_def(job_name)
    sys.exit(0 if job.execute_in_process(partition_key=key, instance=instance).success else 1)
"""


def installed_venv(where: Path) -> Path:
    """A venv with umap-assets installed (editable, no dependencies: they come from this venv's site-packages),
    so its entry points are those of a fresh install."""
    import sysconfig

    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    purelib = Path(subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"), "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "-e", str(REPO)], check=True, capture_output=True, timeout=120)
    return where


def test_a_newcomer_adds_two_maps_to_a_new_project(tmp_path):
    venv = installed_venv(tmp_path / "venv")
    env = {**os.environ, "PATH": os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]),
           "VIRTUAL_ENV": str(venv), "PYTHONPATH": str(tmp_path / "shop" / "src"), "DAGSTER_DISABLE_TELEMETRY": "1"}

    def run(*args: str, cwd: Path = tmp_path / "shop") -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "python"), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=180)

    project = new_project(tmp_path / "shop")
    listed = run("-m", "dagster_dg_cli.cli", "list", "components")
    assert "umap_assets.UmapMap" in listed.stdout, listed.stderr  # found through the entry point
    for folder in ("maps/default", "maps/users"):
        assert run("-m", "dagster_dg_cli.cli", "scaffold", "defs", "umap_assets.UmapMap", folder).returncode == 0
    users = project / "src" / "shop" / "defs" / "maps" / "users" / "defs.yaml"
    declared = yaml.safe_load(users.read_text())
    declared["attributes"]["source"]["path"] = (tmp_path / "users_vectors").as_uri()  # a source of its own
    users.write_text(yaml.safe_dump(declared))
    checked = run("-m", "dagster_dg_cli.cli", "check", "defs")
    assert checked.returncode == 0 and "All definitions loaded successfully" in checked.stdout, checked.stderr
    listed = run("-m", "dagster_dg_cli.cli", "list", "defs", "--json")
    assert listed.returncode == 0 and '"users/samples"' in listed.stdout and '"users__ingest_slice"' in listed.stdout

    make_slice(project / "data" / "default" / "incoming" / "part_a.parquet", n=200)
    make_slice(tmp_path / "users_vectors" / "part_u.parquet", n=120, seed=3)
    for names, key in ((MapNames(), "part_a"), (MapNames("users"), "part_u")):
        done = run("-c", MATERIALIZE, names.partitions, names.job("ingest_slice"), key)
        assert done.returncode == 0, done.stderr[-3000:]
    assert pq.read_metadata(project / "data" / "default" / "warehouse" / "raw_slices" / "part_a.parquet").num_rows == 200
    assert pq.read_metadata(project / "data" / "users" / "warehouse" / "raw_slices" / "part_u.parquet").num_rows == 120
    assert not (project / "data" / "users" / "warehouse" / "raw_slices" / "part_a.parquet").exists()
