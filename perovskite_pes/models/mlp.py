"""The per-orbit MLPs of the cluster and site nets, as one torch module.

Imported by :mod:`perovskite_pes.models.nets` when a net is trained or loaded, so that importing
the models package does not import torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class OrbitMLPs(nn.Module):
    """G independent MLPs (one per orbit), stored as stacked weights ``[G, n_in, n_out]``.

    All units (clusters or sites) of all orbits go through one batched matrix product per
    layer: inputs are packed to ``[B, U, F_max]`` (zero-padded features; padded input rows of
    the first weight matrix are zero and never matter) with ``group[u]`` the orbit of unit u.
    Mathematically the same as a separate ``nn.Sequential`` per orbit, with far fewer ops.
    """

    def __init__(self, n_inputs, hidden, linear: bool = False, mask=None):
        super().__init__()
        self.n_inputs = [int(n) for n in n_inputs]
        g = len(self.n_inputs)
        f = max([1] + self.n_inputs)
        dims = [f] + [int(h) for h in hidden]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k in range(len(dims) - 1):
            fan = torch.tensor([max(n, 1) for n in self.n_inputs] if k == 0 else [dims[k]] * g, dtype=torch.float64)
            bound = 1.0 / torch.sqrt(fan)
            w = (torch.rand(g, dims[k], dims[k + 1], dtype=torch.float64) * 2 - 1) * bound[:, None, None]
            if k == 0:
                for j, n in enumerate(self.n_inputs):
                    w[j, n:, :] = 0.0
            b = (torch.rand(g, dims[k + 1], dtype=torch.float64) * 2 - 1) * bound[:, None]
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        h = dims[-1]
        self.w_out = nn.Parameter((torch.rand(g, h, dtype=torch.float64) * 2 - 1) / h**0.5)
        self.b_out = nn.Parameter((torch.rand(g, dtype=torch.float64) * 2 - 1) / h**0.5)
        self.n_features = f
        # optional linear term per orbit (a linear cluster expansion the MLPs correct)
        self.linear = nn.Parameter(torch.zeros(g, f, dtype=torch.float64)) if linear else None
        # optional input mask of the MLPs (derived from the featurizer, so not saved)
        if mask is not None:
            m = torch.zeros(g, f, dtype=torch.float64)
            for j, row in enumerate(mask):
                m[j, : len(row)] = torch.as_tensor(np.asarray(row, dtype=float))
            self.register_buffer("mask", m, persistent=False)
            # the columns each MLP sees, in order (the models evaluate on the CPU)
            self.keep = [torch.nonzero(m[j]).flatten() for j in range(g)]
        else:
            self.mask = None
            self.keep = None

    def units(self, x, group):
        """Per-unit outputs ``[B, U]`` of packed inputs ``x`` ``[B, U, F]``; ``group`` ``[U]`` (sorted)."""
        h = x if self.mask is None else x * self.mask[group]
        for w, b in zip(self.weights, self.biases):
            h = torch.tanh(torch.einsum("buf,ufh->buh", h, w[group]) + b[group])
        out = (h * self.w_out[group]).sum(-1) + self.b_out[group]
        if self.linear is not None:
            out = out + (x * self.linear[group]).sum(-1)
        return out

    def _mlp_group(self, g, x):
        """Orbit g's MLP on its own features ``x`` ``[B, U_g, F_g]`` (no padding): ``[B, U_g]``."""
        return self.mlp_inputs(g, x if self.keep is None else x[..., self.keep[g]])

    def mlp_inputs(self, g, x):
        """Orbit g's MLP on the inputs it sees (all features, or the unmasked ones in order)."""
        w0 = self.weights[0][g, : x.shape[-1]] if self.keep is None else self.weights[0][g, self.keep[g]]
        h = torch.tanh(x @ w0 + self.biases[0][g])
        for w, b in zip(list(self.weights)[1:], list(self.biases)[1:]):
            h = torch.tanh(h @ w[g] + b[g])
        return h @ self.w_out[g] + self.b_out[g]

    def grouped(self, feats, counts, anchors):
        """:meth:`forward` on unpacked per-orbit features (large batches: no padded copy)."""
        total = 0.0
        for g, x in enumerate(feats):
            if x.shape[1] == 0:
                continue
            total = total + self._mlp_group(g, x).sum(1)
            if self.linear is not None:
                total = total + x.sum(1) @ self.linear[g, : x.shape[-1]]
        return total - (counts * self.anchor(anchors)).sum()

    def anchor(self, a):
        """Each orbit's MLP at its own input ``a[g]`` (``[G, F]``): ``[G]``."""
        h = a if self.mask is None else a * self.mask
        for w, b in zip(self.weights, self.biases):
            h = torch.tanh(torch.einsum("gf,gfh->gh", h, w) + b)
        out = (h * self.w_out).sum(-1) + self.b_out
        if self.linear is not None:
            out = out + (a * self.linear).sum(-1)
        return out

    def forward(self, x, group, counts, anchors):
        """``sum_u N_{g(u)}(x_u) - sum_g counts_g N_g(anchor_g)``: ``[B]``."""
        return self.units(x, group).sum(-1) - (counts * self.anchor(anchors)).sum()
