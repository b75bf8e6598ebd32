"""Polynomials of the CCDs invariant under a cluster point group (paper section II.A.5).

For each degree d the Reynolds operator R(p)(q) = 1/|G| sum_g p(M_g q) is built as a sparse
matrix on the monomials of degree d (row: input monomial, columns: coefficients of its
group average), exactly, by expanding products of the rows of the block-diagonal matrices
M^(Q)(g). R is a projector, so trace(R) is the dimension of the degree-d invariants; a
linearly independent set of group averages of monomials is picked greedily, sparsest first,
until that dimension is reached. Every invariant is stored as sparse monomial coefficients
(exponent vectors + coefficients), scaled so that its largest coefficient is +-1 and its first
coefficient (in monomial order) is positive.
"""

from __future__ import annotations

from itertools import combinations_with_replacement, product

import numpy as np

from .errors import DescriptorError

#: upper bound on the terms expanded for one degree's Reynolds matrix (time and memory guard)
MAX_REYNOLDS_TERMS = 3e8


def monomial_indices(n_vars: int, degree: int) -> np.ndarray:
    """Monomials of one degree as sorted variable-index tuples, in lexicographic order: (D, degree)."""
    return np.array(list(combinations_with_replacement(range(n_vars), degree)), dtype=np.int64).reshape(-1, degree)


def _codes(idx: np.ndarray, n_vars: int) -> np.ndarray:
    d = idx.shape[-1]
    powers = n_vars ** np.arange(d - 1, -1, -1, dtype=np.int64)
    return idx @ powers


