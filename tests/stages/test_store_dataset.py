"""A feature-store split as a Ray Dataset: the rows and columns asked for, without the actor
processes Ray Data's default Parquet reader starts for every read."""

import ray
import ray.data
from ray.util.state import list_actors

from fatlib.io.feature_store import FeatureStore
from fatlib.stages.store_dataset import DATASOURCE_V2_VARIABLE, split_dataset
from tests.conftest import SMALL_STORE


def _footer_readers() -> int:
    """How many footer-reader actors this Ray has ever started (alive or not)."""
    # This Ray's address: under xdist, another test Ray runs on the machine.
    return len(list_actors(address=ray.get_runtime_context().gcs_address, limit=1000,
                           filters=[("class_name", "=", "FooterReader")], detail=False))


def test_a_split_reads_its_rows_and_columns_and_starts_no_actor(small_store, monkeypatch):
    monkeypatch.delenv(DATASOURCE_V2_VARIABLE, raising=False)
    store = FeatureStore.open(str(small_store / "features"))
    context = ray.data.DataContext.get_current()
    before, bars = _footer_readers(), context.enable_progress_bars
    ds = split_dataset(store, "train_curated", ["fname", "n_frames"])
    rows = ds.take_all()
    assert len(rows) == SMALL_STORE["n_curated"] and set(rows[0]) == {"fname", "n_frames"}
    assert _footer_readers() == before and not ds.context.use_datasource_v2
    # The job's own settings are left as they were, and the dataset runs with them.
    assert context.enable_progress_bars == bars == ds.context.enable_progress_bars
    part = store.files("train_curated")[0].rsplit("/", 1)[1]
    some = split_dataset(store, "train_curated", ["fname"], parts={part}).count()
    assert 0 < some <= SMALL_STORE["n_curated"]


def test_the_users_choice_of_parquet_reader_is_kept(small_store, monkeypatch):
    monkeypatch.setenv(DATASOURCE_V2_VARIABLE, "1")
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "use_datasource_v2", True)  # as the variable sets it at import
    store = FeatureStore.open(str(small_store / "features"))
    # Planned with Ray's V2 reader (not run: it would start 32 footer-reader processes).
    assert split_dataset(store, "train_curated", ["fname"]).context.use_datasource_v2
    assert context.use_datasource_v2
