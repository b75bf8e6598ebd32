"""mongoengine documents of the configuration database.

Collections (in the same database as FireWorks' ``fireworks``/``launches``/``workflows``):

``references``
    :class:`Reference`: the cubic reference crystal and the supercell configurations live in.
``configurations``
    :class:`Configuration`: reference + displacements + strain, the structure they give, sampling
    provenance (``tags``; ``tilt_system``, ``method`` and ``parent`` are lifted to indexed fields)
    and the uniqueness key.
``calculations``
    :class:`Calculation`: energy, forces and stress of one configuration with one calculator setup;
    unique on (configuration, settings_hash), so re-ingesting updates instead of duplicating.
``models``
    :class:`ModelRecord`: a trained energy model registered for use.

All documents bind to the connection alias :data:`ALIAS`, which :mod:`perovskite_pes.db.store`
registers on the process's shared client.
"""

from __future__ import annotations

import datetime as _dt

from mongoengine import (
    CASCADE,
    BooleanField,
    DateTimeField,
    DictField,
    Document,
    DynamicField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FloatField,
    IntField,
    ListField,
    ReferenceField,
    StringField,
    ValidationError,
)

ALIAS = "perovskite_pes"


def utcnow() -> _dt.datetime:
    # naive UTC: what BSON stores and what mongomock/pymongo return by default
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def _matrix_validator(rows: int | None, cols: int):
    def check(value):
        if value is None:
            return
        if not isinstance(value, (list, tuple)) or (rows is not None and len(value) != rows):
            raise ValidationError(f"expected {rows} rows of {cols} numbers")
        for row in value:
            if not isinstance(row, (list, tuple)) or len(row) != cols:
                raise ValidationError(f"every row must have {cols} numbers")

    return check


class Reference(Document):
    """The cubic reference perovskite and supercell shared by a set of configurations."""

    key = StringField(required=True)  # stable hash of (species, lattice parameter, supercell)
    label = StringField(required=True)  # e.g. CsPbBr3_a5.8700_2x2x2
    prototype = StringField(default="cubic-perovskite-Pm-3m")
    formula = StringField(required=True)
    species = ListField(StringField(), required=True)  # (A, B, X)
    lattice_parameter = FloatField(required=True, min_value=0.0)
    supercell = ListField(ListField(IntField()), required=True, validation=_matrix_validator(3, 3))
    n_atoms = IntField(required=True, min_value=1)
    created = DateTimeField(default=utcnow)

    meta = {
        "collection": "references",
        "db_alias": ALIAS,
        "indexes": [{"fields": ["key"], "unique": True}, "label", "formula"],
    }

    def to_reference(self):
        """The :class:`perovskite_pes.structure.ReferenceSupercell` this document describes."""
        from ..structure import Perovskite, ReferenceSupercell

        return ReferenceSupercell(Perovskite(tuple(self.species), self.lattice_parameter), self.supercell)


class Configuration(Document):
    """A configuration: reference + displacement field + homogeneous strain, with provenance."""

    key = StringField(required=True)  # uniqueness key (perovskite_pes.db.keys.uniqueness_key)
    key_method = StringField(required=True)
    reference = ReferenceField(Reference, required=True, reverse_delete_rule=CASCADE)
    displacements = ListField(validation=_matrix_validator(None, 3))  # (N, 3) Angstrom (checked in clean)
    strain = ListField(FloatField(), required=True)  # (xx, yy, zz, yz, xz, xy)
    structure = DictField()  # pymatgen Structure.as_dict(verbosity=0) of the deformed cell
    n_atoms = IntField(required=True, min_value=1)
    tags = DictField()  # sampling provenance, free form
    tilt_system = StringField()
    method = StringField()
    parent = StringField()
    source = StringField()  # where it came from: "enumerate", "import:<file>", ...
    created = DateTimeField(default=utcnow)

    meta = {
        "collection": "configurations",
        "db_alias": ALIAS,
        "indexes": [
            {"fields": ["key"], "unique": True},
            "reference",
            "tilt_system",
            "method",
            "parent",
            "created",
        ],
    }

    def clean(self):
        if len(self.strain) != 6:
            raise ValidationError("strain must have 6 components (xx, yy, zz, yz, xz, xy)")
        if not self.displacements or len(self.displacements) != self.n_atoms:
            raise ValidationError(f"displacements must have {self.n_atoms} rows")


class LaunchInfo(EmbeddedDocument):
    """Where and when a calculation ran (FireWorks launch provenance)."""

    fw_id = IntField()
    launch_id = IntField()
    host = StringField()
    launch_dir = StringField()
    time = DateTimeField()
    extra = DictField()


class Calculation(Document):
    """Energy, forces and stress of one configuration with one calculator setup."""

    configuration = ReferenceField(Configuration, required=True, reverse_delete_rule=CASCADE)
    calculator = StringField(required=True)
    version = StringField()
    settings_hash = StringField(required=True)
    settings = DictField()
    status = StringField(required=True, choices=("completed", "failed"))
    error = StringField()
    energy = FloatField()  # eV, total per supercell
    energy_per_atom = FloatField()  # eV/atom (indexed for energy windows)
    n_atoms = IntField()
    forces = ListField(validation=_matrix_validator(None, 3))  # (N, 3) eV/Angstrom
    stress = ListField(FloatField())  # Voigt (xx, yy, zz, yz, xz, xy), eV/Angstrom^3, ASE sign
    wall_time = FloatField()
    output_dir = StringField()
    final_structure = DynamicField()  # pymatgen dict of a relaxed structure, or None
    launch = EmbeddedDocumentField(LaunchInfo)
    created = DateTimeField(default=utcnow)
    updated = DateTimeField(default=utcnow)

    meta = {
        "collection": "calculations",
        "db_alias": ALIAS,
        "indexes": [
            {"fields": ["configuration", "settings_hash"], "unique": True},
            ("calculator", "status"),
            "settings_hash",
            "energy_per_atom",
            "updated",
        ],
    }


class ModelRecord(Document):
    """A trained energy model, with the data it was trained on."""

    name = StringField(required=True)
    path = StringField(required=True)
    calculator = StringField()
    settings_hash = StringField()
    metrics = DictField()
    hyperparameters = DictField()
    calc_ids = ListField(StringField())
    n_train = IntField()
    active = BooleanField(default=False)
    created = DateTimeField(default=utcnow)

    meta = {
        "collection": "models",
        "db_alias": ALIAS,
        "indexes": [("calculator", "active"), "name", "created"],
    }


DOCUMENTS = (Reference, Configuration, Calculation, ModelRecord)
