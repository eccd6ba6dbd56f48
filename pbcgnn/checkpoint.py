"""The checkpoint format: save atomically, read without unpickling code, rebuild the model, committee layout.

A checkpoint is a dict of plain types and tensors only, so ``torch.load(path,
weights_only=True)`` reads it and a file someone sent you cannot run code. The file is a
torch zip archive; :func:`read_checkpoint` checks the CRC-32 of every record before loading,
so a file altered after it was written (a bad copy, bit rot) is refused, not trained on:

=================  =============================================================
``format``         checkpoint format version (int)
``version``        pbcgnn version that wrote it
``config``         ``Config.to_dict()``: data, model and training options
``model``          state dict of the weights for inference (the EMA average),
                   including the buffers ``reference.e0``/``reference.scale`` and
                   the cutoff, so the file is the whole function
``elements``       atomic numbers seen in training
``units``          ``{"energy": "eV", "length": "Angstrom"}``
``metrics``        validation metrics of these weights
``epoch``          epochs completed
``train_state``    optimizer, scheduler, raw and EMA weights, RNG, loop state, sha256 of the input files
                   for ``--resume`` (``last.pt``); absent when stripped
=================  =============================================================

A committee checkpoint (``pbcgnn train --committee N``) has the same keys; ``model`` is the
state dict of a :class:`pbcgnn.model.Committee` (keys ``members.K.*``), and ``members``
lists per member its ``seed``, ``epoch``, ``metrics`` and run folder. ``config`` is the
committee's (``committee.size`` = N); each member's own folder holds its single-model
checkpoints. ``train_state`` of a committee's ``last.pt`` only marks it resumable (each member
resumes from its own ``last.pt``). ``calibration`` (:meth:`Calibration.to_dict`, plain values)
maps the members' spread to the reported uncertainty; a committee checkpoint without it (written
before calibrations existed, or combined by hand) loads with the identity: raw spreads.
"""
from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import pickle
import re
import socket
import time
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import Config
from .errors import InputError, OutputError, first_line
from .model import ARCHITECTURES, EnergyModel
from .model.calibration import Calibration
from .model.committee import Committee

