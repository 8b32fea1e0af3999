"""Finding and reading a task's data: a local directory, the Hugging Face cache, or the synthetic set.

Sources, in the order a task without ``--data-dir`` tries them:

1. the real release in the local Hugging Face cache, found by looking at the cache directories
   (never the network): the prepared Arrow files that ``datasets.load_dataset`` leaves under
   ``$HF_DATASETS_CACHE/<namespace>___<name>/<config>/...``, else the parquet files of a downloaded
   snapshot under ``$HF_HUB_CACHE/datasets--<namespace>--<name>/snapshots/<revision>/``. Reading the
   cache directly keeps the lookup offline without touching process-wide offline settings;
2. the bundled synthetic set in ``<cache_dir>/data/<task>-seed<seed>-n<n>/``, generated on first use
   into a temporary directory that is renamed into place (atomic: a killed generation leaves no half
   set, and ranks of a distributed job that race each keep a complete set).

Releases published as JSON files beside an image folder (AMBER, HallusionBench) are read by
`vlmbench.data.releases` instead, from ``--data-dir`` or ``<cache>/releases/<task>/``.

Any directory is read the same way: a ``save_to_disk`` directory (Dataset or DatasetDict), else the
parquet/Arrow files under it (recursively; files named for the split preferred; sharded files must be
complete). Images are never decoded here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmbench.data.layout import META_FILE
from vlmbench.errors import UserError

if TYPE_CHECKING:
    import datasets

    from vlmbench.tasks.config import TaskConfig

logger = logging.getLogger(__name__)

DATA_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow")
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})")
_PREFERRED_GROUPS: tuple[str, ...] = ("data", "default")


def default_cache_dir() -> Path:
    """Where vlmbench keeps generated data and other caches: ``$VLMBENCH_CACHE`` or ``~/.cache/vlmbench``."""
    env = os.environ.get("VLMBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlmbench"


@dataclass
class ReleaseTable:
    """A data set as read from one directory, images left undecoded."""

    dataset: datasets.Dataset
    root: Path
    files: list[Path]
    """The data files the rows came from (what the fingerprint hashes)."""
    source: str
    synthetic: bool
    meta: dict[str, Any] = field(default_factory=dict)
    """The directory's `META_FILE` contents ({} for a real release)."""

    @property
    def column_names(self) -> list[str]:
        """The columns of the data set."""
        return list(self.dataset.column_names)

    def rows(self, exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every row, in file order, without the ``exclude`` columns (e.g. the images)."""
        keep = [c for c in self.dataset.column_names if c not in exclude]
        try:
            return self.dataset.select_columns(keep).to_list()
        except UnicodeDecodeError as exc:  # Arrow stores string cells unchecked; Python decodes them here
            raise UserError(
                f"the data at {self.root} has a text cell that is not UTF-8 ({exc.reason}); "
                "re-encode its string columns as UTF-8 (or store binary data as a binary column)"
            ) from None

    def images(self, column: str, n: int) -> list[tuple[bytes | None, str | None]]:
        """(bytes, path) of the first ``n`` rows' images; a relative path is resolved against `root`."""
        subset = self.dataset.select(range(n)).select_columns([column])
        out: list[tuple[bytes | None, str | None]] = []
        for value in subset[column]:
            out.append(_image_ref(value, self.root))
        return out


def _image_ref(value: Any, root: Path) -> tuple[bytes | None, str | None]:
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return bytes(data), None
        value = path
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str) and value:
        path_obj = Path(value)
        return None, str(path_obj if path_obj.is_absolute() else root / path_obj)
    return None, None


