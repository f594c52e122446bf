"""Register a labeled (or validation) segmentation set: image folder + label-map folder.

Every image must have a label map of the same size as the image decodes in training
(OpenCV, EXIF orientation applied) whose values, after the optional ``label_map``
(source value -> class index, e.g. ``{255: 1}`` for binary masks stored as 0/255), are
class indices (0 .. C-1, index = position in ``classes``) or the ignore label 255; palette
PNGs (PASCAL VOC) are read as their indices, 1-bit PNGs as 0/1. A labeled set in which
fewer than two classes have any pixel is refused (a model would learn one class only); a
declared class without any pixel is a warning recorded in the manifest. The key is the
content: the images' URIs and byte sizes (symbolic links followed), the label maps' URIs
and SHA-256 digests - the labels are the set's content, and a map corrected in place keeps
its name and often its byte size (a value remapped, an uncompressed PNG) - the role, class
names, suffixes and label mapping. An image edited in place at the same byte size (an EXIF
orientation tag rewritten) keeps the key: images are not read to key the set. The maps'
digests are stored by the listing's versions of them (:func:`_map_digests`): an unchanged set
registered again reads no file where the storage gives versions (docs/design.md §5.2). Every
problem names the file it concerns; two files whose names differ in the suffix's case only
(``a.png``, ``a.PNG``) are refused when the folders are listed (a split's look-up takes
the suffix as given first); a sub-folder or file that cannot be read (a volume's
``lost+found``) and label maps without an image are warnings naming them.

With a ``split`` file (mmseg's ``ann_file``: one image per line, its path under ``img_dir``
without ``img_suffix``, e.g. PASCAL VOC's ``ImageSets/Segmentation/train.txt``; read_split)
the set is the images it lists, not every image under ``img_dir``: a line listed twice or
naming no image is refused naming the line, listed images without a file or a label map are
refused naming them. The key is the same content digest, so two split files that list the
same images name one registered set.
"""

from __future__ import annotations

import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from selftrain.registration import (
    DatasetError,
    check_label_map,
    decoded_size,
    degenerate,
    exif_orientation,
    size_mismatch,
    unreadable_note,
)
from selftrain.stage import done_or_claimed, get_store, log_stage, stage_logger, stage_task
from storage.keys import digest_bytes, digest_json
from storage.listing import (
    IMAGE_SUFFIXES,
    ListedFile,
    list_files,
    local_version,
    mount_types,
    object_version,
    read_url,
    version_holds,
)
from storage.masks import IGNORE_LABEL
from storage.store import ArtifactRef

STAGE, VERSION = "seg_dataset", 3  # 3: label maps keyed by their bytes, not their sizes
# the label maps' digests by their listing (_map_digests); 2: stored only when each map read held its version
DIGESTS_STAGE, DIGESTS_VERSION = "seg_map_digests", 2
MAP_READ_THREADS = 8  # label maps read at once for their digests (object stores answer each in ~10 ms)


def _list(url: str, what: str, unreadable: list[str]) -> list[ListedFile]:
    """Every file under ``url``; what cannot be read is appended to ``unreadable``."""
    try:
        return list_files(url, unreadable=unreadable)
    except OSError as exc:  # missing, a file, the folder itself unreadable
        raise DatasetError(f"{what}: {exc}") from exc


def _by_stem(files: list[ListedFile], suffix: str, what: str) -> dict[str, tuple[str, int, str]]:
    """stem (path relative to the folder, without suffix) -> (uri, size, version) of the files ending in
    suffix (in any case). DatasetError naming both when two files differ in the suffix's case
    only (``a.png`` and ``a.PNG``): either could be the image's, and a listing's order is no
    reason to choose."""
    found: dict[str, tuple[str, int, str]] = {}
    for f in files:
        if f.rel.lower().endswith(suffix.lower()):
            stem = f.rel[: -len(suffix)]
            if stem in found:
                raise DatasetError(f"{what}: {found[stem][0]} and {f.uri} are one name in two spellings; remove one")
            found[stem] = (f.uri, f.size, f.version)
    return found


