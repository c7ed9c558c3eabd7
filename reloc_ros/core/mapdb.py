"""The map database: a versioned directory with a manifest, HDF5 keyframes and a faiss index.

Layout (``MAP/``)::

    manifest.yaml   format version, extractor identity (model id + weights hash + dims), frame ids, counts,
                    build command, sha256 of every data file
    keyframes.h5    per keyframe: name, pose T_map_from_cam, camera, keypoints (ideal pixels), descriptors,
                    scores, 3D points (map frame, NaN where none), point source and confidence, depth stats,
                    look-alike inliers (core/aliases.py; absent in maps built before it);
                    plus the extractor state (e.g. the VLAD vocabulary) under /extractor_state
    global.faiss    retrieval index over the keyframes' global descriptors
    points.ply      map points for RViz (optional)

Writes are atomic: the map is built in a temporary directory beside the target and swapped in
(``renameat2(RENAME_EXCHANGE)`` where the kernel has it), so an interrupted build leaves an existing map
intact. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import glob
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import h5py
import numpy as np
import yaml

from reloc_ros import __version__
from reloc_ros.core.camera import Camera
from reloc_ros.core.features import FeatureExtractor, create_extractor, extractor_class, sha256_file

log = logging.getLogger(__name__)

__all__ = ["MapError", "Keyframe", "MapDatabase", "FORMAT_VERSION", "POINT_SOURCES", "write_map_atomic",
           "check_map_out", "manifest_path", "extractor_for_map", "check_extractor", "identity_differences"]

FORMAT_VERSION = 1
# Point source codes stored per keypoint.
POINT_SOURCES = {"none": 0, "depth": 1, "triangulate": 2, "learned": 3}


class MapError(RuntimeError):
    """A map directory that cannot be used; the message says why and what to do."""


@dataclass
class Keyframe:
    """One map image.

    Attributes:
        name: dataset frame name.
        T_map_from_cam: 4x4 pose of the camera optical frame in the map frame.
        camera: ideal pinhole camera of ``keypoints`` (distortion already removed).
        keypoints: ``[N x 2] float32`` ideal pixel coordinates.
        descriptors: ``[N x D]`` float32 or float16 (stored as float16 on disk).
        scores: ``[N] float32``.
        points3d: ``[N x 3] float32`` map-frame points, NaN where the keypoint has none.
        point_source: ``[N] uint8`` codes of :data:`POINT_SOURCES`.
        point_conf: ``[N] float32`` confidence of each 3D point in [0, 1].
        global_desc: ``[G] float32``.
    """

    name: str
    T_map_from_cam: np.ndarray
    camera: Camera
    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    points3d: np.ndarray
    point_source: np.ndarray
    point_conf: np.ndarray
    global_desc: np.ndarray

    @property
    def has_point(self) -> np.ndarray:
        return np.isfinite(self.points3d[:, 0])


@dataclass
class MapDatabase:
    """A loaded map: contiguous arrays over all keyframes plus the retrieval index.

    Keypoint arrays of all keyframes are concatenated; keyframe ``i`` owns rows
    ``kp_offsets[i]:kp_offsets[i+1]``.

    ``descriptors`` are float16 in a loaded map, as the file stores them (no conversion at load, half the memory
    of float32; :class:`~reloc_ros.core.matching.KeyframeMatcher` takes them as they are and matches exactly as
    with their float32 values), and float32 in a map made by :meth:`from_keyframes` unless every keyframe's
    descriptors are float16. Code that computes with them should use ``.astype(np.float32, copy=False)``.
    """

    path: Path | None
    manifest: dict
    names: list[str]
    T_map_from_cam: np.ndarray  # [K x 4 x 4]
    cameras: list[Camera]
    kp_offsets: np.ndarray  # [K + 1]
    keypoints: np.ndarray  # [N x 2]
    descriptors: np.ndarray  # [N x D] float16 (loaded) or float32 (built in memory)
    scores: np.ndarray  # [N]
    points3d: np.ndarray  # [N x 3]
    point_source: np.ndarray  # [N]
    point_conf: np.ndarray  # [N]
    global_desc: np.ndarray  # [K x G]
    extractor_state: dict = field(default_factory=dict)
    index: faiss.Index | None = None
    # per keyframe, the inliers of the best pose the map gives its view at another place (0: none; core/aliases.py);
    # None: the map was not analysed (built before the analysis existed)
    alias_inliers: np.ndarray | None = None
    # per keyframe, where its look-alikes are: [K x 2 x 4 x 4] transforms of the map frame, NaN where none
    # (core/aliases.py); None: not recorded (a map analysed before they were)
    alias_relation: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def centers(self) -> np.ndarray:
        return self.T_map_from_cam[:, :3, 3]

    @property
    def extractor_identity(self) -> dict:
        return self.manifest.get("extractor", {})

    @property
    def low_light_brightness(self) -> float:
        """The threshold below which the map's images were enhanced for low light before extraction (``reloc map
        build --low-light-brightness``; core/lowlight.py); 0 = none were. Queries should use the same
        (``LocalizerConfig.low_light_brightness``)."""
        return float(self.manifest.get("low_light_brightness", 0.0))

    @property
    def low_light_keyframes(self) -> int:
        """How many keyframes were enhanced for low light when they were extracted (by build, update and merge)."""
        return int(self.manifest.get("low_light_keyframes", 0))

    @property
    def point_sigma_rel(self) -> float | None:
        """A triangulated map's median relative point uncertainty (1-sigma position error over distance, from each
        point's triangulation geometry and residuals: core/points.py ``triangulate_keyframes``), set by build and
        update, the largest of the parts' by merge; None where the map has none (other point sources, older maps).
        ``reloc map info`` shows it; the localizer's covariance takes it as the map term's relative point
        error (``Localizer.default_map_point_sigma_rel``; docs/RESULTS.md "Covariance calibration")."""
        v = self.manifest.get("point_sigma_rel")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None

    @property
    def nbytes(self) -> int:
        """What the map's arrays take in memory (the node's share for the map, before the localizer's caches)."""
        arrs = (self.T_map_from_cam, self.keypoints, self.descriptors, self.scores, self.points3d, self.point_source,
                self.point_conf, self.global_desc, self.kp_offsets)
        return int(sum(np.asarray(a).nbytes for a in arrs))

    def keyframe_slice(self, i: int) -> slice:
        return slice(int(self.kp_offsets[i]), int(self.kp_offsets[i + 1]))

    def valid_points(self) -> np.ndarray:
        """``[P x 3]`` all map points with 3D (for RViz / PLY)."""
        return self.points3d[np.isfinite(self.points3d[:, 0])]

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_keyframes(cls, keyframes: list[Keyframe], extractor_identity: dict, extractor_state: dict,
                       info: dict | None = None) -> "MapDatabase":
        if not keyframes:
            raise MapError("a map needs at least one keyframe")
        offs = np.cumsum([0] + [len(k.keypoints) for k in keyframes]).astype(np.int64)
        D = keyframes[0].descriptors.shape[1] if len(keyframes[0].descriptors.shape) == 2 else 0

        def cat(attr, shape, dtype):
            arrs = [getattr(k, attr) for k in keyframes]
            return np.concatenate(arrs).astype(dtype, copy=False) if offs[-1] else np.zeros(shape, dtype)

        # float16 descriptors (e.g. a loaded map's keyframes) stay float16: the file stores float16 anyway
        desc_dtype = np.float16 if all(k.descriptors.dtype == np.float16 for k in keyframes) else np.float32

        manifest = {
            "format_version": FORMAT_VERSION,
            "reloc_ros_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "extractor": dict(extractor_identity),
            "map_frame": "map",
        }
        manifest.update(info or {})
        db = cls(
            path=None, manifest=manifest, names=[k.name for k in keyframes],
            T_map_from_cam=np.stack([k.T_map_from_cam for k in keyframes]).astype(np.float64),
            cameras=[k.camera for k in keyframes], kp_offsets=offs,
            keypoints=cat("keypoints", (0, 2), np.float32), descriptors=cat("descriptors", (0, D), desc_dtype),
            scores=cat("scores", (0,), np.float32), points3d=cat("points3d", (0, 3), np.float32),
            point_source=cat("point_source", (0,), np.uint8), point_conf=cat("point_conf", (0,), np.float32),
            global_desc=np.stack([k.global_desc for k in keyframes]).astype(np.float32),
            extractor_state=dict(extractor_state),
        )
        db._update_counts()
        return db

    def _update_counts(self) -> None:
        src = self.point_source
        self.manifest["counts"] = {
            "keyframes": len(self.names),
            "keypoints": int(len(self.keypoints)),
            "points": {name: int((src == code).sum()) for name, code in POINT_SOURCES.items() if name != "none"},
        }
        self.manifest["descriptor_dims"] = {"local": int(self.descriptors.shape[1]),
                                            "global": int(self.global_desc.shape[1])}

    # ---------------------------------------------------------------------------------------------
    def ensure_index(self, index_kind: str = "auto") -> None:
        """Build the retrieval index of the requested kind over the keyframes' global descriptors, unless the map
        holds one already (loaded, or built by an earlier call: the look-alike analysis before :meth:`save`)."""
        from reloc_ros.core.retrieval import build_index
        from reloc_ros.core.retrieval import index_kind as index_kind_of

        have = self.manifest.get("index") or {}
        if (self.index is not None and self.index.ntotal == len(self.global_desc)
                and have.get("requested") == index_kind):
            return
        self.index = build_index(self.global_desc, index_kind)
        self.manifest["index"] = {"kind": index_kind_of(self.index), "requested": index_kind}

    def save(self, out: Path, overwrite: bool = False, index_kind: str = "auto", write_ply: bool = True) -> Path:
        """Write the map atomically to ``out`` (see module docstring)."""
        self.ensure_index(index_kind)

        def write(tmp: Path) -> None:
            _write_h5(tmp / "keyframes.h5", self)
            faiss.write_index(self.index, str(tmp / "global.faiss"))
            files = ["keyframes.h5", "global.faiss"]
            if write_ply:
                _write_ply(tmp / "points.ply", self.valid_points())
                files.append("points.ply")
            self.manifest["files"] = {f: sha256_file(tmp / f) for f in files}
            with open(tmp / "manifest.yaml", "w") as fh:
                yaml.safe_dump(self.manifest, fh, sort_keys=False)

        path = write_map_atomic(Path(out), write, overwrite)
        self.path = path
        return path

    @classmethod
    def load(cls, path, verify: bool = True) -> "MapDatabase":
        """Load and check a map directory.

        ``verify`` checks every data file against its sha256 in the manifest (a missing hash is an error) before
        any of it is parsed (sha256 runs at ~1.6 GB/s on the 2-core dev machine: ~0.5 s for a 10k-keyframe map of
        770 MB).
        ``verify=False`` is for trusted files only: faiss trusts the sizes in its header, so a corrupt
        ``global.faiss`` can make it allocate (and zero) gigabytes before it fails.

        Descriptors are returned as stored (float16), see :class:`MapDatabase`.

        Raises:
            MapError: missing files, a newer or older format, missing or mismatching sha256 (corrupt or edited files),
                truncated HDF5, or an index that disagrees with the keyframes.
        """
        path = Path(path)
        man_path = manifest_path(path)
        try:
            manifest = yaml.safe_load(man_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise MapError(f"{man_path} is not valid YAML ({e}); rebuild the map") from e
        if not isinstance(manifest, dict) or "format_version" not in manifest:
            raise MapError(f"{man_path} has no format_version: not a reloc_ros map manifest; rebuild the map")
        ver = manifest["format_version"]
        if not isinstance(ver, int) or isinstance(ver, bool):
            raise MapError(f"{man_path} has format_version {ver!r}, not an integer: corrupt manifest; rebuild the map")
        if ver > FORMAT_VERSION:
            raise MapError(f"{path} has map format {ver}, newer than this reloc_ros supports ({FORMAT_VERSION}): "
                           "upgrade reloc_ros or rebuild the map with this version")
        if ver < FORMAT_VERSION:
            raise MapError(f"{path} has old map format {ver} (this reloc_ros reads {FORMAT_VERSION}): rebuild it")
        files = manifest.get("files") or {}
        for key, want in (("files", files), ("extractor", manifest.get("extractor", {}))):
            if not isinstance(want, dict):
                raise MapError(f"{man_path}: '{key}' is a {type(want).__name__}, not a mapping: corrupt manifest; "
                               "rebuild the map")
        for name in ("keyframes.h5", "global.faiss"):
            f = path / name
            if not f.is_file():
                raise MapError(f"{path} is missing {name}: the map is incomplete; rebuild it")
            if verify and not files.get(name):
                raise MapError(f"{man_path} has no sha256 for {name}, so the file cannot be verified (edited "
                               "manifest?): rebuild the map")
            if verify and sha256_file(f) != files[name]:
                raise MapError(f"{f} does not match the sha256 in manifest.yaml (corrupt or modified file): "
                               "rebuild the map")
        try:
            db = _read_h5(path / "keyframes.h5", manifest)
        except MapError:
            raise
        except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:  # h5py: RuntimeError too
            raise MapError(f"cannot read {path / 'keyframes.h5'} ({e}): truncated or corrupt; rebuild the map") from e
        db.path = path
        try:
            db.index = faiss.read_index(str(path / "global.faiss"))
        except RuntimeError as e:
            raise MapError(f"cannot read {path / 'global.faiss'}: {str(e).splitlines()[0]}; rebuild the map") from e
        if db.index.ntotal != len(db):
            raise MapError(f"{path}: global.faiss holds {db.index.ntotal} descriptors but keyframes.h5 has "
                           f"{len(db)} keyframes; the map is inconsistent: rebuild it")
        if db.index.d != db.global_desc.shape[1]:
            raise MapError(f"{path}: global.faiss has dimension {db.index.d}, keyframes have "
                           f"{db.global_desc.shape[1]}; rebuild the map")
        return db


# -------------------------------------------------------------------------------------------------


def manifest_path(path: Path) -> Path:
    """The manifest of the map folder ``path``; MapError when there is no folder or no manifest in it."""
    path = Path(path)
    if not path.is_dir():
        raise MapError(f"map directory not found: {path} (build one with `reloc map build ... --out {path}`)")
    if not (path / "manifest.yaml").is_file():
        raise MapError(f"{path} is not a reloc_ros map: no manifest.yaml (build one with `reloc map build`)")
    return path / "manifest.yaml"


def _write_h5(path: Path, db: MapDatabase) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.create_dataset("names", data=np.array(db.names, dtype=h5py.string_dtype()))
        f.create_dataset("T_map_from_cam", data=db.T_map_from_cam)
        cams = np.array([[c.width, c.height, c.fx, c.fy, c.cx, c.cy] for c in db.cameras], np.float64)
        f.create_dataset("cameras", data=cams)
        f.create_dataset("kp_offsets", data=db.kp_offsets)
        for name, dtype in (("keypoints", np.float32), ("descriptors", np.float16), ("scores", np.float32),
                            ("points3d", np.float32), ("point_source", np.uint8), ("point_conf", np.float32),
                            ("global_desc", np.float32)):  # contiguous datasets: one read each at load
            f.create_dataset(name, data=np.asarray(getattr(db, name)).astype(dtype, copy=False))
        if db.alias_inliers is not None:
            f.create_dataset("alias_inliers", data=np.asarray(db.alias_inliers).astype(np.int32, copy=False))
        if db.alias_relation is not None:
            f.create_dataset("alias_relation", data=np.asarray(db.alias_relation, np.float64))
        g = f.create_group("extractor_state")
        for k, v in db.extractor_state.items():
            g.create_dataset(k, data=np.asarray(v))


def _read_h5(path: Path, manifest: dict) -> MapDatabase:
    with h5py.File(path, "r") as f:
        # Each dataset in one read ([()]: a single H5Dread of the contiguous dataset into a fresh array), in its
        # stored dtype: no conversions, no copies.
        names = _names(f["names"])
        desc = f["descriptors"][()]
        if desc.dtype not in (np.float16, np.float32):  # the writer stores float16; anything else: float32
            desc = desc.astype(np.float32)
        db = MapDatabase(
            path=None, manifest=manifest, names=names, T_map_from_cam=f["T_map_from_cam"][()],
            cameras=_cameras(f["cameras"][()]),
            kp_offsets=f["kp_offsets"][()].astype(np.int64, copy=False), keypoints=f["keypoints"][()],
            descriptors=desc, scores=f["scores"][()],
            points3d=f["points3d"][()], point_source=f["point_source"][()], point_conf=f["point_conf"][()],
            global_desc=f["global_desc"][()],
            extractor_state={k: f["extractor_state"][k][()] for k in f["extractor_state"]},
            alias_inliers=f["alias_inliers"][()].astype(np.int32, copy=False) if "alias_inliers" in f else None,
            alias_relation=f["alias_relation"][()] if "alias_relation" in f and "alias_inliers" in f else None,
        )
    K, N = len(db.names), len(db.keypoints)
    checks = [
        (db.T_map_from_cam.shape == (K, 4, 4), "T_map_from_cam"), (len(db.cameras) == K, "cameras"),
        (db.kp_offsets.shape == (K + 1,) and db.kp_offsets[-1] == N, "kp_offsets"),
        (db.descriptors.ndim == 2 and len(db.descriptors) == N and len(db.points3d) == N and len(db.scores) == N,
         "per-keypoint arrays"),
        (len(db.point_source) == N and len(db.point_conf) == N, "point arrays"),
        (db.global_desc.shape[0] == K, "global_desc"),
        (db.alias_inliers is None or db.alias_inliers.shape == (K,), "alias_inliers"),
        (db.alias_relation is None or (db.alias_relation.ndim == 4 and db.alias_relation.shape[0] == K
                                       and db.alias_relation.shape[2:] == (4, 4)), "alias_relation"),
    ]
    for ok, what in checks:
        if not ok:
            raise MapError(f"{path}: {what} disagrees with the keyframe count; the map is inconsistent: rebuild it")
    if not (np.all(np.isfinite(db.T_map_from_cam)) and np.all(np.isfinite(db.global_desc))):
        raise MapError(f"{path}: non-finite keyframe poses or global descriptors; the map is corrupt: rebuild it")
    return db


def _names(ds) -> list[str]:
    raw = np.asarray(ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()])
    if raw.ndim != 1:
        raise ValueError(f"names has shape {raw.shape}, expected [K]")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in raw.tolist()]


