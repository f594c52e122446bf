"""The `self-training` flow: Zoph et al. 2020 ("Rethinking Pre-training and Self-training") and
ST / ST++ (Yang et al. 2022), for detection (mmdet) and semantic segmentation (mmseg).

Reads as the algorithms (docs/design.md §2):
1. train a teacher on the labeled set, keeping K evenly spaced checkpoints;
2. shard the unlabeled images and pseudo-label every shard with test-time augmentation
   (every label above the model's floor is stored with its score);
3. choose each student's pseudo-label thresholds from the stored scores (the papers' fixed
   values by default; per-class quantile or mixture on request) and train the student:
   - zoph: from the teacher, half human / half pseudo batches, normalised loss (detection);
   - st:   re-initialised, labeled oversampled, strong augmentation on pseudo images;
   - st++: rank the images by the stability of the teacher's K checkpoints; phase 1 on the
           labeled + reliable images; the phase-1 student re-labels the unreliable ones
           (TTA); phase 2 on everything;
   with rounds > 1 each student is the next round's teacher;
4. evaluate teacher and students on the held-out set; report.
Every step is a content-addressed stage in the store: a re-run with the same inputs returns
the stored references instead of recomputing, and a killed run resumes where it stopped;
methods run in one flow share the teacher, its pseudo labels and its ranking.
"""

from __future__ import annotations

import datetime as dt
import inspect
import time
from typing import Annotated, Any, Optional
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.params import RENAMED, SelfTrainingParams, rename_deprecated
from selftrain.pseudo_labels import label_params, labeler_key
from selftrain.report import artifact_prefix
from selftrain.stage import ShardPlan, current_flow_run_id, get_store
from storage.settings import settings
from tasks.choose_thresholds import choose_thresholds
from tasks.evaluate import evaluate
from tasks.find_model import find_model
from tasks.list_unlabeled import list_unlabeled
from tasks.pseudo_label_shard import pseudo_label_shard
from tasks.rank_by_stability import rank_by_stability
from tasks.score_stability import score_stability
from tasks.select_images import select_images
from tasks.shard_images import shard_images
from tasks.train_model import train_model
from tasks.write_report import write_report


def task_runner():
    """The flow's task runner, by configuration (storage/settings.py): a Dask cluster given its
    address (SELFTRAIN_DASK_ADDRESS, e.g. tcp://10.0.0.5:8786: shard inference and stability
    scoring run on its workers), else threads, SELFTRAIN_SHARD_CONCURRENCY shards at once
    (default 1: each inference already uses every core, or the GPU)."""
    env = settings()
    if env.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=env.dask_address)
    return ThreadPoolTaskRunner(max_workers=env.shard_concurrency)


def pseudo_label_all(p: SelfTrainingParams, model, unlabeled, labeled, what: str):
    """Pseudo-label every unlabeled image with ``model`` (TTA): images it already labeled keep
    their shards untouched, new images form new shards; shards run in parallel up to the task
    runner. Returns (pseudo-label refs, the shard plan)."""
    log = get_run_logger()
    from selftrain.mm.configs import recipe_digest

    t0 = time.monotonic()
    if p.inference_batch_size == "auto" and p.shard_size < 16:
        log.warning(
            "inference_batch_size 'auto' measures the batch size on a shard of at least 16 images (64 on a "
            "GPU); with shard_size %d every shard runs batch 4: raise shard_size or give a batch size",
            p.shard_size,
        )
    recipe = recipe_digest(tta=p.kind.tta_defaults)
    labeler = labeler_key(model, labeled, label_params(p.scales, p.tta_flip, recipe, p.inference_precision))
    plan = shard_images(p.store, unlabeled, p.shard_size, labeler=labeler)
    shards = plan.shards
    futures = [
        pseudo_label_shard.submit(
            p.store,
            p.config_name,
            model,
            shard,
            labeled,
            scales=p.scales,
            flip=p.tta_flip,
            batch_size=p.inference_batch_size,
            precision=p.inference_precision,
        )
        for shard in shards
    ]
    # A progress artifact in the UI, updated as shards finish (reused shards finish at once).
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync in a sync flow
        progress=0.0,
        description=f"pseudo labeling by the {what}: "
        f"{plan.new_images} new of {plan.images} images, {len(shards)} shards",
    )
    refs = []
    for i, fut in enumerate(futures, start=1):
        refs.append(fut.result())
        update_progress_artifact(progress, progress=100.0 * i / len(futures))
        log.info("%s: pseudo-labeled shard %d/%d", what, i, len(futures))
    log.info(
        "%s: pseudo labeling took %.1f s (%d new of %d images; %d shards, %d reused)",
        what,
        time.monotonic() - t0,
        plan.new_images,
        plan.images,
        len(shards),
        plan.reused_shards,
    )
    return refs, plan


