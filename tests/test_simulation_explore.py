"""Active-learning selection: trust window, cap, uniqueness, descriptor spread; exploration keeps frames."""

from __future__ import annotations

import numpy as np
import pytest

from perovskite_pes.simulation import SimulationError
from perovskite_pes.simulation.explore import Candidate, distance_floors, explore, farthest_point_order, select
from perovskite_pes.structure import Configuration, Perovskite

REF = Perovskite().supercell(2)


class SpreadByAmplitude:
    """A stand-in committee whose spread is the largest displacement (A) of a configuration."""

    def predict_uncertainty(self, configs, forces=True):
        amp = np.array([np.abs(c.displacements).max() for c in configs])
        return {"max_force_deviation": amp, "energy_std": amp * 40}


def _candidates(amplitudes, seed=0, temperature=300.0):
    rng = np.random.default_rng(seed)
    out = []
    for k, a in enumerate(amplitudes):
        u = rng.normal(0, 1, (REF.n_atoms, 3))
        u *= a / np.abs(u).max()
        out.append(Candidate(Configuration(REF, u), temperature, "a0a0a0", 0.0, k))
    return out


def test_selection_respects_the_trust_window_and_the_cap():
    amps = np.linspace(0.01, 0.6, 40)
    cands = _candidates(amps)
    sel = select(SpreadByAmplitude(), cands, lower=0.1, upper=0.4, max_selected=100, uniqueness_tolerance=0.0)
    spreads = np.array(sel.spreads)
    assert len(spreads) == ((amps >= 0.1) & (amps < 0.4)).sum()
    assert spreads.min() >= 0.1 and spreads.max() < 0.4
    stats = sel.per_temperature["300"]
    assert stats["fraction_above_lower"] == pytest.approx((amps >= 0.1).mean())
    assert stats["fraction_above_upper"] == pytest.approx((amps >= 0.4).mean())
    capped = select(SpreadByAmplitude(), cands, lower=0.1, upper=0.4, max_selected=5, uniqueness_tolerance=0.0)
    assert len(capped.configurations) == 5
    assert capped.spreads[0] == pytest.approx(spreads.max())  # farthest-point order starts at the most uncertain


def test_blow_up_frames_pass_the_upper_bound_but_not_atoms_on_top_of_each_other():
    cands = _candidates([0.7, 0.8, 0.05])
    cands[0].blowup = True
    cands[1].blowup = True
    cands[1].config.displacements[1] = cands[1].config.displacements[0] + REF.positions[0] - REF.positions[1] + 0.3
    sel = select(SpreadByAmplitude(), cands, lower=0.1, upper=0.4, max_selected=10, uniqueness_tolerance=0.0)
    assert len(sel.configurations) == 1 and sel.configurations[0] is cands[0].config
    assert sel.n_too_close == 1


def _shortest_by_brute_force(configs) -> dict:
    """Per pair of species, the shortest minimum-image distance over ``configs`` (ASE, every pair of atoms)."""
    out: dict = {}
    for c in configs:
        atoms = c.to_ase()
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        sp = np.array(atoms.get_chemical_symbols())
        for a in set(sp):
            for b in set(sp):
                key = "-".join(sorted((a, b)))
                out[key] = min(out.get(key, np.inf), d[np.ix_(sp == a, sp == b)].min())
    return out