def _cameras(rows_K6: np.ndarray) -> list[Camera]:
    """One :class:`Camera` per row of ``[width, height, fx, fy, cx, cy]``; keyframes with the same intrinsics share
    one (frozen) object, so a 10k-keyframe map from one camera makes one Camera, not 10 000."""
    rows_K6 = np.asarray(rows_K6, np.float64)
    if rows_K6.ndim != 2 or rows_K6.shape[1] != 6:
        raise ValueError(f"cameras has shape {rows_K6.shape}, expected [K x 6]")
    made: dict[tuple, Camera] = {}
    out = []
    for row in map(tuple, rows_K6.tolist()):
        cam = made.get(row)
        if cam is None:
            if not all(np.isfinite(row[:2])):
                raise ValueError(f"camera size {row[:2]} is not finite")
            cam = made[row] = Camera(int(row[0]), int(row[1]), *row[2:6])
        out.append(cam)
    return out


def _write_ply(path: Path, pts_N3: np.ndarray) -> None:
    pts = np.ascontiguousarray(pts_N3, dtype="<f4")
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n")
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(pts.tobytes())


# -------------------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    rc = fn(AT_FDCWD, os.fsencode(str(a)), AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return rc == 0


_TEMP_SUFFIX = re.compile(r"(\d+)-[a-z0-9_]{8}")  # "<pid>-<mkdtemp's 8 characters>"
_OLD_SUFFIX = re.compile(r"(\d+)")  # ".NAME.old-<pid>": the old map while the fallback swap renames