def reynolds_matrix(mats, degree: int, tol: float = 1e-12):
    """Monomials (D, degree) and the sparse Reynolds matrix (D x D, scipy CSR) for one degree."""
    from scipy.sparse import coo_matrix

    mats = np.asarray(mats, dtype=float)
    n_ops, n, _ = mats.shape
    monos = monomial_indices(n, degree)
    dcount = len(monos)
    codes = _codes(monos, n)
    m = np.where(np.abs(mats) > 1e-10, mats, 0.0)
    b = max(1, int((m != 0).sum(axis=2).max()))
    if b**degree * dcount * n_ops > MAX_REYNOLDS_TERMS:
        raise DescriptorError(
            f"invariants of degree {degree} in {n} CCDs ({n_ops} symmetry operations, blocks up to {b}) are too "
            f"expensive to build (> {MAX_REYNOLDS_TERMS:.0e} terms); lower max_order or use the truncated CCDs"
        )
    combos = np.array(list(product(range(b), repeat=degree)), dtype=np.int64)  # (b^d, d)
    pos = np.arange(degree)[None, :]
    chunk = max(1, 2_000_000 // len(combos))
    rows_all, cols_all, vals_all = [], [], []
    for g in range(n_ops):
        cols = np.zeros((n, b), dtype=np.int64)
        vals = np.zeros((n, b))
        for i in range(n):
            nz = np.nonzero(m[g, i])[0]
            cols[i, : len(nz)] = nz
            vals[i, : len(nz)] = m[g, i, nz]
        for start in range(0, dcount, chunk):
            part = monos[start : start + chunk]
            c = cols[part]  # (D, d, b)
            v = vals[part]
            j = c[:, pos, combos]  # (D, b^d, d)
            w = np.prod(v[:, pos, combos], axis=2)  # (D, b^d)
            keep = w != 0
            j = np.sort(j[keep], axis=1)
            rows_all.append(start + np.nonzero(keep)[0])
            cols_all.append(np.searchsorted(codes, _codes(j, n)))
            vals_all.append(w[keep])
    r = coo_matrix(
        (np.concatenate(vals_all) / n_ops, (np.concatenate(rows_all), np.concatenate(cols_all))),
        shape=(dcount, dcount),
    ).tocsr()
    r.sum_duplicates()
    r.data[np.abs(r.data) < tol] = 0.0
    r.eliminate_zeros()
    return monos, r


def count_invariants(mats, degree: int) -> int:
    """Dimension of the degree-d invariants: the trace of the Reynolds projector."""
    _, r = reynolds_matrix(mats, degree)
    return int(round(r.diagonal().sum()))


def _exponents(idx_rows: np.ndarray, n_vars: int) -> np.ndarray:
    out = np.zeros((len(idx_rows), n_vars), dtype=np.int64)
    for k in range(idx_rows.shape[1]):
        np.add.at(out, (np.arange(len(idx_rows)), idx_rows[:, k]), 1)
    return out


class InvariantPolynomials:
    """A list of invariant polynomials in ``n_vars`` variables, stored as sparse monomials.

    ``functions[m] = (degree, exponents (k, n_vars) int, coefficients (k,))``.
    """

    def __init__(self, n_vars: int, functions):
        self.n_vars = int(n_vars)
        self.functions = [
            (int(d), np.asarray(e, dtype=np.int64).reshape(-1, self.n_vars), np.asarray(c, dtype=float))
            for d, e, c in functions
        ]

    @classmethod
    def build(cls, mats, max_order: int) -> InvariantPolynomials:
        """Linearly independent invariants of degrees 1..max_order for the matrices M^(Q)(g)."""
        if int(max_order) != max_order or max_order < 1:
            raise DescriptorError(f"max_order must be a positive integer; got {max_order!r}")
        mats = np.asarray(mats, dtype=float)
        n = mats.shape[1]
        b = max(1, int((np.abs(mats) > 1e-10).sum(axis=2).max()))
        for d in range(1, int(max_order) + 1):  # refuse before doing any work
            terms = b**d * len(monomial_indices(n, d)) * len(mats)
            if terms > MAX_REYNOLDS_TERMS:
                raise DescriptorError(
                    f"invariants of degree {d} in {n} CCDs ({len(mats)} symmetry operations, blocks up to {b}) are "
                    f"too expensive to build (> {MAX_REYNOLDS_TERMS:.0e} terms); lower max_order or use the "
                    "truncated CCDs"
                )
        funcs = []
        for d in range(1, int(max_order) + 1):
            monos, r = reynolds_matrix(mats, d)
            rank = int(round(r.diagonal().sum()))
            if rank == 0:
                continue
            nnz = np.diff(r.indptr)
            order = np.lexsort((np.arange(len(nnz)), nnz))
            order = order[nnz[order] > 0]
            basis = np.zeros((0, r.shape[1]))
            chosen = []
            for i in order:
                v = r.getrow(i).toarray().ravel()
                nv = np.linalg.norm(v)
                res = v - basis.T @ (basis @ v) if len(basis) else v
                nr = np.linalg.norm(res)
                if nr > 1e-8 * nv:
                    basis = np.vstack([basis, res / nr])
                    chosen.append(v)
                    if len(chosen) == rank:
                        break
            if len(chosen) != rank:  # pragma: no cover - the projector guarantees the rank
                raise DescriptorError(f"found {len(chosen)} invariants of degree {d}, expected {rank}")
            for v in chosen:
                big = np.abs(v).max()
                v = np.where(np.abs(v) > 1e-10 * big, v, 0.0)
                nz = np.nonzero(v)[0]
                coef = v[nz] / big
                if coef[0] < 0:
                    coef = -coef
                funcs.append((d, _exponents(monos[nz], n), coef))
        return cls(n, funcs)

    # ------------------------------------------------------------------ properties
    @property
    def n_functions(self) -> int:
        return len(self.functions)

    @property
    def degrees(self) -> list[int]:
        return [d for d, _, _ in self.functions]

    def counts_per_degree(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for d in self.degrees:
            out[d] = out.get(d, 0) + 1
        return out

    def evaluate(self, q) -> np.ndarray:
        """Values of every function at points q (..., n_vars), numpy float64: (..., n_functions)."""
        q = np.asarray(q, dtype=float)
        out = np.zeros(q.shape[:-1] + (self.n_functions,))
        for m, (_, e, c) in enumerate(self.functions):
            vals = np.prod(q[..., None, :] ** e, axis=-1)  # (..., k)
            out[..., m] = vals @ c
        return out

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """All distinct monomials (exponents, (n_mono, n_vars)) and the coefficient matrix (n_mono, n_functions)."""
        keys: dict[tuple, int] = {}
        rows = []
        for _, e, _ in self.functions:
            for row in e:
                k = tuple(int(x) for x in row)
                if k not in keys:
                    keys[k] = len(rows)
                    rows.append(row)
        exps = np.array(rows, dtype=np.int64).reshape(-1, self.n_vars)
        coef = np.zeros((len(exps), self.n_functions))
        for m, (_, e, c) in enumerate(self.functions):
            for row, v in zip(e, c):
                coef[keys[tuple(int(x) for x in row)], m] += v
        return exps, coef

    def to_dict(self) -> dict:
        return {
            "n_vars": self.n_vars,
            "functions": [
                {"degree": d, "exponents": e.tolist(), "coefficients": c.tolist()} for d, e, c in self.functions
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> InvariantPolynomials:
        try:
            return cls(
                d["n_vars"],
                [(f["degree"], f["exponents"], f["coefficients"]) for f in d["functions"]],
            )
        except (KeyError, TypeError) as exc:
            raise DescriptorError(f"invalid invariant polynomial recipe: missing {exc}") from exc