def thresholds_for(p: SelfTrainingParams, method: str, labeled, pseudo):
    """The thresholds a ``method`` student applies to the stored ``pseudo`` labels: its paper's
    fixed value unless score_threshold is given, or one chosen per class by threshold_rule."""
    return choose_thresholds(
        p.store,
        labeled,
        pseudo,
        rule=p.threshold_rule,
        default=p.threshold_of(method),
        class_thresholds=p.class_thresholds,
        keep=p.threshold_keep,
    )


def check_class_thresholds(class_thresholds: dict[str, float], classes: list[str]) -> None:
    """Every per-class threshold names a class of the labeled set (checked before training)."""
    unknown = sorted(set(class_thresholds) - set(classes))
    if unknown:
        raise ValueError(f"class_thresholds names unknown classes {unknown}; the labeled set's classes are {classes}")


def rank_images(p: SelfTrainingParams, teacher, shards, labeled):
    """ST++ ranking: stability of the teacher's K checkpoints per shard, then the top fraction."""
    futures = [
        score_stability.submit(
            p.store,
            p.config_name,
            teacher,
            shard,
            labeled,
            score_thr=p.threshold_of("st++"),
            class_thresholds=p.class_thresholds,
            batch_size=p.inference_batch_size,
            precision=p.inference_precision,
        )
        for shard in shards
    ]
    return rank_by_stability(p.store, [f.result() for f in futures], p.reliable_fraction)


def summarize_run(
    store_url: str, dataset: str, plan: ShardPlan, refs: list, started: dt.datetime, seconds: float
) -> str:
    """What this run did - facts of the run, not of the content-addressed report it returns
    (an identical re-run returns the same report): how many unlabeled images were new, and
    which of the stages it returns it computed (their manifests name this flow run; a stage
    another run computed while this one waited for it counts as reused) or reused. Published
    as the run's `<dataset>-self-training-run` artifact."""
    store = get_store(store_url)
    this_run = current_flow_run_id()

    def made_here(ref) -> bool:
        m = store.manifest(ref)
        if m.created_by is not None:
            return m.created_by == this_run
        return dt.datetime.fromisoformat(m.created_at) >= started  # a manifest from before created_by

    computed = [r for r in refs if made_here(r)]
    line = (
        f"this run: {plan.new_images} of {plan.images} unlabeled images were new (labeled in "
        f"{len(plan.shards) - plan.reused_shards} new shards; {plan.reused_shards} reused); "
        f"{len(computed)} of {len(refs)} stages computed, {len(refs) - len(computed)} reused; {seconds:.1f} s"
    )
    rows = "\n".join(f"| {r.stage} | `{r.key}` | {'computed' if r in computed else 'reused'} |" for r in refs)
    create_markdown_artifact(
        key=f"{artifact_prefix(dataset)}-run",
        markdown=f"# This run\n\n{line[len('this run: ') :]}.\n\n| stage | key | |\n| --- | --- | --- |\n{rows}\n",
        description=line,
    )
    return line