def test_distance_floors_keep_blow_up_frames_near_the_training_geometries():
    known = [c.config for c in _candidates([0.05, 0.1, 0.15], seed=5)]
    floors = distance_floors(known, 0.1)
    brute = _shortest_by_brute_force(known)
    assert set(floors) == {"Br-Br", "Br-Cs", "Br-Pb", "Cs-Cs", "Cs-Pb", "Pb-Pb"}
    assert floors == pytest.approx({k: 0.9 * v for k, v in brute.items()})
    # a blow-up frame with one Br pushed 0.45 A along its bond towards a Pb (2.49 A < 0.9 x 2.8 A) and a
    # thermal-size frame: the fixed 1.5 A floor keeps both, the floors per pair only the thermal one
    pb = REF.species.index("Pb")
    cfg = Configuration(REF)
    d = cfg.to_ase().get_distances(pb, range(REF.n_atoms), mic=True, vector=True)
    br = min((k for k in range(REF.n_atoms) if REF.species[k] == "Br"), key=lambda k: np.linalg.norm(d[k]))
    pushed = np.zeros((REF.n_atoms, 3))
    pushed[br] = -0.45 * d[br] / np.linalg.norm(d[br])
    cands = [Candidate(Configuration(REF, pushed), 600.0, "a0a0a0", 0.0, 0, blowup=True)] + _candidates([0.07], 9)
    bond = REF.perovskite.lattice_parameter / 2
    assert Configuration(REF, pushed).pair_min_distances()["Br-Pb"] == pytest.approx(bond - 0.45)
    plain = select(SpreadByAmplitude(), cands, lower=0.01, upper=0.4, max_selected=10, uniqueness_tolerance=0.0)
    assert len(plain.configurations) == 2 and plain.n_too_close == 0 and plain.to_dict()["distance_floors"] == {}
    near = select(SpreadByAmplitude(), cands, 0.01, 0.4, 10, 0.0, min_distance=floors)
    assert near.configurations == [cands[1].config] and near.n_too_close == 1
    assert near.to_dict()["distance_floors"] == pytest.approx(floors)
    swapped = {"-".join(reversed(k.split("-"))): v for k, v in floors.items()}  # "Pb-Br" is "Br-Pb"
    assert select(SpreadByAmplitude(), cands, 0.01, 0.4, 10, 0.0, min_distance=swapped).n_too_close == 1
    for bad in (-0.1, 1.0):
        with pytest.raises(SimulationError, match="distance margin must be a fraction in"):
            distance_floors(known, bad)


def test_duplicates_and_known_configurations_are_not_selected():
    base = _candidates([0.2], seed=3)[0]
    twin = Candidate(Configuration(REF, base.config.displacements + 0.001), 300.0, "a0a0a0", 0.0, 1)
    other = _candidates([0.25], seed=4)[0]
    sel = select(
        SpreadByAmplitude(), [base, twin, other], lower=0.1, upper=0.4, max_selected=10, uniqueness_tolerance=0.05
    )
    assert len(sel.configurations) == 2 and sel.n_duplicates == 1
    known = select(
        SpreadByAmplitude(),
        [base, twin, other],
        lower=0.1,
        upper=0.4,
        max_selected=10,
        uniqueness_tolerance=0.05,
        known=[other.config],
    )
    assert len(known.configurations) == 1 and known.configurations[0] is not other.config


def test_frames_of_another_supercell_are_never_duplicates_of_this_ones():
    from models_support import repeat_configuration

    big_ref = Perovskite().supercell(4)
    small = _candidates([0.2], seed=3)[0]
    big = Candidate(repeat_configuration(small.config, big_ref), 300.0, "a0a0a0", 0.0, 1)
    twin = Candidate(Configuration(big_ref, big.config.displacements + 0.001), 300.0, "a0a0a0", 0.0, 2)
    sel = select(SpreadByAmplitude(), [small, big, twin], lower=0.1, upper=0.4, max_selected=10)
    assert {c.reference.n_atoms for c in sel.configurations} == {40, 320} and sel.n_duplicates == 1
    assert sel.per_supercell["2x2x2"]["frames"] == 1 and sel.per_supercell["4x4x4"]["frames"] == 2
    known = select(SpreadByAmplitude(), [small, big], lower=0.1, upper=0.4, max_selected=10, known=[twin.config])
    assert [c.reference.n_atoms for c in known.configurations] == [40]


