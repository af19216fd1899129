"""Asset groups. Jobs and sensors select by group, so a new asset joins its job by its group alone.

* ``ingest`` (per slice): ``raw_slices``, ``samples`` -> job ``ingest_slice``, ``new_slices_sensor``
* ``training``: ``coreset`` -> ``teacher`` -> ``student`` -> ``artifact`` -> ``quality_report`` ->
  ``model`` (the promotion) -> job ``train_model``, ``training_sensor``, ``weekly_retrain``
* ``maps`` (per slice): ``embeddings``, ``drift`` -> job ``embed_slice``, ``automation_sensor``
"""

INGEST = "ingest"
TRAINING = "training"
MAPS = "maps"

#: The concurrency pool of every training asset: one slot per home (``DAGSTER_YAML``'s ``default_limit``).
TRAINING_POOL = "training"
#: Tag of every ``train_model`` run: the daemon's run queue starts one at a time.
TRAINING_TAG = "umap_assets/training"
