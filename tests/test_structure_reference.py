"""Reference perovskite, supercells and their input errors."""

import numpy as np
import pytest

from perovskite_pes.errors import PesError
from perovskite_pes.structure import Configuration, ConfigurationError, Perovskite, ReferenceStructureError, space_group


def test_reference_supercell_counts_and_order():
    ref = Perovskite().supercell(2)
    assert (ref.n_cells, ref.n_atoms) == (8, 40)
    assert list(ref.sublattice[:8]) == ["A"] * 8 and list(ref.sublattice[8:16]) == ["B"] * 8
    assert ref.species.count("Br") == 24
    assert space_group(ref.to_structure(), symprec=1e-5) == ("Pm-3m", 221)
    # a non-diagonal supercell (sqrt2 x sqrt2 x 2, 20 atoms) of the same crystal
    root2 = Perovskite().supercell([[1, 1, 0], [-1, 1, 0], [0, 0, 2]])
    assert root2.n_atoms == 20 and space_group(root2.to_structure())[1] == 221


@pytest.mark.parametrize(
    "species, matrix, message",
    [
        (("Cs", "Pb"), 2, "exactly 3 species"),
        (("Cs", "Pb", "Br", "I"), 2, "exactly 3 species"),
        (("Cs", "Pb", "Qq"), 2, "unknown chemical element"),
        (("Cs", "Pb", "Br"), [[1, 0, 0], [0, 1, 0], [1, 0, 0]], "singular"),
        (("Cs", "Pb", "Br"), [2, 2, 1.5], "integers only"),
        (("Cs", "Pb", "Br"), [[0, 1, 0], [1, 0, 0], [0, 0, 1]], "left-handed"),
        (("Cs", "Pb", "Br"), [[1, 2], [3, 4]], "3x3"),
    ],
)
def test_bad_reference_input(species, matrix, message):
    with pytest.raises(ReferenceStructureError, match=message) as err:
        Perovskite(species).supercell(matrix)
    assert isinstance(err.value, PesError) and isinstance(err.value, ValueError)


def test_bad_configuration_input():
    ref = Perovskite().supercell(1)
    with pytest.raises(ConfigurationError, match="shape"):
        Configuration(ref, np.zeros((4, 3)))
    with pytest.raises(ConfigurationError, match="NaN"):
        Configuration(ref, np.full((5, 3), np.nan))
    with pytest.raises(PesError, match="symmetric"):
        Configuration(ref, None, np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError):
        Perovskite(lattice_parameter=-1.0)
