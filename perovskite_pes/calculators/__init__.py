"""How an energy is obtained: one interface over VASP, CP2K and pretrained ML potentials.

>>> calc = get_calculator("sevennet")                # the default: SevenNet 7net-mf-0, modal R2SCAN
>>> result = calc.calculate(structure)  # doctest: +SKIP
>>> relaxed = calc.calculate(structure, relax="cell").final_structure  # doctest: +SKIP

``result`` is a CalcResult: energy, forces, stress, status and the calculator's provenance.

Units: eV, eV/A, stress eV/A^3 as a Voigt 6-vector with ASE's sign (positive = tensile).
This package depends on ``perovskite_pes.structure`` only (and never on FireWorks or MongoDB).
"""

from __future__ import annotations

from .base import (
    RELAX_MODES,
    CalcResult,
    Calculator,
    CalculatorError,
    CalculatorInputError,
    check_structure,
    settings_hash,
)

#: default calculator of the project (see docs/calculators.md for the reasons)
DEFAULT_CALCULATOR = "sevennet"


#: name -> (module, class); modules are imported only when their calculator is asked for
_REGISTRY = {
    "sevennet": ("surrogates", "SevenNetCalculator"),
    "chgnet": ("surrogates", "CHGNetCalculator"),
    "cp2k": ("cp2k", "Cp2kCalculator"),
    "vasp": ("vasp", "VaspCalculator"),
}


def calculator_class(name: str) -> type:
    """The Calculator subclass registered under ``name``."""
    import importlib

    key = str(name).lower()
    if key not in _REGISTRY:
        raise CalculatorInputError(f"unknown calculator {name!r}; choose one of {', '.join(CALCULATOR_NAMES)}")
    module, cls = _REGISTRY[key]
    return getattr(importlib.import_module(f".{module}", __name__), cls)


CALCULATOR_NAMES = ("sevennet", "chgnet", "cp2k", "vasp")


def get_calculator(name: str = DEFAULT_CALCULATOR, **settings) -> Calculator:
    """A calculator by name ("sevennet", "chgnet", "cp2k" or "vasp").

    Keyword arguments are the calculator's physics settings (which enter ``settings_hash``) or
    its run options (command line, threads, polling interval ...; they do not). Unknown keys
    raise :class:`CalculatorInputError` listing the valid ones.
    """
    return calculator_class(name)(**settings)


def check_submit(name: str, settings: dict | None = None) -> None:
    """Raise :class:`CalculatorError` if a campaign with this calculator cannot run on its workers
    (e.g. VASP without a vasp_cmd or POTCARs); called on the machine that submits the campaign."""
    get_calculator(name, **(settings or {})).check_submit()


def calculate_many(
    structures,
    calculator: Calculator | str = DEFAULT_CALCULATOR,
    relax=None,
    workdir=None,
    progress: bool = True,
    **settings,
) -> list[CalcResult]:
    """Calculate a batch of structures with one calculator (progress bar with tqdm).

    ``workdir``: a folder; calculation i runs in ``workdir/00000i`` (needed to keep DFT outputs
    apart). Bad input raises before anything runs; failed calculations come back as failed results.
    """
    from pathlib import Path

    from tqdm.auto import tqdm

    calc = get_calculator(calculator, **settings) if isinstance(calculator, str) else calculator
    if settings and not isinstance(calculator, str):
        raise CalculatorInputError(
            "give settings either to get_calculator or to calculate_many, not with a calculator object"
        )
    structures = list(structures)
    from .base import DEFAULT_MIN_DISTANCE, check_relax

    check_relax(relax)
    for i, s in enumerate(structures):
        try:
            check_structure(s, calc.run_options.get("min_distance", DEFAULT_MIN_DISTANCE), calc.supported_elements)
        except CalculatorInputError as exc:
            raise CalculatorInputError(f"structure {i}: {exc}") from exc
    calc.check_available()
    results = []
    bar = tqdm(structures, desc=f"{calc.name} calculations", unit="calc", disable=not progress)
    for i, s in enumerate(bar):
        sub = None if workdir is None else Path(workdir) / f"{i:06d}"
        results.append(calc.calculate(s, relax=relax, workdir=sub))
    return results


def check_calculators(names=CALCULATOR_NAMES) -> list[dict]:
    """For each calculator: whether it is usable here, its version, and if not, what to do."""
    out = []
    for name in names:
        entry = {"name": name, "usable": False, "version": None, "detail": ""}
        try:
            calc = get_calculator(name)
            calc.check_available()
            entry["version"] = calc.version
            entry.update(calc.availability_details() if hasattr(calc, "availability_details") else {})
            entry["usable"] = True
            entry["detail"] = entry.get("detail") or "ready"
        except (CalculatorError, CalculatorInputError) as exc:
            entry["detail"] = str(exc)
        out.append(entry)
    return out


__all__ = [
    "CALCULATOR_NAMES",
    "DEFAULT_CALCULATOR",
    "RELAX_MODES",
    "CalcResult",
    "Calculator",
    "CalculatorError",
    "CalculatorInputError",
    "calculate_many",
    "calculator_class",
    "check_calculators",
    "check_structure",
    "check_submit",
    "get_calculator",
    "settings_hash",
]
