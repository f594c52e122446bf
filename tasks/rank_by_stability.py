"""Rank the unlabeled images by checkpoint stability and mark the reliable top fraction
(ST++, docs/design.md §3.3); persisted as one Parquet table (storage.schemas.RANKING)."""

from __future__ import annotations

from selftrain.stability import rank
from selftrain.stage import done_or_claimed, expect, get_store, log_stage, stage_task
from storage.keys import digest_json
from storage.schemas import RANKING, STABILITY, read_parquet, table_from_rows, to_parquet_bytes
from storage.store import ArtifactRef

STAGE, VERSION = "ranking", 2  # 2: floor(fraction * N) reliable, as the ST++ reference


@stage_task("rank_by_stability")
def rank_by_stability(store_url: str, scores: list[ArtifactRef], reliable_fraction: float = 0.5) -> ArtifactRef:
    """Rank the images by stability (ST++): the top ``reliable_fraction`` are reliable (docs/design.md §3.3)."""
    expect("rank_by_stability", "scores", scores, "stability scores")
    store = get_store(store_url)
    if not scores:
        raise ValueError("no stability scores to rank")
    ref = store.stage_ref(
        scores[0].dataset,
        STAGE,
        VERSION,
        "",
        {"scores": digest_json([f"{r.stage}/{r.key}" for r in scores])},
        {"reliable_fraction": float(reliable_fraction)},
    )
    if done_or_claimed(store, ref, "rank by stability"):
        log_stage("rank by stability", ref, reused=True)
        return ref
    uris, values = {}, {}
    for r in scores:
        for row in read_parquet(store.read(r, "stability.parquet"), STABILITY).to_pylist():
            if row["image_id"] in values:
                raise ValueError(f"image {row['image_id']} was scored twice")
            values[row["image_id"]], uris[row["image_id"]] = row["stability"], row["image_uri"]
    rows = [dict(r, image_uri=uris[r["image_id"]]) for r in rank(values, reliable_fraction)]
    reliable = sum(r["reliable"] for r in rows)
    store.write(
        ref,
        {"ranking.parquet": to_parquet_bytes(table_from_rows(rows, RANKING), RANKING)},
        meta={
            "num_images": len(rows),
            "reliable": reliable,
            "unreliable": len(rows) - reliable,
            "reliable_fraction": reliable_fraction,
        },
    )
    log_stage("rank by stability", ref, reused=False, detail=f"{reliable} of {len(rows)} images reliable")
    return ref