def read_meta(directory: Path) -> dict[str, Any]:
    """The directory's `META_FILE` (a synthetic set's provenance), or {} when absent or unreadable."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("ignoring unreadable %s", path)
        return {}
    return meta if isinstance(meta, dict) else {}


def _split_pattern(split: str) -> re.Pattern[str]:
    return re.compile(rf"(^|[-_./]){re.escape(split)}([-_./]|$)", re.IGNORECASE)


def discover_files(
    root: Path, split: str, hf_config: str | None = None, strict_split: bool = False
) -> list[Path]:
    """The parquet (else Arrow) files under ``root`` holding ``split``.

    Files whose relative path names the split (``test-00000-of-00003.parquet``, ``test/0000.parquet``,
    ``pope-test.arrow``) are preferred; without any, all files are used unless ``strict_split``.
    Files spread over several folders (config folders of a release) are narrowed to the folder named
    ``hf_config``, else ``data``/``default``. Returns [] when nothing matches; raises `UserError` on an
    ambiguous or incomplete set.
    """
    root = Path(root)
    candidates = sorted(
        p
        for p in root.rglob("*")
        if p.suffix in DATA_SUFFIXES
        and not p.name.startswith("cache-")
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )
    if not candidates:
        return []
    pattern = _split_pattern(split)
    matching = [p for p in candidates if pattern.search(p.relative_to(root).as_posix())]
    if matching:
        candidates = matching
    elif strict_split:
        return []
    else:
        logger.warning(
            "no data file under %s is named for split '%s'; reading all %d files",
            root,
            split,
            len(candidates),
        )
    groups: dict[Path, list[Path]] = {}
    for path in candidates:
        groups.setdefault(_group_of(path.relative_to(root), split), []).append(path)
    if len(groups) > 1:
        wanted = [hf_config.lower()] if hf_config else list(_PREFERRED_GROUPS)
        chosen = [g for g in groups if any(part.lower() in wanted for part in g.parts)]
        if len(chosen) != 1:
            listing = ", ".join(str(root / g) for g in sorted(groups))
            raise UserError(f"several data sets under {root} ({listing}); point --data-dir at the one to use")
        candidates = groups[chosen[0]]
    parquet = [p for p in candidates if p.suffix == ".parquet"]
    files = parquet or candidates
    _check_shards(files)
    return files


def _group_of(relative: Path, split: str) -> Path:
    """The config folder of a data file: its parent, minus a trailing folder named for the split."""
    parent = relative.parent
    if parent.name.lower() == split.lower():
        parent = parent.parent
    return parent


def _check_shards(files: list[Path]) -> None:
    """Sharded files (``-00001-of-00003``) must all be there: a partial download would silently lose rows."""
    sets: dict[tuple[Path, str, int], set[int]] = {}
    for path in files:
        match = _SHARD.search(path.name)
        if match:
            stem = path.name[: match.start()]
            sets.setdefault((path.parent, stem, int(match.group(2))), set()).add(int(match.group(1)))
    for (parent, stem, total), present in sets.items():
        missing = sorted(set(range(total)) - present)
        if missing:
            names = ", ".join(f"{stem}-{i:05d}-of-{total:05d}" for i in missing[:5])
            raise UserError(
                f"incomplete data set in {parent}: missing shard(s) {names}; download the release again"
            )


def open_directory(
    root: Path, split: str, hf_config: str | None, expected: str
) -> tuple[datasets.Dataset, list[Path]]:
    """Read the data set in ``root`` (any layout, see the module doc); ``expected`` describes what
    should be there, for the error message."""
    import datasets

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no data found at {root}: the directory does not exist; expected {expected}")
    try:
        if (root / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(root))
            if split not in loaded:
                raise UserError(
                    f"the data set at {root} has no split '{split}' (it has: {', '.join(loaded)}); "
                    f"expected {expected}"
                )
            return loaded[split], sorted((root / split).rglob("*.arrow"))
        if (root / "state.json").is_file() and (root / "dataset_info.json").is_file():
            return datasets.load_from_disk(str(root)), sorted(root.glob("*.arrow"))
        files = discover_files(root, split, hf_config)
        if not files:
            raise UserError(f"no data found at {root}: expected {expected}")
        parts = [_read_file(path) for path in files]
        dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        return dataset, files
    except UserError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"cannot read the data at {root}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own error types (ArrowInvalid, ...)
        if type(exc).__module__.startswith(("pyarrow", "datasets")):
            raise UserError(f"cannot read the data at {root}: {type(exc).__name__}: {exc}") from exc
        raise


def _read_file(path: Path) -> datasets.Dataset:
    import datasets

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        # An in-memory table keeps the features stored in the file's schema and writes nothing to a cache.
        return datasets.Dataset(pq.read_table(str(path)))
    return datasets.Dataset.from_file(str(path))


def undecoded(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """``dataset`` with its image column left as bytes/path (a corrupt image then fails one sample only)."""
    import datasets

    feature = dataset.features.get(column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def release_arrow_memory() -> None:
    """Hand the Arrow memory pool's freed buffers back to the system.

    Reading a parquet release decompresses it through pyarrow's pool, which keeps freed memory for
    reuse: after a 10 MB POPE file was read and its table dropped, ~45 MB stayed resident for the whole
    run. Called once a task's samples are built; a no-op when pyarrow was never imported."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()


# --- the Hugging Face cache --------------------------------------------------------------------------


def _hf_cache_roots() -> tuple[Path, Path]:
    """The `datasets` cache and the Hub cache, resolved as those libraries resolve them.

    Looking for a release only reads the file system, so this does not import `datasets` (0.5-2 s of
    start-up that `vlmbench tasks` would pay): its cache is ``$HF_DATASETS_CACHE``, else
    ``<HF_HOME>/datasets`` with ``HF_HOME`` as `huggingface_hub` resolves it (``$HF_HOME``, else
    ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``). tests/test_startup.py checks
    this against ``datasets.config`` under each of those variables."""
    from huggingface_hub import constants

    datasets_cache = os.environ.get("HF_DATASETS_CACHE") or os.path.join(constants.HF_HOME, "datasets")
    return Path(datasets_cache), Path(constants.HF_HUB_CACHE)