def run_summary(flow_run_id, dataset: str) -> str | None:
    """The 'this run: ...' line a finished flow run published (its `<dataset>-self-training-run`
    artifact), read from the Prefect API; None if it published none (it failed before)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    where = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
        key=ArtifactFilterKey(any_=[f"{artifact_prefix(dataset)}-run"]),
    )
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=where, limit=1)
    return found[0].description if found else None


def trained_iters(meta: dict, default: int) -> int:
    """The iterations a stored model trained (its manifest; older manifests hold them in params)."""
    return int(meta.get("iters") or (meta.get("params") or {}).get("iters") or default)


def flat_parameters(model: type[BaseModel]):
    """Give a ``**kwargs`` flow the fields of ``model`` as its signature, so that a deployment's
    parameters are the fields themselves: `prefect deployment run ... --param score_threshold=0.4`
    and the UI's form change one field and keep the others (Prefect merges parameters one
    level deep). The model validates them in the flow. Deprecated names (flows/params.py
    RENAMED) are accepted too, so that deployments saved with them keep running; their new
    names are then optional in the signature (the model still requires one of the two)."""
    fields = model.model_fields
    renamed = set(RENAMED.values())
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None if name in renamed else inspect.Parameter.empty if f.is_required() else f.default,
            annotation=Annotated[
                Optional[f.annotation] if name in renamed else f.annotation,  # noqa: UP045 - a runtime type
                Field(description=f.description),
            ],
        )
        for name, f in fields.items()
    ]
    params += [
        inspect.Parameter(
            old,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Optional[fields[new].annotation], Field(description=f"deprecated: use {new}")],  # noqa: UP045
        )
        for old, new in RENAMED.items()
    ]

    def decorate(fn):
        fn.__signature__ = inspect.Signature(params, return_annotation=str)
        fn.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
        return fn

    return decorate


def run(params: SelfTrainingParams, return_state: bool = False):
    """Run the flow with a validated parameter object (the demo's and benchmarks' entry): the
    report's URI, or with ``return_state`` the flow run's final Prefect state (its result is
    the URI; :func:`run_summary` reads what the run did)."""
    return self_training(**params.model_dump(mode="json"), return_state=return_state)


@flow(name="self-training", log_prints=True, validate_parameters=False, task_runner=task_runner())
@flat_parameters(SelfTrainingParams)
def self_training(**fields) -> str:
    """Teacher -> TTA pseudo labels on every shard -> student(s) -> evaluation -> report."""
    log = get_run_logger()
    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    p = SelfTrainingParams(**rename_deprecated(fields, warn=log.warning))
    store = p.store
    labeled = p.labeled.register(store, p.dataset, "labeled")
    val = p.val.register(store, p.dataset, "val", like=labeled)
    check_class_thresholds(p.class_thresholds, get_store(store).manifest(labeled).meta["classes"])
    unlabeled = list_unlabeled(store, p.dataset, p.unlabeled, labeled)  # images now labeled are left out

    # 1. Teacher on the labeled set, K evenly spaced checkpoints (or the trained one named).
    if p.teacher:
        teacher = find_model(store, p.dataset, p.teacher, p.config_name)
    else:
        teacher = train_model(
            store,
            p.config_name,
            labeled,
            val,
            role="teacher",
            iters=p.teacher_iters,
            k=p.k,
            seed=p.seed,
            aug=p.teacher_augmentation,
            pretrained=p.pretrained,
        )
    # Students' schedules, as the papers train them unless student_iters is given: a zoph
    # student as long as its teacher; an st / st++ student (each phase) for the teacher's
    # epochs over its own training set (iterations derived in train_model). A named teacher's
    # own length counts, not the teacher_iters parameter.
    teacher_iters = trained_iters(get_store(store).manifest(teacher).meta, p.teacher_iters)
    train: dict[str, Any] = dict(k=p.k, aug=p.aug, pretrained=p.pretrained)
    zoph_train: dict[str, Any] = dict(
        train, iters=p.student_iters or teacher_iters, zoph_batch=p.zoph_batch, normalize_loss=p.normalize_loss
    )
    st_train: dict[str, Any] = dict(
        train, iters=p.student_iters, teacher_iters=teacher_iters, aug="weak", strong_aug=p.strong_aug
    )  # st: weak on all, strong on the pseudo-labeled images
    models, ranking = {"teacher": teacher}, None
    # 2. TTA pseudo labels of every unlabeled image by the teacher (only new images cost work).
    first_pseudo, first_plan = pseudo_label_all(p, teacher, unlabeled, labeled, "teacher")
    log.info("%d of %d unlabeled images were new", first_plan.new_images, first_plan.images)
    # The thresholds of the first method's student, shown in the report with the teacher's labels.
    shown = thresholds_for(p, p.methods[0], labeled, first_pseudo)
    stages = [teacher, *first_pseudo, shown]  # what this run returns, for its summary

    for method in p.methods if p.retrain_student else []:
        current = teacher
        for r in range(1, p.rounds + 1):
            seed = p.seed + r - 1
            name = method if p.rounds == 1 else f"{method}-round{r}"
            pseudo, plan = (
                (first_pseudo, first_plan)
                if r == 1
                else pseudo_label_all(p, current, unlabeled, labeled, f"{name} teacher")
            )
            # 3. The student, on the pseudo labels its thresholds keep.
            thresholds = thresholds_for(p, method, labeled, pseudo)
            stages.append(thresholds)
            if method == "zoph":
                student = train_model(
                    store,
                    p.config_name,
                    labeled,
                    val,
                    role="student",
                    seed=seed,
                    **zoph_train,
                    init=current if p.init == "teacher" else None,
                    pseudo=pseudo,
                    method="zoph",
                    alpha=p.alpha,
                    thresholds=thresholds,
                )
            elif method == "st":
                student = train_model(
                    store,
                    p.config_name,
                    labeled,
                    val,
                    role="student",
                    seed=seed,
                    **st_train,
                    pseudo=pseudo,
                    method="st",
                    thresholds=thresholds,
                )
            else:  # st++
                rank = rank_images(p, current, plan.shards, labeled)
                ranking = ranking or rank
                phase1 = train_model(
                    store,
                    p.config_name,
                    labeled,
                    val,
                    role="student",
                    seed=seed,
                    **st_train,
                    pseudo=pseudo,
                    method="st",
                    reliable_only=rank,
                    thresholds=thresholds,
                )
                unreliable = select_images(store, unlabeled, rank, reliable=False)
                relabeled, _ = pseudo_label_all(p, phase1, unreliable, labeled, f"{name} phase-1 student")
                phase2_thresholds = thresholds_for(p, method, labeled, [*pseudo, *relabeled])
                student = train_model(
                    store,
                    p.config_name,
                    labeled,
                    val,
                    role="student",
                    seed=seed,
                    **st_train,
                    pseudo=pseudo,
                    method="st",
                    reliable_only=rank,
                    relabeled=relabeled,
                    thresholds=phase2_thresholds,
                )
                models[f"{name} phase 1"] = phase1
                stages += [rank, phase1, *relabeled, phase2_thresholds]
            models[name] = student
            stages += [*(pseudo if r > 1 else []), student]
            current = student

    # 4. Evaluation of every model on the held-out set, and the report.
    evaluations = {name: evaluate(store, p.config_name, m, val) for name, m in models.items()}
    report = write_report(
        store,
        p.dataset,
        "+".join(p.methods),
        p.model_dump(mode="json"),
        evaluations,
        first_pseudo,
        {"labeled": labeled, "val": val, "unlabeled": unlabeled, **models},
        ranking=ranking,
        thresholds=shown,
    )
    stages += [*evaluations.values(), report]
    log.info(summarize_run(store, p.dataset, first_plan, stages, started, time.monotonic() - t0))
    log.info("report: %s", report.uri)
    return report.uri
