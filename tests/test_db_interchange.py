"""Extended XYZ import maps rotated, re-ordered frames back onto the reference, results included."""

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from scipy.spatial.transform import Rotation

from perovskite_pes.db.interchange import ImportFormatError, read_records
from perovskite_pes.structure import Configuration, Perovskite, matrix_to_strain, strain_to_matrix


def _frame(config, forces, stress, rot, perm):
    atoms = config.to_ase()
    atoms.set_cell(atoms.cell[:] @ rot.T, scale_atoms=False)
    atoms.positions = config.positions @ rot.T
    atoms = atoms[perm]
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=-123.4,
        forces=(forces @ rot.T)[perm],
        stress=matrix_to_strain(rot @ strain_to_matrix(stress) @ rot.T),
    )
    atoms.info["calculator"] = "sevennet"
    return atoms


def test_rotated_shuffled_frame_round_trips(tmp_path):
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(7)
    config = Configuration(ref, rng.normal(0, 0.05, (40, 3)), [0.01, -0.004, 0, 0.003, 0, 0.002])
    forces = rng.normal(size=(40, 3))
    stress = np.array([1.0, 2.0, 3.0, 0.4, 0.5, 0.6]) * 1e-3
    rot = Rotation.random(random_state=11).as_matrix()
    path = tmp_path / "frames.extxyz"
    write(path, _frame(config, forces, stress, rot, rng.permutation(40)), format="extxyz")

    (record,) = read_records(path, reference=ref)
    assert np.allclose(record.config.displacements, config.displacements, atol=1e-7)
    assert np.allclose(record.config.strain, config.strain, atol=1e-9)
    assert np.allclose(record.result["forces"], forces, atol=1e-7)
    assert np.allclose(record.result["stress"], stress, atol=1e-12)
    assert record.result["energy"] == pytest.approx(-123.4)


def test_frame_of_another_composition_is_refused(tmp_path):
    ref = Perovskite().supercell(2)
    atoms = Perovskite(("Cs", "Pb", "I")).supercell(2).to_structure().to_ase_atoms()
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0)
    atoms.info["calculator"] = "sevennet"
    path = tmp_path / "wrong.extxyz"
    write(path, atoms, format="extxyz")
    with pytest.raises(ImportFormatError, match="frame 1"):
        read_records(path, reference=ref)