def test_a_trust_window_per_supercell_judges_each_cell_by_its_own_bounds():
    from models_support import repeat_configuration

    big_ref = Perovskite().supercell(4)
    amps = np.linspace(0.01, 0.6, 20)
    small = _candidates(amps, seed=1)
    big = [
        Candidate(repeat_configuration(c.config, big_ref), 300.0, "a0a0a0", 0.0, 100 + k)
        for k, c in enumerate(_candidates(amps, seed=2))
    ]
    window = dict(lower={2: 0.1, 4: 0.3}, upper={2: 0.4, 4: 0.55})
    sel = select(SpreadByAmplitude(), small + big, max_selected=100, uniqueness_tolerance=0.0, **window)
    for n, (lo, up) in {40: (0.1, 0.4), 320: (0.3, 0.55)}.items():
        got = np.array([s for s, c in zip(sel.spreads, sel.configurations) if c.reference.n_atoms == n])
        assert len(got) == ((amps >= lo) & (amps < up)).sum() and got.min() >= lo and got.max() < up
        cell = "2x2x2" if n == 40 else "4x4x4"
        assert sel.per_supercell[cell]["fraction_above_lower"] == pytest.approx((amps >= lo).mean())
    # the stop rule's fraction per temperature counts each frame against its own cell's lower bound
    expected = ((amps >= 0.1).sum() + (amps >= 0.3).sum()) / 40
    assert sel.per_temperature["300"]["fraction_above_lower"] == pytest.approx(expected)
    # one number for all is the same as the same number for every cell
    one = select(SpreadByAmplitude(), small + big, lower=0.1, upper=0.4, max_selected=100, uniqueness_tolerance=0.0)
    per = select(
        SpreadByAmplitude(),
        small + big,
        lower={2: 0.1, 4: 0.1},
        upper={2: 0.4, 4: 0.4},
        max_selected=100,
        uniqueness_tolerance=0.0,
    )
    assert one.spreads == per.spreads
    with pytest.raises(SimulationError, match=r"not for \['4x4x4'\]"):
        select(SpreadByAmplitude(), small + big, lower={2: 0.1}, upper={2: 0.4}, max_selected=10)


def test_bad_trust_windows_are_refused():
    with pytest.raises(SimulationError, match="lower < upper"):
        select(SpreadByAmplitude(), _candidates([0.1]), lower=0.5, upper=0.2, max_selected=3)
    with pytest.raises(SimulationError, match="lower < upper"):
        select(SpreadByAmplitude(), _candidates([0.1]), lower=-0.1, upper=0.2, max_selected=3)
    with pytest.raises(SimulationError, match="lower < upper for the 4x4x4 cell"):
        select(SpreadByAmplitude(), _candidates([0.1]), lower={2: 0.1, 4: 0.5}, upper={2: 0.4, 4: 0.5}, max_selected=3)
    with pytest.raises(SimulationError, match="both as numbers or both per supercell"):
        select(SpreadByAmplitude(), _candidates([0.1]), lower={2: 0.1}, upper=0.4, max_selected=3)


def test_farthest_point_order_spreads_points_out():
    x = np.array([[0.0], [0.1], [0.2], [5.0], [10.0]])
    assert farthest_point_order(x, 0)[:3] == [0, 4, 3]
    assert sorted(farthest_point_order(x, 2)) == [0, 1, 2, 3, 4]


def test_exploration_returns_labelled_frames_in_every_setting():
    from perovskite_pes.models import LinearCE

    from models_support import morse_energy, random_configs, small_reference

    configs = random_configs(small_reference(), 120, seed=3, amplitude=0.15, strain=0.01)
    model = LinearCE(clusters="4p", max_order=2, reference_energy_per_fu=-3.0).fit(configs, morse_energy(configs))
    cands, runs = explore(
        model,
        temperatures=[100.0],
        starts=["a0a0a0", "a0a0c+"],
        strains=[0.0, 0.01],
        steps=20,
        equilibration=0,
        sample_every=5,
    )
    assert len(runs) == 4 and all(r["blowup"] is None for r in runs)
    assert all(r["supercell"] == 2 for r in runs)
    assert len(cands) == 16 and all(c.config.reference == configs[0].reference for c in cands)
    strained = [c for c in cands if c.strain == 0.01]
    assert all(c.config.tags["method"] == "active" for c in cands)
    # NVT in the strained cell: the frames keep the applied hydrostatic strain
    assert np.allclose([c.config.strain[:3] for c in strained], 0.01, atol=1e-9)