def read_split(url: str, role: str = "set") -> tuple[list[str], list[str]]:
    """The image stems a split file lists, in its order, and what reading them changed.

    One stem a line: its path under ``img_dir`` without the suffix. Blank lines, surrounding
    spaces, a byte-order mark and Windows line ends are ignored; '\\' is read as '/', and a
    leading '/' or './' and inner './' are removed (said in the second list, with an example);
    spaces inside a line belong to the name, as in mmseg's ``ann_file``. Raises DatasetError
    naming ``role``, the file and the line: missing or unreadable, not UTF-8, a path climbing
    out of ``img_dir`` ('..'), the same image listed twice, or no image at all."""
    import posixpath

    where = f"{role}: split file {url}"
    try:
        text = read_url(url).decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{where} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{where} is not UTF-8 text: {exc}") from exc
    except OSError as exc:  # a folder, a permission
        raise DatasetError(f"{where} cannot be read as a file: {type(exc).__name__}: {exc}") from exc
    stems: list[str] = []
    first: dict[str, int] = {}
    changed: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        given = line.strip()
        if not given:
            continue
        stem = posixpath.normpath(given.replace("\\", "/")).lstrip("/")
        if stem in ("", ".") or stem == ".." or stem.startswith("../"):
            raise DatasetError(f"{where}: line {number} ({given!r}) names no image under img_dir")
        if stem != given:
            changed.append((given, stem))
        if stem in first:
            raise DatasetError(f"{where}: line {number} lists {stem!r} again (first on line {first[stem]})")
        first[stem] = number
        stems.append(stem)
    if not stems:
        raise DatasetError(f"{where} lists no image")
    notes = []
    if changed:
        notes.append(
            f"{where}: {len(changed)} line(s) read as paths under img_dir, e.g. {changed[0][0]!r} as {changed[0][1]!r}"
        )
    return stems, notes


def _split_files(
    folder: str, stems: list[str], suffix: str, what: str, unreadable: list[str]
) -> tuple[dict[str, tuple[str, int, str]], list[str]]:
    """(stem -> (uri, size, version) of each listed stem's file ``<folder>/<stem><suffix>`` - the
    suffix as given, in lower or in upper case - the stems without one). One look-up a file:
    the folder is not listed, since it may hold far more (a merged set's folder holds the
    unlabeled pool too). URIs are formed as listings form them; a file that cannot be reached
    (a folder without permission) is appended to ``unreadable`` and counts as missing.
    DatasetError when ``folder`` (``what``: its parameter's name) does not exist."""
    import os

    from fsspec.implementations.local import LocalFileSystem

    from storage.listing import url_fs

    fs, base = url_fs(folder)
    local = isinstance(fs, LocalFileSystem)
    types = mount_types() if local else {}
    if local:
        base = os.path.abspath(base)
    else:
        fs.invalidate_cache()  # a filesystem object reused in this process may hold old answers
    if not fs.isdir(base):
        raise DatasetError(f"{what} {folder} does not exist (or is not a folder)")
    found: dict[str, tuple[str, int, str]] = {}
    missing: list[str] = []
    for stem in stems:
        for ending in dict.fromkeys((suffix, suffix.lower(), suffix.upper())):
            rel = stem + ending
            path = os.path.join(base, *rel.split("/")) if local else base.rstrip("/") + "/" + rel
            try:
                info = fs.info(path)
            except FileNotFoundError:
                continue
            except PermissionError as exc:  # its folder's: no other spelling can be reached either
                unreadable.append(f"{path} ({exc.strerror or exc})")
                break
            if info.get("type") != "directory":  # the URI a listing gives the file (storage/listing.py)
                if local:
                    try:
                        version = local_version(os.stat(path), types=types)
                    except OSError:  # gone since: no version, read when digested (and named then)
                        version = ""
                else:
                    version = object_version(info)
                found[stem] = (
                    path if local else fs.unstrip_protocol(path),
                    int(info.get("size") or 0),
                    version,
                )
                break
        if stem not in found:
            missing.append(stem)
    return found, missing