_UPPER_RUN = re.compile(r"([A-Z]+)([A-Z][a-z])")
_LOWER_UPPER = re.compile(r"([a-z\d])([A-Z])")


def snake_case(name: str) -> str:
    """A data set name as `datasets` names its cache folder (``VQAv2Sample`` → ``vq_av2_sample``): an
    underscore before each capital that starts a word, then lower case. Equal to
    ``datasets.naming.camelcase_to_snakecase`` (tests/test_startup.py checks it) without importing
    `datasets`."""
    return _LOWER_UPPER.sub(r"\1_\2", _UPPER_RUN.sub(r"\1_\2", name)).lower()


def find_in_hf_cache(
    hf_dataset: str,
    split: str,
    hf_config: str | None = None,
    datasets_cache: Path | None = None,
    hub_cache: Path | None = None,
) -> Path | None:
    """The directory in the local Hugging Face caches holding ``split`` of ``hf_dataset``, or None.

    Looks only at the file system (prepared Arrow files first, then downloaded parquet snapshots;
    the most recently written wins).
    """
    if datasets_cache is None or hub_cache is None:
        default_datasets, default_hub = _hf_cache_roots()
        datasets_cache = datasets_cache or default_datasets
        hub_cache = hub_cache or default_hub
    namespace, _, name = hf_dataset.rpartition("/")
    prefix = f"{namespace}___" if namespace else ""
    config_id = hf_config or "default"

    prepared: list[Path] = []
    for dirname in {prefix + snake_case(name), prefix + name.lower(), prefix + name}:
        base = Path(datasets_cache) / dirname
        if not base.is_dir():
            continue
        for config_dir in base.iterdir():
            if config_dir.name != config_id and not config_dir.name.startswith(config_id + "-"):
                continue
            for version_hash in config_dir.glob("*/*"):
                if version_hash.is_dir() and not version_hash.name.endswith(".incomplete"):
                    prepared.append(version_hash)
    found = [d for d in prepared if _holds_split(d, split, None)]
    if not found:
        snapshots = Path(hub_cache) / f"datasets--{hf_dataset.replace('/', '--')}" / "snapshots"
        if snapshots.is_dir():
            found = [d for d in snapshots.iterdir() if d.is_dir() and _holds_split(d, split, hf_config)]
    if not found:
        return None
    return max(found, key=lambda d: d.stat().st_mtime)


def _holds_split(directory: Path, split: str, hf_config: str | None) -> bool:
    try:
        return bool(discover_files(directory, split, hf_config, strict_split=True))
    except UserError as exc:
        logger.debug("skipping %s: %s", directory, exc)
        return False


# --- the synthetic set -------------------------------------------------------------------------------


def synthetic_dir(cache_dir: Path, task: str, seed: int, n: int) -> Path:
    """Where the synthetic set of ``task`` with this seed and size lives."""
    return Path(cache_dir) / "data" / f"{task}-seed{seed}-n{n}"