def _remove_stale_temp_dirs(out: Path) -> None:
    """Tidy what killed writes of ``out`` left (their process no longer exists), only folders named exactly as
    :func:`write_map_atomic` names them: ``out`` missing and the old map of a two-rename swap cut in two goes back
    to ``out``; an old map folder holding its owner's files is retired into ``out`` (:func:`_retire_old_map`); a map
    half written is deleted."""
    for kind, pattern in (("tmp", _TEMP_SUFFIX), ("old", _OLD_SUFFIX)):
        prefix = f".{out.name}.{kind}-"
        for d in sorted(out.parent.glob(glob.escape(prefix) + "*")):
            m = pattern.fullmatch(d.name[len(prefix):])
            if m is None or d.is_symlink() or not d.is_dir() or _alive(int(m.group(1))):
                continue
            if kind == "old" and not out.exists() and (d / "manifest.yaml").is_file():
                os.rename(d, out)  # the old map of a two-rename swap killed halfway: back in its place
            elif kind == "tmp" and all(e.name in MAP_FILES for e in d.iterdir()):
                shutil.rmtree(d, ignore_errors=True)  # a map half written: ours to delete
            else:  # an old map folder (with its owner's files) from a swap that was killed: keep them
                _retire_old_map(d, out)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` may still be writing (this one, a live one, or one we may not signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        pass
    return True


# The files of a map folder; anything else in it is its owner's and is kept when the map is replaced.
MAP_FILES = ("manifest.yaml", "keyframes.h5", "global.faiss", "points.ply")


def check_map_out(out: Path, overwrite: bool, alternative: str = "") -> None:
    """Whether a map may be written to ``out``: a new or empty folder, or a map with ``overwrite``.

    Raises:
        MapError: ``out`` is a map and ``overwrite`` is False (``alternative``: another way, e.g. '--reuse ...'),
            or ``out`` is something else than a map or an empty folder.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise MapError(f"{out} exists and is not a folder: write the map to a new or empty folder")
    if not (out / "manifest.yaml").is_file():
        if any(out.iterdir()):
            raise MapError(f"{out} holds files that are not a reloc_ros map: write the map to a new or empty folder")
        return
    if not overwrite:
        raise MapError(f"{out} already exists: pass --overwrite to replace it (the old map stays until the new one "
                       "is complete; files of yours in the folder are kept)" + (f", or {alternative}" if alternative
                                                                                 else ""))


def _retire_old_map(old: Path, out: Path) -> None:
    """After the swap: move into the map folder ``out`` what the old one (``old``) holds besides the map's own files
    (renames in one file system: nothing is copied, ownership and content stay), then delete the old map's files
    and folder. Whatever cannot be moved (a name the new map uses, a mount point; everything when ``out`` is no
    folder) stays in a visible folder beside the map, with a warning: nothing of the owner's is deleted."""
    for e in sorted(old.iterdir()) if out.is_dir() else ():
        dst = out / e.name
        if e.name in MAP_FILES or dst.exists() or dst.is_symlink():
            continue
        try:
            os.rename(e, dst)
        except OSError:
            pass  # left in old, kept below
    for name in MAP_FILES:
        f = old / name
        if f.is_file() and not f.is_symlink():
            f.unlink()
    try:
        old.rmdir()
    except OSError:  # not empty: the owner's files that could not be moved
        base = f"{out.name}.previous-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        kept = out.parent / base
        n = 1
        while kept.exists():
            n += 1
            kept = out.parent / f"{base}-{n}"
        os.rename(old, kept)
        log.warning("reloc: warning: %s held files that could not be moved into the new map (%s): kept in %s",
                    out, ", ".join(sorted(p.name for p in kept.iterdir())[:5]), kept)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block is done, then act as they would have. Python runs signal handlers
    in the main thread only, so there the handlers are replaced for the block (blocking the signal in this thread
    would not do: another thread can receive it, and the main thread then raises KeyboardInterrupt anyway); in any
    other thread nothing can interrupt the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    before = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        if got:
            handler = before[got[0]]
            if callable(handler):
                handler(got[0], None)  # e.g. KeyboardInterrupt, or the CLI's SIGTERM clean-up
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), got[0])


def write_map_atomic(out: Path, write_fn, overwrite: bool = False) -> Path:
    """Run ``write_fn(tmp_dir)`` and move the result to ``out`` atomically. Files in an existing ``out`` that are
    not the map's own (``MAP_FILES``) are kept (moved into the new folder), and so is the old folder's mode. A
    symlink ``out`` is followed: the folder it points to is replaced.

    Raises:
        MapError: see :func:`check_map_out`.
    """
    out = Path(out).absolute()
    if out.is_symlink():
        out = out.resolve()
    check_map_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        write_fn(tmp)
        # readable by other users (a node running as another user) under the usual umask: mkdtemp made it 0700; a
        # folder being replaced keeps its own mode
        umask = os.umask(0)
        os.umask(umask)
        for fh_path in tmp.iterdir():  # make the data durable before the swap
            os.chmod(fh_path, 0o666 & ~umask)
            with open(fh_path, "rb") as fh:
                os.fsync(fh.fileno())
        check_map_out(out, overwrite)  # again: another process may have written there meanwhile
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder the user made for the map
        os.chmod(tmp, stat.S_IMODE(os.stat(out).st_mode) if out.exists() else 0o777 & ~umask)
        with _signals_held():  # the swap and the owner's files moving over: not cut short by Ctrl-C or SIGTERM
            if out.exists():
                if _exchange(tmp, out):
                    tmp, old = None, tmp  # tmp's path now holds the old map
                else:  # no RENAME_EXCHANGE here (NFS, ...): two renames; a kill between them is repaired by the
                    # next write's clean-up of stale folders (the old map goes back to out)
                    old = out.parent / f".{out.name}.old-{os.getpid()}"
                    moved = False
                    try:
                        os.rename(out, old)
                        moved = True
                        os.rename(tmp, out)
                    except BaseException:
                        if moved and not out.exists():
                            os.rename(old, out)  # put the old map back
                        raise
                    tmp = None
                _retire_old_map(old, out)
            else:
                os.rename(tmp, out)
                tmp = None
        return out
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------------------------
# the extractor a map was built with: made from its manifest, and checked against it
def extractor_for_map(db: MapDatabase, model_path=None, **kwargs) -> FeatureExtractor:
    """The extractor recorded in a map's manifest, with the map's stored state (e.g. VLAD vocabulary), set up for
    localizing queries (its ``QUERY_PARAMS``, e.g. the learned one without its depth head; ``kwargs`` override).
    ``model_path``: the network file of a learned map built with another than the shipped one (``--model``)."""
    ident = db.extractor_identity
    name = ident.get("name")
    if not name:
        raise MapError(f"{db.path}: manifest has no extractor name; rebuild the map")
    if model_path is not None:
        if name != "learned":
            raise MapError(f"--model applies to learned maps; {db.path} was built with {name!r}")
        kwargs["model_path"] = Path(model_path)
    cls = extractor_class(name)
    params = {**cls.params_from_identity(ident), **cls.QUERY_PARAMS}
    params.update(kwargs)
    ex = create_extractor(name, **params)
    ex.load_state(db.extractor_state)
    check_extractor(db, ex)
    return ex


def identity_differences(map_identity: dict, ex: FeatureExtractor) -> dict:
    """``{key: (map's value, extractor's value)}`` where a map's recorded extractor identity and ``ex``'s differ."""
    want, have = map_identity or {}, ex.identity()
    return {k: (want.get(k), have.get(k)) for k in set(want) | set(have) if want.get(k) != have.get(k)}


def check_extractor(db: MapDatabase, ex: FeatureExtractor) -> None:
    """Refuse an extractor whose identity (name, weights hash, dims) disagrees with the map's."""
    have = ex.identity()
    diff = identity_differences(db.extractor_identity, ex)
    if diff:
        details = ", ".join(f"{k}: map={a!r} vs extractor={b!r}" for k, a, b in
                            ((k, *v) for k, v in sorted(diff.items())))
        hint = "use the model it was built with"
        built_with = (db.manifest.get("build") or {}).get("model") or _build_option(db, "--model")
        if "model_sha256" in diff and built_with:
            hint = (f"it was built with --model {built_with}: pass that file (node parameter model_path; `--model` "
                    f"of `reloc eval`, `eval-bag`, `map update`, `map merge`, `map analyse`)")
        raise MapError(f"map {db.path} was built with another extractor ({details}): rebuild the map with "
                       f"`reloc map build ... --extractor {have.get('name')}` or {hint}")


def _build_option(db: MapDatabase, option: str) -> str | None:
    """The value of ``option`` in the ``reloc map build`` command recorded in the manifest of a map built before
    the manifest recorded ``build.model`` itself."""
    try:
        argv = shlex.split(str((db.manifest.get("build") or {}).get("command") or ""))
    except ValueError:
        return None
    for i, a in enumerate(argv[:-1]):
        if a == option:
            return argv[i + 1]
    return next((a.split("=", 1)[1] for a in argv if a.startswith(option + "=")), None)