def _map_digests(store: Any, dataset: str, maps: list[tuple[str, int, str]]) -> list[str]:
    """SHA-256 (hex) of each label map's bytes, for ``maps`` as (uri, size, version) in the
    order given, read MAP_READ_THREADS at a time.

    When the listing gave every map a version (storage/listing.py: a local file's times and
    inode on a file system where they name its bytes, an object's MD5), the digests are stored
    (stage ``seg_map_digests``) under a key of every map's URI, size and version - and only when
    every map read was still that version (``version_holds``: its MD5, or its times after the
    read) - so that registering an unchanged set again reads no label map (20,000 maps on S3
    are otherwise 20,000 GETs a run); a map added, removed or changed (locally any write or
    touch; on an object store other bytes) makes another key and every map is read again.
    Without a version for every map (another file system, an object uploaded in parts, a file
    changed within the last seconds) every map is read.
    DatasetError naming the map when one vanished or cannot be read since it was listed."""

    def one(entry: tuple[str, int, str]) -> tuple[str, bool]:
        uri, _, version = entry
        try:
            data = read_url(uri)
        except OSError as exc:
            raise DatasetError(f"label map {uri} cannot be read: {type(exc).__name__}: {exc}") from exc
        return digest_bytes(data), bool(version) and version_holds(uri, version, data, types)

    ref, types = None, mount_types()
    if maps and all(version for _, _, version in maps):
        listing = digest_json([[uri, size, version] for uri, size, version in maps])
        ref = store.stage_ref(dataset, DIGESTS_STAGE, DIGESTS_VERSION, "", {"maps": listing}, {})
        if done_or_claimed(store, ref, "label map digests"):
            return list(store.read_json(ref, "digests.json"))
    with ThreadPoolExecutor(MAP_READ_THREADS) as pool:
        read = list(pool.map(one, maps))
    digests = [digest for digest, _ in read]
    if ref is not None and all(held for _, held in read):  # else a map changed since it was listed
        store.write(ref, {"digests.json": json.dumps(digests).encode()}, meta={"num_maps": len(maps)})
    return digests


def _missing(what: str, missing: list[str], hint: str = "") -> DatasetError:
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return DatasetError(f"{what}: {missing[:5]}{more}{hint}")


def _listing_warnings(
    role: str,
    img_dir: str,
    ann_dir: str,
    img_suffix: str,
    img_files: list[ListedFile],
    images: dict,
    maps: dict,
    unreadable: list[str],
) -> list[str]:
    """What the listing left out of the set, said: sub-folders or files that cannot be read,
    label maps without an image, images with another suffix. These do not enter the key, so
    they are computed on every registration, a reused one included (a map added since is said
    then, and a folder made readable again is no longer said)."""
    found: list[str] = []
    map_uris = {uri for uri, *_ in maps.values()}
    others = [
        f.rel
        for f in img_files
        if not f.rel.lower().endswith(img_suffix.lower())
        and f.rel.lower().endswith(IMAGE_SUFFIXES)
        and f.uri not in map_uris  # img_dir == ann_dir: the maps are no other images
    ]
    if unreadable:  # a mounted volume's lost+found is no reason to refuse a set; unsaid, images would go missing
        found.append(
            f"{role}: {len(unreadable)} sub-folder(s) or file(s) under {img_dir} or {ann_dir} cannot be read, "
            f"and what they hold is not part of the set: {unreadable[:5]}"
        )
    orphans = sorted(set(maps) - set(images))
    if orphans:
        found.append(
            f"{ann_dir}: {len(orphans)} label map(s) have no image ending in {img_suffix!r} under {img_dir} and "
            f"are not part of the set, e.g. {orphans[:3]}"
        )
    if others:
        found.append(
            f"{img_dir}: {len(others)} image(s) do not end with img_suffix {img_suffix!r} and are not "
            f"part of the set, e.g. {others[:3]}"
        )
    return found


def check_class_presence(
    class_pixels: dict[str, int], ignored: int, role: str, source: str, label_map: dict[int, int] | None
) -> list[str]:
    """Classes without any pixel: refused when fewer than two classes have pixels (DatasetError;
    a labeled set would teach one class, a held-out set would score one), else returned as
    warnings."""
    present = [c for c, n in class_pixels.items() if n > 0]
    absent = [c for c, n in class_pixels.items() if n == 0]
    if len(present) < 2:
        hint = ""
        if ignored and not label_map:
            hint = (
                f"; {ignored} pixels hold {IGNORE_LABEL}, the ignore label: if {IGNORE_LABEL} marks your "
                f"foreground (binary masks stored as 0/{IGNORE_LABEL}), pass label_map={{{IGNORE_LABEL}: 1}}"
            )
        raise DatasetError(
            f"{source}: the {role} set has pixels of {present or 'no class'} only; classes "
            f"{absent} have none, so a model would "
            + ("learn" if role.startswith("label") else "be scored on")
            + f" {len(present)} class(es){hint}"
        )
    return [f"{source}: class {c!r} has no pixel in the {role} set" for c in absent]


