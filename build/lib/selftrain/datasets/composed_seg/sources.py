"""The source photos: which Debian packages and files (the selection rules), their download and cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------------------------
# Selection rules (changing any of them changes SELECTION_DIGEST, so fetch_sources() fetches again)
# ----------------------------------------------------------------------------------------------------------

STAMPS_PACKAGE = "tuxpaint-stamps-default"
_STAMPS = "usr/share/tuxpaint/stamps/"

#: class name -> (package, folder in the package): every ``*.png`` directly in that folder.
CUTOUT_RULES: dict[str, tuple[str, str]] = {
    "bird": (STAMPS_PACKAGE, _STAMPS + "animals/birds"),
    "flower": (STAMPS_PACKAGE, _STAMPS + "plants/flowers"),
    "fruit": (STAMPS_PACKAGE, _STAMPS + "food/fruit"),
}
#: file names left out of a class folder, with the reason.
CUTOUT_EXCLUDE: dict[str, dict[str, str]] = {
    "bird": {"albino_peahen.png": "the cut-out keeps a patch of grass under the bird"},
    "flower": {},
    "fruit": {},
}
#: (package, path) of the background photographs (real photos without birds, flowers or fruit).
BACKGROUND_FILES: tuple[tuple[str, str], ...] = tuple(
    [
        ("mate-backgrounds", f"usr/share/backgrounds/mate/nature/{name}.jpg")
        for name in ("Aqua", "Blinds", "Dune", "GreenMeadow", "RainDrops", "Storm", "Wood")
    ]
    + [
        ("plasma-workspace-wallpapers", f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg")
        for name in (
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        )
    ]
)
PACKAGES: tuple[str, ...] = (STAMPS_PACKAGE, "mate-backgrounds", "plasma-workspace-wallpapers")

CLASSES: tuple[str, ...] = ("background", *CUTOUT_RULES)
PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (0, 114, 255), (255, 0, 160), (255, 170, 0))
VAL_FRACTION = 0.3
MIN_CUTOUTS_PER_CLASS = 8  # so that train and val each get a few distinct photos of every class
BG_CROP = (0.35, 1.0)  # square background crop, fraction of the photo's shorter side
MAX_OUTSIDE = 0.25  # a non-primary object may stick out of the image by this fraction of its size
FORMAT_VERSION = 1  # bump when the output layout or any composition rule changes
MANIFEST = "MANIFEST.json"
SPLIT_JSON = "split.json"
SPLITS = ("labeled", "unlabeled", "val")
_PNG = {"compress_level": 6}  # fixed save parameters (no optimize, no metadata): reproducible bytes

SELECTION_DIGEST = hashlib.sha256(
    json.dumps(
        {"cutouts": CUTOUT_RULES, "exclude": CUTOUT_EXCLUDE, "backgrounds": BACKGROUND_FILES, "packages": PACKAGES},
        sort_keys=True,
    ).encode()
).hexdigest()[:16]


def default_cache_dir() -> str:
    """``$SELFTRAIN_CACHE/sources``, else ``${XDG_CACHE_HOME:-~/.cache}/selftrain/sources``."""
    from storage.settings import settings

    return os.path.join(settings().cache, "sources")


# ----------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The cached source photos. Names (``<package>/<path in the package>``) are relative to ``root``."""

    root: str
    packages: Mapping[str, str]  # package -> Debian version it was taken from
    cutouts: Mapping[str, tuple[str, ...]]  # class -> sorted cut-out names
    backgrounds: tuple[str, ...]  # sorted background names
    sha256: Mapping[str, str] = field(repr=False)  # name -> SHA-256 of the file

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)


def _select(package: str, path: str) -> str | None:
    """The class a package member is a cut-out of, ``""`` for a background, None when not selected."""
    for cls, (pkg, folder) in CUTOUT_RULES.items():
        if pkg == package and os.path.dirname(path) == folder and path.endswith(".png"):
            return None if os.path.basename(path) in CUTOUT_EXCLUDE[cls] else cls
    if (package, path) in BACKGROUND_FILES:
        return ""
    return None


def _sources_from_manifest(root: str, manifest: dict) -> Sources:
    cutouts: dict[str, list[str]] = {cls: [] for cls in CUTOUT_RULES}
    backgrounds = []
    for name, kind in manifest["files"].items():
        if kind["class"]:
            cutouts[kind["class"]].append(name)
        else:
            backgrounds.append(name)
    return Sources(
        root=root,
        packages=dict(manifest["packages"]),
        cutouts={cls: tuple(sorted(v)) for cls, v in cutouts.items()},
        backgrounds=tuple(sorted(backgrounds)),
        sha256={name: f["sha256"] for name, f in manifest["files"].items()},
    )


def _read_manifest(root: str) -> dict | None:
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("selection_digest") != SELECTION_DIGEST:
        return None
    for name, f in manifest.get("files", {}).items():
        try:
            if os.path.getsize(os.path.join(root, name)) != f["size"]:
                return None
        except OSError:
            return None
    return manifest


def load_sources(cache_dir: str | None = None) -> Sources:
    """The sources cached by :func:`fetch_sources` (no network); FileNotFoundError when absent or incomplete."""
    root = os.path.abspath(cache_dir or default_cache_dir())
    manifest = _read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(
            f"the segmentation source photos are not in {root} (no complete {MANIFEST} for this selection); "
            "run `python -m selftrain.datasets.composed_seg fetch` (deploy/setup.sh does)"
        )
    return _sources_from_manifest(root, manifest)


