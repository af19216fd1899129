"""Asset groups. Jobs and sensors select by group, so a new asset joins its job by its group alone.

* ``ingest`` (per slice): ``raw_slices``, ``samples`` -> job ``ingest_slice``, ``new_slices_sensor``
* ``training``: ``coreset`` -> ``teacher`` -> ``student`` -> ``artifact`` -> ``quality_report`` ->
  ``model`` (the promotion) -> job ``train_model``, ``training_sensor``, ``weekly_retrain``
* ``maps`` (per slice): ``embeddings``, ``map_tiles``, ``drift`` -> job ``embed_slice``; and ``map_tile_runs``
  (unpartitioned, after ``map_tiles``) -> job ``compact_tiles``; all automated by ``automation_sensor``
"""

#: The groups' names in the default map; another map's are ``<name>_ingest`` ... (:meth:`MapNames.group`).
INGEST, TRAINING, MAPS = "ingest", "training", "maps"