def _rotation_hint(raw_map: bytes, img_uri: str, raw_img: bytes, decoded: tuple[int, int]) -> str:
    """' - <why>' when a label map matches its image's stored (not EXIF-rotated) pixels, else ''."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw_map)) as m:
            stored = m.size
    except Exception:  # noqa: BLE001 - an unreadable map has no size to compare
        return ""
    why = size_mismatch(img_uri, stored, raw_img, decoded)
    return f" - {why}" if why and "EXIF" in why else ""


@stage_task("register_seg_dataset")
def register_seg_dataset(
    store_url: str,
    dataset: str,
    img_dir: str,
    ann_dir: str,
    classes: list[str],
    role: str,
    img_suffix: str = ".jpg",
    seg_map_suffix: str = ".png",
    label_map: dict[int, int] | None = None,
    split: str | None = None,
) -> ArtifactRef:
    """Validate an (image, label map) folder pair at any fsspec URL; store its pair list.

    With a ``split`` file, the set is the images it lists (module docstring).

    Raises DatasetError naming the file for every refusal (see the module docstring)."""
    store = get_store(store_url)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DatasetError(f"{role}: classes must be at least two distinct names (background first), got {classes}")
    if len(classes) > IGNORE_LABEL:
        raise DatasetError(f"{role}: at most {IGNORE_LABEL} classes (255 is the ignore label)")
    label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
    wrong = {k: v for k, v in label_map.items() if not (0 <= v < len(classes) or v == IGNORE_LABEL)}
    if wrong:
        raise DatasetError(
            f"{role}: label_map {wrong} maps to values that are neither a class index "
            f"(0..{len(classes) - 1}) nor the ignore label {IGNORE_LABEL}"
        )
    unreadable: list[str] = []
    if split is None:
        img_files = _list(img_dir, f"{role}: img_dir", unreadable)  # once: the set's images, and those left out
        images = _by_stem(img_files, img_suffix, f"{role}: img_dir")
        maps = _by_stem(_list(ann_dir, f"{role}: ann_dir", unreadable), seg_map_suffix, f"{role}: ann_dir")
    else:
        img_files = []
        stems, notes = read_split(split, role)
        for note in notes:  # said on every registration: the key is the set's content, not the file's
            stage_logger().info(note)
        images, missing = _split_files(img_dir, stems, img_suffix, f"{role}: img_dir", unreadable)
        if missing:
            hint = ""
            if any(s.lower().endswith(img_suffix.lower()) for s in missing):
                hint = f" (list each image without its suffix {img_suffix!r}, as mmseg's ann_file does)"
            elif any(re.search(r"\s-?[01]$", s) for s in missing):
                hint = " (lines like '000032 1' are VOC's ImageSets/Main class lists, not a segmentation split)"
            raise _missing(
                f"{role}: split file {split}: {len(missing)} listed image(s) have no file {img_dir}/<name>{img_suffix}",
                missing,
                hint + unreadable_note(unreadable),
            )
        maps, _ = _split_files(ann_dir, stems, seg_map_suffix, f"{role}: ann_dir", unreadable)
    if not images:
        raise DatasetError(f"{role}: no images ending in {img_suffix} under {img_dir}{unreadable_note(unreadable)}")
    missing = sorted(set(images) - set(maps))
    if missing:
        import unicodedata

        by_form = {unicodedata.normalize("NFC", m): m for m in maps}
        other_form = [(s, by_form[n]) for s in missing if (n := unicodedata.normalize("NFC", s)) in by_form]
        if other_form:  # macOS writes names decomposed (NFD); most other tools composed (NFC)
            form_hint = (
                f"; {len(other_form)} of them have a label map whose name is the same text in another Unicode "
                f"normalisation (e.g. image {other_form[0][0]!r}, map {other_form[0][1]!r}: NFC against NFD, "
                "as copies from macOS give): rename one so both are spelled alike"
            )
        else:
            form_hint = ""
        raise _missing(
            f"{role}: {len(missing)} image(s) have no label map ({seg_map_suffix}) under {ann_dir}",
            missing,
            unreadable_note(unreadable) + form_hint,
        )
    stems = sorted(images)
    map_digest = dict(zip(stems, _map_digests(store, dataset, [maps[stem] for stem in stems]), strict=True))
    # the URIs too: the stored pairs name the files, and a suffix matched in any case (a.png
    # renamed a.PNG) would otherwise reuse pairs that name a file no longer there
    listing = {stem: [images[stem][1], map_digest[stem], images[stem][0], maps[stem][0]] for stem in stems}
    params: dict[str, Any] = {
        "role": role,  # a labeled set and a held-out set are refused, and warned about, differently
        "img_dir": img_dir,
        "ann_dir": ann_dir,
        "classes": list(classes),
        "img_suffix": img_suffix,
        "seg_map_suffix": seg_map_suffix,
    }
    if label_map:
        params["label_map"] = {str(k): v for k, v in sorted(label_map.items())}
    ref = store.stage_ref(dataset, STAGE, VERSION, "", {"listing": digest_json(listing)}, params)
    around = _listing_warnings(role, img_dir, ann_dir, img_suffix, img_files, images, maps, unreadable)
    if done_or_claimed(store, ref, "register set"):
        stored = store.manifest(ref).meta
        for warning in [w for w in stored.get("warnings", []) if w not in stored.get("listing_warnings", [])] + around:
            stage_logger().warning(warning)
        log_stage(f"register {role} set", ref, reused=True)
        return ref
    pixels = np.zeros(len(classes), dtype=np.int64)
    ignored = 0
    pairs, only_ignore, oriented = [], [], []
    for stem in sorted(images):
        img_uri, map_uri = images[stem][0], maps[stem][0]
        try:
            raw = read_url(img_uri)
        except OSError as exc:  # the cause kept: an outage is still retried (selftrain.stage)
            raise DatasetError(f"{role}: image {img_uri} cannot be read: {type(exc).__name__}: {exc}") from exc
        size = decoded_size(raw, img_uri)
        thin = degenerate(img_uri, size)
        if thin:
            raise DatasetError(thin)
        orientation = exif_orientation(raw)
        if orientation not in (0, 1):
            oriented.append(img_uri)
        try:
            raw_map = read_url(map_uri)
        except OSError as exc:
            raise DatasetError(f"{role}: label map {map_uri} cannot be read: {type(exc).__name__}: {exc}") from exc
        if digest_bytes(raw_map) != map_digest[stem]:  # the key would name content never checked
            raise DatasetError(f"{map_uri} changed while the set was being registered; register it again")
        try:
            counts = check_label_map(raw_map, map_uri, len(classes), size, label_map)
        except DatasetError as exc:
            raise DatasetError(f"{exc}{_rotation_hint(raw_map, img_uri, raw, size)}") from exc
        if set(counts) == {0, IGNORE_LABEL}:
            only_ignore.append(map_uri)
        for v, c in counts.items():
            if v < len(classes):
                pixels[v] += c
            elif v == IGNORE_LABEL:
                ignored += c
        pair = {"image_id": stem, "img_path": img_uri, "seg_map_path": map_uri, "width": size[0], "height": size[1]}
        if label_map:
            pair["label_map"] = {str(k): v for k, v in label_map.items()}
        pairs.append(pair)
    class_pixels = {c: int(n) for c, n in zip(classes, pixels)}
    warnings = check_class_presence(class_pixels, ignored, role, ann_dir, label_map)
    if only_ignore:
        warnings.append(
            f"{ann_dir}: {len(only_ignore)} label map(s) hold only background (0) and the ignore label "
            f"({IGNORE_LABEL}), e.g. {only_ignore[:3]}: if {IGNORE_LABEL} marks an object there (masks "
            "exported as 0/255), those objects are ignored in training - fix them or set label_map"
        )
    if oriented:
        warnings.append(
            f"{img_dir}: {len(oriented)} image(s) carry an EXIF orientation, e.g. {oriented[:3]}: "
            "training decodes them rotated or mirrored as a viewer shows them, so their label maps "
            "must be in that displayed frame"
        )
    warnings += around
    for warning in warnings:
        stage_logger().warning(warning)
    meta = {
        "role": role,
        "task": "segmentation",
        "img_dir": img_dir,
        "ann_dir": ann_dir,
        "classes": list(classes),
        "num_images": len(pairs),
        "class_pixels": class_pixels,
        "ignored_pixels": int(ignored),
        "listing_warnings": around,
        "label_map": params.get("label_map", {}),
        "warnings": warnings,
    }
    store.write(ref, {"pairs.json": json.dumps(pairs).encode()}, meta=meta)
    log_stage(f"register {role} set", ref, reused=False, detail=f"{len(pairs)} images, classes {list(classes)}")
    return ref