__all__ = ["FORMAT_VERSION", "UNITS", "save_checkpoint", "atomic_output", "read_checkpoint", "verify_archive",
           "checkpoint_config", "load_checkpoint", "model_from_checkpoint", "build_model", "member_state_dict",
           "combine_checkpoints"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Seconds after which a temporary checkpoint file nobody touched is stale, whoever wrote it.
STALE_AFTER_S = 60.0
#: The first bytes of a zip archive: every checkpoint ``torch.save`` writes (not torch's legacy pickle files).
_ZIP_MAGIC = b"PK\x03\x04"
#: The first bytes of torch's legacy (pre-1.6, non-zip) files: pickle protocol 2 and torch's magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
#: Host name in temporary file names, so a writer on another host sharing the folder is not mistaken for a dead one.
_HOST = socket.gethostname().replace("/", "_") or "localhost"
#: The units of every checkpoint's energies and lengths (pbcgnn's internal units).
UNITS = {"energy": "eV", "length": "Angstrom"}


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (:func:`atomic_output`): a kill or a failed
    write (full disk, read-only folder) leaves the previous file intact.

    Raises:
        OutputError: the folder or the file cannot be written, naming the path and the reason.
    """
    with atomic_output(path, "torch.save") as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT_VERSION, "version": __version__, "units": UNITS, **checkpoint}, f)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, writer: str = "write") -> Iterator[Path]:
    """A fresh temporary file next to ``path`` for the block to write; fsynced and renamed onto
    ``path`` when the block succeeds, removed when it fails, so ``path`` is never half written.

    The file gets the permissions of any other output (``0o666`` less the umask). Temporary
    files that a killed writer left behind for this name are removed first (see
    :func:`_remove_stale_temps`).

    Args:
        path: the file to write.
        writer: what writes it, for the message of a ``RuntimeError`` raised in the block
            (torch's zip writer: "PytorchStreamWriter failed writing file ...").

    Raises:
        OutputError: the folder or the file cannot be written, naming the path and the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        tmp = path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        # os.open applies the umask (mkstemp would force 0o600).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
    except OSError as err:
        raise OutputError.from_os(err, path) from None
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError.from_os(err, path) from None
    except RuntimeError as err:
        raise OutputError(path, f"{writer} failed ({first_line(err)})") from None
    finally:
        with contextlib.suppress(OSError):  # gone after the rename; never hide the real error
            tmp.unlink()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files of ``path`` left by killed writers, never one a live writer uses.

    Ours are named ``.NAME.HOST.PID.RANDOM.tmp``: removed when that process is gone from this
    host. Those of another host (a shared file system) and the ``.NAME.XXXXXXXX`` files of
    older versions (``mkstemp``) are removed when untouched for :data:`STALE_AFTER_S`: a live
    writer touches its file continuously, so an old modification time means nobody writes it.
    """
    mine = re.compile(rf"^\.{re.escape(path.name)}\.(?P<host>.+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}\.tmp$")
    legacy = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}$")
    now = time.time()
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*"):
        match = mine.match(candidate.name)
        if not match and not legacy.match(candidate.name):
            continue
        try:
            if match and match["host"] == _HOST:
                stale = not _alive(int(match["pid"]))
            else:
                stale = now - candidate.stat().st_mtime > STALE_AFTER_S
            if stale:
                candidate.unlink()
                log.info("removed %s, a temporary file of an interrupted checkpoint write", candidate)
        except OSError as err:  # cleaned up by another writer first, or not ours to remove: never fail the save
            log.debug("left %s: %s", candidate, err)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True``; bad or altered files raise InputError.

    The archive's CRC-32s are checked first (:func:`verify_archive`).

    Torch's own message for a refused file advises loading it with ``weights_only=False``,
    which would run whatever code the file holds: that advice is never passed on.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such checkpoint file", path=path)
    try:
        data = path.read_bytes()  # read once: the bytes checked are the bytes loaded
    except OSError as err:
        raise InputError(f"cannot read the checkpoint ({err.strerror or err})", path=path) from None
    verify_archive(data, path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise for a refused file
            warnings.simplefilter("ignore")
            ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise InputError(f"expected a pbcgnn checkpoint, found {_load_failure(err, data)}", path=path) from None
    if not isinstance(ckpt, dict) or "format" not in ckpt or "model" not in ckpt:
        raise InputError("expected a pbcgnn checkpoint, found no 'format' or 'model' entry", path=path)
    if not isinstance(ckpt["format"], int) or isinstance(ckpt["format"], bool):
        raise InputError(f"expected an integer checkpoint format, found {ckpt['format']!r}", path=path)
    if ckpt["format"] > FORMAT_VERSION:
        raise InputError(
            f"checkpoint format {ckpt['format']} is newer than this pbcgnn ({__version__}) reads", path=path
        )
    checkpoint_config(ckpt, path)
    return ckpt


def verify_archive(data: bytes, path: str | os.PathLike | None = None) -> None:
    """Refuse a torch zip archive whose bytes changed after ``torch.save`` wrote them.

    ``torch.load`` reads the records of the archive by offset without checking their CRC-32s,
    so a flipped byte in a tensor's storage loads as silently wrong weights. Every record is
    read through :mod:`zipfile`, which checks its CRC-32 (milliseconds per megabyte). Records
    stored with a CRC of 0 (``torch.serialization.config.save.compute_crc32 = False``) have
    nothing to check; data that is not a zip archive (torch's legacy format) is left to
    ``torch.load``.

    Raises:
        InputError: a damaged archive or a record whose CRC-32 does not match, naming ``path``.
    """
    if not data.startswith(_ZIP_MAGIC):
        return
    record = None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                record = info.filename
                if info.CRC == 0 and info.file_size:  # written without CRCs
                    continue
                with archive.open(info) as f:  # raises BadZipFile at the end of a record whose CRC-32 differs
                    while f.read(1 << 22):
                        pass
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as err:
        if "CRC" in str(err):
            what = "a CRC-32 mismatch"
        elif record is None:  # zipfile found no central directory at the end
            what = "a zip archive without its directory (cut short?)"
        else:
            what = f"a damaged zip archive ({first_line(err)})"
        where = f" in record {record}" if record else ""
        raise InputError(f"expected an intact checkpoint, found {what}{where}: the file was truncated or "
                         "altered after it was written (a bad copy or a failing disk)", path=path) from None


def checkpoint_config(ckpt: dict[str, Any], path: str | os.PathLike | None = None) -> Config:
    """The :class:`Config` stored in a checkpoint, its model section checked (types and values).

    :func:`read_checkpoint` calls this, so a checkpoint it returns has a config that
    ``Config.from_dict`` rebuilds and a model section :func:`build_model` accepts.

    Raises:
        InputError: no config, a section that is not a table, unknown options, or model
            options of the wrong type or value, naming ``path``.
    """
    raw = ckpt.get("config")
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        if isinstance(raw, dict):
            found = "no model section" if "model" not in raw else f"model: {type(raw['model']).__name__}"
        else:
            found = "no config" if raw is None else type(raw).__name__
        raise InputError(f"expected a config with a 'model' table, found {found}", path=path)
    bad = sorted(k for k, v in raw.items() if not isinstance(v, dict))
    if bad:
        raise InputError(f"expected config sections as tables, found {', '.join(bad)}", path=path)
    model = raw["model"]
    for name in ("hidden_channels", "num_filters", "num_interactions", "num_rbf"):
        if name in model and (not isinstance(model[name], int) or isinstance(model[name], bool)):
            raise InputError(f"expected an integer model.{name}, found {model[name]!r}", path=path)
    if "cutoff" in model and (not isinstance(model["cutoff"], (int, float)) or isinstance(model["cutoff"], bool)):
        raise InputError(f"expected a number for model.cutoff, found {model['cutoff']!r}", path=path)
    try:
        config = Config.from_dict(raw)
        config.model.validate()
    except InputError as err:
        raise InputError(f"checkpoint config: {err.reason}", path=path) from None
    except (TypeError, ValueError, AttributeError) as err:
        raise InputError(f"expected a pbcgnn config, found {type(err).__name__}: {err}", path=path) from None
    return config


def _load_failure(err: Exception, data: bytes = b"") -> str:
    """What torch.load's error says about the file ``data``, in a few words and without torch's advice."""
    text = str(err)
    if isinstance(err, EOFError):
        return "an empty or truncated file"
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if isinstance(err, pickle.UnpicklingError) and found:
        return f"a pickled Python object ({found[1]}), which is refused: loading it could run code"
    if isinstance(err, pickle.UnpicklingError) or not data.startswith((_ZIP_MAGIC, _LEGACY_MAGIC)):
        # the legacy loader unpickles anything: random bytes fail in many ways (KeyError, IndexError, ...)
        return "a file that is not a torch file of tensors and plain values"
    return f"an unreadable file ({type(err).__name__}: {first_line(err)})"


def build_model(config: Config) -> EnergyModel:
    """A freshly initialised model of the configured architecture, size and dtype."""
    dtype = getattr(torch, config.model.dtype)
    return ARCHITECTURES[config.model.architecture](**config.model.model_kwargs()).to(dtype)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint.

    Args:
        path: ``best.pt`` or ``last.pt``.
        device: where to put the model.
        dtype: ``"float32"``/``"float64"`` to override the trained dtype (e.g. float64 for MD).

    Returns:
        ``(model, checkpoint)`` with the model in eval mode: an :class:`EnergyModel`, or for a
        committee checkpoint a :class:`pbcgnn.model.Committee` of them (same ``forward``,
        returning the members' mean energy; ``members`` and ``cutoff`` attributes).
    """
    ckpt = read_checkpoint(path)
    return model_from_checkpoint(ckpt, device, dtype, path=path), ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any], device: str | torch.device = "cpu", dtype: str | None = None,
    path: str | os.PathLike | None = None,
) -> torch.nn.Module:
    """The model (an architecture or a Committee of one) of a checkpoint dict, in eval mode; see :func:`load_checkpoint`.

    Raises:
        InputError: a config or weights that do not make this model, naming ``path``.
    """
    config = checkpoint_config(ckpt, path)
    members = ckpt.get("members")
    if members is not None and (not isinstance(members, list) or not members):
        raise InputError(f"expected a list of committee members, found {members!r:.40}", path=path)
    if members is None and config.committee.size > 1:
        raise InputError("committee run not finished: no members combined yet (resume it)", path=path)
    if not isinstance(ckpt["model"], dict):
        raise InputError(f"expected the model's weights as a table, found {type(ckpt['model']).__name__}", path=path)
    calibration = Calibration.from_dict(ckpt.get("calibration"), path) if members else None
    try:
        model = Committee([build_model(config) for _ in members], calibration) if members else build_model(config)
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        # e.g. "size mismatch for lin1.bias": weights of another architecture than the config says
        raise InputError(f"expected weights of the model its config describes, found: {_mismatch(err)}",
                         path=path) from None
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    return model.to(device).eval()


def _mismatch(err: Exception) -> str:
    """The first problem torch's load_state_dict reports, on one line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else (lines or [""])[0]
    detail = detail or type(err).__name__
    return detail if len(detail) <= 160 else detail[:157] + "..."


def member_state_dict(ckpt: dict[str, Any], member: int = 0) -> dict[str, torch.Tensor]:
    """The weights of one model in a checkpoint: the model itself, or member ``member`` of a committee."""
    state = ckpt["model"]
    if "members" not in ckpt:
        return state
    prefix = f"members.{member}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def combine_checkpoints(config: Config, members: list[dict[str, Any]], dirs: list[Path]) -> dict[str, Any]:
    """One committee checkpoint from the members' single-model checkpoints (plain types only).

    Args:
        config: the committee's config (``committee.size`` = number of members).
        members: the members' checkpoint dicts (``best.pt`` or ``last.pt``), in member order.
        dirs: the members' run folders.
    """
    model = {f"members.{k}.{key}": value for k, ckpt in enumerate(members) for key, value in ckpt["model"].items()}
    info = [{"seed": Config.from_dict(c["config"]).train.seed, "epoch": c["epoch"], "metrics": c.get("metrics", {}),
             "dir": str(d)} for c, d in zip(members, dirs)]
    elements = sorted(set().union(*(c["elements"] for c in members)))
    return {"config": config.to_dict(), "model": model, "members": info, "elements": elements,
            "epoch": max(c["epoch"] for c in members), "units": UNITS}
