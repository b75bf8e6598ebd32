"""Reading and writing configurations (extended XYZ, CIF, POSCAR)."""

import numpy as np
import pytest
from pymatgen.core import Structure

from perovskite_pes.structure import (
    Configuration,
    ConfigurationIOError,
    Perovskite,
    read_configurations,
    tilt_configuration,
    write_configurations,
)


@pytest.fixture(scope="module")
def configs():
    ref = Perovskite().supercell(2)
    rng = np.random.default_rng(0)
    out = [tilt_configuration(ref, "a+b-b-"), tilt_configuration(ref, "a0a0c+", 5)]
    out.append(
        Configuration(
            ref,
            rng.normal(0, 0.1, (40, 3)),
            [0.01, -0.01, 0.02, 0.001, 0.0, 0.003],
            {"method": "random", "seed": 3, "amplitudes": [0.1, 0.2]},
        )
    )
    return out


@pytest.mark.parametrize("name, atol", [("out.extxyz", 1e-7), ("out.cif", 1e-6), ("poscars", 1e-9)])
def test_round_trip(tmp_path, configs, name, atol):
    written = write_configurations(tmp_path / name, configs)
    assert all(tmp_path.joinpath(w).exists() for w in written)
    back = read_configurations(tmp_path / name)
    assert len(back) == len(configs)
    for b, c in zip(back, configs):
        assert b.reference == c.reference
        assert np.allclose(b.displacements, c.displacements, atol=atol)
        assert np.allclose(b.strain, c.strain, atol=1e-8)
        assert b.tags == c.tags


def test_extxyz_is_plain_ase(tmp_path, configs):
    from ase.io import read

    write_configurations(tmp_path / "a.xyz", configs)
    frames = read(tmp_path / "a.xyz", index=":")
    assert len(frames) == 3 and frames[0].info["tilt_system"] == "a+b-b-"
    assert frames[0].info["pes_species"] == "Cs Pb Br"


def test_reads_foreign_files_with_a_given_reference(tmp_path, configs):
    """A shuffled structure without a header is matched onto the given reference."""
    s = configs[2].to_structure()
    order = np.random.default_rng(1).permutation(len(s))
    shuffled = Structure(s.lattice, [s.species[i] for i in order], s.frac_coords[order])
    shuffled.to(filename=str(tmp_path / "foreign.cif"))
    with pytest.raises(ConfigurationIOError, match="reference"):
        read_configurations(tmp_path / "foreign.cif")
    back = read_configurations(tmp_path / "foreign.cif", reference=configs[2].reference)
    assert np.allclose(back[0].displacements, configs[2].displacements, atol=1e-5)


def test_errors(tmp_path, configs):
    with pytest.raises(ConfigurationIOError, match="format"):
        write_configurations(tmp_path / "x.json", configs)
    with pytest.raises(ConfigurationIOError, match="no such file"):
        read_configurations(tmp_path / "missing.extxyz")
    bad = Configuration(configs[0].reference, tags={"obj": object()})
    with pytest.raises(ConfigurationIOError, match="JSON"):
        write_configurations(tmp_path / "b.extxyz", [bad])
    (tmp_path / "junk.xyz").write_text("not a file\n")
    with pytest.raises(ConfigurationIOError):
        read_configurations(tmp_path / "junk.xyz")
