"""Find a trained model in the store by reference, instead of training one (re-labeling runs)."""

from __future__ import annotations

from selftrain.stage import find_model as find_model_ref
from selftrain.stage import get_store, stage_logger, stage_task
from storage.store import ArtifactRef


@stage_task("find_model")
def find_model(store_url: str, dataset: str, reference: str, model_config: str | None = None) -> ArtifactRef:
    """Find the trained teacher a reference names: 'latest' or 'train/<key>'.

    'latest': the newest completed teacher of this dataset and config. Raises
    selftrain.stage.ModelNotFound naming what was looked for."""
    store = get_store(store_url)
    ref = find_model_ref(store, dataset, reference, model_config)
    meta = store.manifest(ref).meta
    stage_logger().info(
        "teacher %r: %s (trained %s, %s iterations)",
        reference,
        ref.uri,
        store.manifest(ref).created_at,
        (meta.get("params") or {}).get("iters"),
    )
    return ref