def ensure_synthetic(task: str, cache_dir: Path, seed: int, n: int) -> Path:
    """The synthetic set's directory, generated (atomically) if it is not there yet."""
    final = synthetic_dir(cache_dir, task, seed, n)
    if final.is_dir():
        _warn_if_stale(final)
        return final
    from vlmbench.data.synth import generate  # looked up per call: tests substitute the generator

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        logger.info("generating the synthetic %s set (seed %d, n %d) in %s", task, seed, n, final)
        generate(task, tmp, seed=seed, n=n)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            logger.debug("another process generated %s first; keeping its copy", final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _warn_if_stale(directory: Path) -> None:
    """Say so when a cached synthetic set was written by another generator version."""
    from vlmbench.data.synth.common import GENERATOR_VERSION  # imports PIL: only for a cached set

    made_by = read_meta(directory).get("generator_version")
    if made_by is not None and str(made_by) != str(GENERATOR_VERSION):
        logger.warning(
            "the synthetic set %s was made by generator version %s (current: %s); delete it to regenerate",
            directory,
            made_by,
            GENERATOR_VERSION,
        )


# --- resolving a task's source -------------------------------------------------------------------


def _expected(config: TaskConfig, columns: Sequence[str]) -> str:
    release = config.hf_dataset or f"the {config.name} release"
    return (
        f"a Hugging Face release of {release} (parquet/arrow files or save_to_disk) "
        f"with columns {', '.join(columns)}"
    )


def resolve_source(
    config: TaskConfig,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    synthetic_n: int | None = None,
    required_columns: Sequence[str] = (),
) -> ReleaseTable:
    """Open the task's data: ``data_dir``, else the HF cache, else the (generated) synthetic set."""
    expected = _expected(config, required_columns or list(config.columns.values()))
    image_column = config.columns.get("image", "image")
    json_release = _json_release(config, data_dir, cache_dir)
    if json_release is not None:
        return json_release
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        meta = read_meta(root)
        dataset, files = open_directory(root, _split_of(config, meta), config.hf_config, expected)
        source = f"local:{root}"
        logger.info("%s: reading %s", config.name, root)
        return ReleaseTable(
            undecoded(_per_item(config, dataset), image_column),
            root,
            files,
            source,
            bool(meta.get("synthetic")),
            meta,
        )
    if config.hf_dataset:
        cached = find_in_hf_cache(config.hf_dataset, config.split, config.hf_config)
        if cached is not None:
            try:
                dataset, files = open_directory(cached, config.split, config.hf_config, expected)
            except UserError as exc:
                logger.warning("%s: ignoring the HF cache copy at %s: %s", config.name, cached, exc)
            else:
                logger.info("%s: using %s from the HF cache (%s)", config.name, config.hf_dataset, cached)
                return ReleaseTable(
                    undecoded(_per_item(config, dataset), image_column),
                    cached,
                    files,
                    f"hf-cache:{config.hf_dataset}",
                    False,
                    {},
                )
    from vlmbench.data.synth import SYNTH_TASKS

    if config.name not in SYNTH_TASKS:
        if config.hf_dataset:
            where = f"{config.hf_dataset} is not in the Hugging Face cache"
            fix = f"download it (`huggingface-cli download --repo-type dataset {config.hf_dataset}`) or pass --data-dir"
        else:
            where, fix = "no release is configured", "pass --data-dir DIR holding its data"
        raise UserError(f"task {config.name} has no synthetic stand-in and {where}: {fix}")
    n = synthetic_n if synthetic_n is not None else config.synthetic_n
    if n < 1:
        raise UserError(f"the synthetic set size must be a positive integer, got {n}")
    root = ensure_synthetic(
        config.name, Path(cache_dir) if cache_dir else default_cache_dir(), config.synthetic_seed, n
    )
    why = (
        f"{config.hf_dataset} is not in the HF cache"
        if config.hf_dataset
        else "no public release is configured"
    )
    logger.info(
        "%s: using the bundled synthetic set %s (%s; pass --data-dir for real data)", config.name, root, why
    )
    meta = read_meta(root)
    dataset, files = open_directory(root, _split_of(config, meta), config.hf_config, expected)
    return ReleaseTable(
        undecoded(_per_item(config, dataset), image_column), root, files, f"synthetic:{root}", True, meta
    )


def _json_release(config: TaskConfig, data_dir: Path | None, cache_dir: Path | None) -> ReleaseTable | None:
    """A task whose release is JSON files beside an image folder (`vlmbench.data.releases`): read from
    ``data_dir``, else ``<cache_dir>/releases/<task>/``; None for the other tasks."""
    from vlmbench.data.releases import JSON_RELEASES

    reader = JSON_RELEASES.get(config.adapter)
    if reader is None:
        return None
    default = Path(cache_dir) if cache_dir else default_cache_dir()
    root = Path(data_dir).expanduser() if data_dir is not None else default / "releases" / config.name
    if not root.is_dir():
        raise UserError(
            f"no {config.name} release at {root} (the task has no synthetic stand-in): {reader.download}, "
            f"or pass --data-dir DIR holding it"
        )
    dataset, files = reader.read(root, config)
    logger.info("%s: reading the release at %s", config.name, root)
    return ReleaseTable(dataset, root, files, f"local:{root}", False, {})


def _per_item(config: TaskConfig, dataset: datasets.Dataset) -> datasets.Dataset:
    """RefCOCO-style sets (the grounding adapter) list several expressions per object: one row each."""
    if config.adapter != "grounding":
        return dataset
    from vlmbench.data.releases import explode_expressions

    return explode_expressions(dataset, config.columns.get("answers", "answer"))


def _split_of(config: TaskConfig, meta: dict[str, Any]) -> str:
    """The split to read: a synthetic set names the one it wrote (its META_FILE), else the config's."""
    split = meta.get("split") if meta.get("synthetic") else None
    return split if isinstance(split, str) and split else config.split


def fingerprint(files: Sequence[Path], root: Path, config: TaskConfig | None = None) -> str:
    """sha256 over the data files (sorted relative paths and bytes) and the task config."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: Path(p).relative_to(root).as_posix()):
        relative = Path(path).relative_to(root).as_posix()
        digest.update(relative.encode() + b"\0" + str(Path(path).stat().st_size).encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(chunk)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()
