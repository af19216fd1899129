"""Asset groups. Jobs and sensors select by group, so a new asset joins its job by its group alone.

* ``ingest`` (per slice): ``raw_slices``, ``samples`` -> job ``ingest_slice``, ``new_slices_sensor``
* ``training``: ``coreset`` -> ``teacher`` -> ``student`` -> ``artifact`` -> ``quality_report`` ->
  ``model`` (the promotion) -> job ``train_model``, ``training_sensor``, ``weekly_retrain``
* ``maps`` (per slice): ``embeddings``, ``drift`` -> job ``embed_slice``, ``automation_sensor``
"""

from ..home import TRAINING_POOL  # noqa: F401 - the pool whose one slot the instance counts per run
from ..map_names import DEFAULT_NAMES

INGEST, TRAINING, MAPS = (DEFAULT_NAMES.group(g) for g in ("ingest", "training", "maps"))
