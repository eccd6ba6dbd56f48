"""Click options shared by several commands, and the one mapping from ``pbcgnn train``'s options to a Config."""
from __future__ import annotations

import click

from pbcgnn.config import CommitteeConfig, Config, DataConfig, ModelConfig, TrainConfig, TransferConfig
from pbcgnn.units import ENERGY_UNITS, LENGTH_UNITS

#: Config section and field of every ``pbcgnn train`` option that is not the field's own name.
RENAMED = {"data": ("data", "paths"), "model": ("model", "architecture"), "fmt": ("data", "format"), "features": ("model", "hidden_channels"),
           "filters": ("model", "num_filters"), "interactions": ("model", "num_interactions"),
           "rbf": ("model", "num_rbf"), "committee": ("committee", "size")}
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "transfer": TransferConfig,
            "committee": CommitteeConfig}


def default(section: str, name: str):
    """The config's default of ``section.name``: the only place defaults live."""
    return SECTIONS[section].__dataclass_fields__[name].default


def config_field(name: str) -> str | None:
    """``"section.field"`` of ``pbcgnn train``'s parameter ``name``; None for those that are no config
    field (``out``, ``resume``, ...)."""
    if name in RENAMED:
        return ".".join(RENAMED[name])
    section = next((s for s, kind in SECTIONS.items() if name in kind.__dataclass_fields__), None)
    return None if section is None else f"{section}.{name}"


def config_from_params(params: dict) -> Config:
    """A Config from click's parameters (option names as in :data:`RENAMED`, else the field's own);
    parameters that are no config field (``out``, ``resume``, ...) are left out."""
    values: dict[str, dict] = {name: {} for name in SECTIONS}
    for name, value in params.items():
        field = config_field(name)
        if field is not None:
            section, key = field.split(".")
            values[section][key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return Config(**{s: SECTIONS[s](**v) for s, v in values.items()})


def data_options(f):
    """``--format``, ``--length-unit``, ``--energy-unit`` for commands that read data files."""
    f = click.option(
        "--energy-unit",
        type=click.Choice(list(ENERGY_UNITS), case_sensitive=False),
        default=None,
        help="Energy unit of the data files [default: hartree for n2p2, ev otherwise].",
    )(f)
    f = click.option(
        "--length-unit",
        type=click.Choice(list(LENGTH_UNITS), case_sensitive=False),
        default=None,
        help="Length unit of the data files [default: bohr for n2p2, angstrom otherwise].",
    )(f)
    f = click.option(
        "--format",
        "fmt",
        default=None,
        metavar="FORMAT",
        help="n2p2, or an ASE format name such as extxyz [default: detect].",
    )(f)
    return f


def label_key_options(f):
    """``--energy-key``, ``--forces-key``, ``--stress-key``: which columns of extended XYZ (and other
    ASE formats) hold the labels, e.g. MACE-style ``REF_energy``/``REF_forces``."""
    for what, example in (("stress", "REF_stress"), ("forces", "REF_forces"), ("energy", "REF_energy")):
        f = click.option(
            f"--{what}-key",
            default=default("data", f"{what}_key"),
            metavar="KEY",
            help=f"Column holding the {what} in extended XYZ/ASE files, e.g. {example} "
                 "[default: the usual names; columns that look like labels but are not read are warned about].",
        )(f)
    return f


data_paths = click.argument(
    "data", nargs=-1, type=click.Path(exists=True, dir_okay=False, readable=True)
)


def structure_options(f):
    """``--structure``, ``--frame`` and the data options: the starting structure of ``md`` and ``ipi``."""
    f = data_options(f)
    f = click.option("--frame", type=int, default=-1, show_default=True,
                     help="Frame of --structure to use (-1: the last, e.g. of a previous trajectory.xyz).")(f)
    f = click.option("--structure", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="Structure (extended XYZ, n2p2 input.data or any ASE format).")(f)
    return f


def model_options(f):
    """``--tabulate``, ``--device``, ``--dtype``: how a checkpoint is evaluated (``md``, ``ipi``)."""
    f = click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
                     help="Model precision [default: as trained]; float64 for long NVE runs.")(f)
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda (for the model).")(f)
    return tabulate_option(f)


def tabulate_option(f):
    """``--tabulate/--exact``: evaluate through the filter tables (``md``, ``ipi``, ``select``)."""
    return click.option("--tabulate/--exact", default=True, show_default=True,
                        help="Filters from precomputed tables (SchNet) or grid cells (PaiNN), equal to the exact "
                             "model within float32 rounding and several times faster; --exact: the filter networks.")(f)


def read_structure(structure, frame: int, fmt, length_unit, energy_unit):
    """Frame ``frame`` of the file ``structure`` (``--structure``/``--frame``), as ``ase.Atoms`` in Angstrom."""
    from pbcgnn.errors import InputError
    from pbcgnn.io import read_frames

    frames = read_frames(structure, format=fmt, length_unit=length_unit, energy_unit=energy_unit,
                         require_energy=False)
    if not -len(frames) <= frame < len(frames):
        raise InputError(f"expected --frame in [{-len(frames)}, {len(frames) - 1}], found {frame}", path=structure)
    return frames[frame]