_MISSING_LISTS = (
    "Unable to locate package",
    "Can't select candidate",
    "has no installation candidate",
    "No packages found",
    "404",
    "Failed to fetch",
)


def _apt_download(package: str, workdir: str) -> str:
    """``apt-get download <package>`` into ``workdir``; ``apt-get update`` once if the lists are missing."""

    def run(cmd: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise RuntimeError(f"cannot download Debian package {package!r}: {cmd[0]} is not available ({e})") from e

    result = run(["apt-get", "download", package])
    if result.returncode != 0 and any(s in result.stderr for s in _MISSING_LISTS):
        update = run(["apt-get", "update"])
        if update.returncode != 0:
            raise RuntimeError(
                f"cannot download Debian package {package!r}: `apt-get download` failed "
                f"({result.stderr.strip()[-300:]}) and `apt-get update` failed too "
                f"({update.stderr.strip()[-300:]}); run `apt-get update` as root"
            )
        result = run(["apt-get", "download", package])
    debs = [f for f in os.listdir(workdir) if f.startswith(package + "_") and f.endswith(".deb")]
    if result.returncode != 0 or len(debs) != 1:
        raise RuntimeError(
            f"cannot download Debian package {package!r}: `apt-get download {package}` exited with "
            f"{result.returncode}: {result.stderr.strip()[-500:]}"
        )
    return os.path.join(workdir, debs[0])


def _deb_version(deb: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True, check=True).stdout.strip()


def _extract_selected(package: str, deb: str, dest: str) -> dict[str, dict]:
    """Unpack the selected regular files of ``deb`` under ``dest/<package>/``; their manifest entries."""
    files = {}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                path = os.path.normpath(member.name).removeprefix("./")
                kind = _select(package, path)
                if kind is None or not member.isfile():
                    continue
                extracted = tar.extractfile(member)
                if extracted is None:
                    continue
                data = extracted.read()
                name = f"{package}/{path}"
                out = os.path.join(dest, name)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "wb") as f:
                    f.write(data)
                files[name] = {"class": kind, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.wait() != 0:
            raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed (package {package!r})")
    return files


def fetch_sources(cache_dir: str | None = None) -> Sources:
    """Download (once) and cache the selected photos; see the module docstring. Idempotent and fast when cached."""
    root = os.path.abspath(cache_dir or default_cache_dir())
    manifest = _read_manifest(root)
    if manifest is not None:
        return _sources_from_manifest(root, manifest)
    os.makedirs(root, exist_ok=True)
    build = tempfile.mkdtemp(prefix=".fetch-", dir=root)
    try:
        files, versions = {}, {}
        for package in PACKAGES:
            workdir = tempfile.mkdtemp(prefix="deb-", dir=build)
            deb = _apt_download(package, workdir)
            versions[package] = _deb_version(deb)
            files.update(_extract_selected(package, deb, os.path.join(build, "files")))
            shutil.rmtree(workdir)  # the .deb itself is not kept
        missing = [f"{p}/{path}" for p, path in BACKGROUND_FILES if f"{p}/{path}" not in files]
        if missing:
            raise FileNotFoundError(f"background photos missing from the Debian packages {versions}: {missing}")
        for cls, (package, folder) in CUTOUT_RULES.items():
            n = sum(1 for f in files.values() if f["class"] == cls)
            if n < MIN_CUTOUTS_PER_CLASS:
                raise FileNotFoundError(
                    f"only {n} cut-outs of class {cls!r} in {package} {versions[package]}:{folder} "
                    f"(need {MIN_CUTOUTS_PER_CLASS})"
                )
        for package in PACKAGES:  # move each package folder into place, replacing an older one
            target = os.path.join(root, package)
            if os.path.lexists(target):
                shutil.rmtree(target)
            os.rename(os.path.join(build, "files", package), target)
        manifest = {"selection_digest": SELECTION_DIGEST, "packages": versions, "files": dict(sorted(files.items()))}
        tmp = os.path.join(build, MANIFEST)
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, os.path.join(root, MANIFEST))  # written last: the cache is complete
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return _sources_from_manifest(root, manifest)


def split_names(names: Sequence[str], val_fraction: float = VAL_FRACTION) -> tuple[list[str], list[str]]:
    """``(train, val)``, both sorted: the first ``max(1, round(val_fraction * n))`` names by SHA-256 are val."""
    names = sorted(set(names))
    if len(names) < 2:
        raise ValueError(f"need at least 2 names to split into train and val, got {names}")
    k = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return sorted(ranked[k:]), sorted(ranked[:k])


def source_split(sources: Sources) -> dict[str, dict]:
    """``{"train": {"cutouts": {cls: [names]}, "backgrounds": [names]}, "val": {...}}`` (disjoint)."""
    out: dict[str, dict] = {"train": {"cutouts": {}}, "val": {"cutouts": {}}}
    for cls in CLASSES[1:]:
        out["train"]["cutouts"][cls], out["val"]["cutouts"][cls] = split_names(sources.cutouts[cls])
    out["train"]["backgrounds"], out["val"]["backgrounds"] = split_names(sources.backgrounds)
    return out
