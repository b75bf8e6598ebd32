"""``pes basis``: inspect the CCD descriptors (cluster orbits, irreps, invariant basis functions)."""

from __future__ import annotations

import json

from ._tables import print_table

#: "pair" and descriptors.clusters.NAMED_CLUSTERS, spelled out so that building the parser imports no numpy
CLUSTER_CHOICES = ("pair", "triplet", "octahedron", "tetrahedron", "stack")
METRIC_CHOICES = ("lin", "quad", "log", "inv")


def _common(p, with_reference: bool = True) -> None:
    p.add_argument("--max-order", type=int, default=2, metavar="N", help="highest polynomial degree (default: 2)")
    p.add_argument("--metric", default="lin", choices=METRIC_CHOICES, help="pair deformation metric (default: lin)")
    p.add_argument("--truncated", action="store_true", help="keep only the leading 3n-6 CCDs of each cluster")
    p.add_argument(
        "--species",
        nargs=3,
        default=["Cs", "Pb", "Br"],
        metavar=("A", "B", "X"),
        help="species of the ABX3 reference (default: Cs Pb Br)",
    )
    p.add_argument(
        "--lattice-parameter",
        type=float,
        default=5.87,
        metavar="ANGSTROM",
        help="cubic lattice parameter (default: 5.87)",
    )
    if with_reference:
        p.add_argument("--supercell", type=int, default=2, metavar="N", help="N x N x N supercell (default: 2)")
    p.add_argument("--json", action="store_true", help="print as JSON")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "basis",
        help="cluster orbits, CCD irreps and invariant basis functions",
        description="Inspect the collective cluster deformation descriptors: cluster orbits of the reference "
        "supercell, the irreducible representations of their CCDs and the number of invariant polynomials.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    show = verbs.add_parser(
        "show",
        help="the cluster orbits of a cluster set and their basis functions",
        description="List the cluster orbits of a cluster set in the reference supercell: species, size, cluster "
        "point group, CCD irreps and number of invariant basis functions per degree; then the site orbits.",
    )
    show.add_argument(
        "--clusters",
        default="7p+t+o",
        help="cluster set: 4p+o, 5p+o, 8p+o, 4p+t+o, 7p+t+o or a '+'-joined list such as "
        "'3p+tet' or 'p1+p6+o' (default: 7p+t+o)",
    )
    show.add_argument("--output", "-o", metavar="FILE", help="also write the featurizer recipe (JSON) to FILE")
    _common(show)
    show.set_defaults(func=_show)

    count = verbs.add_parser(
        "count",
        help="irreps of one cluster's CCDs and its number of invariants per degree",
        description="Decompose the CCDs of one cluster into irreducible representations of its point group and "
        "count the linearly independent invariant polynomials of each degree up to --max-order.",
    )
    count.add_argument("--cluster", required=True, choices=CLUSTER_CHOICES, help="which cluster")
    count.add_argument(
        "--pair",
        type=int,
        default=1,
        metavar="K",
        help="with --cluster pair: the K-th pair orbit by distance (default: 1, nearest B-X)",
    )
    _common(count, with_reference=False)
    count.set_defaults(func=_count)

    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])


def _perovskite(args):
    from ..descriptors import DescriptorError
    from ..structure import Perovskite, ReferenceStructureError

    try:
        return Perovskite(tuple(args.species), args.lattice_parameter)
    except ReferenceStructureError as exc:
        raise DescriptorError(str(exc)) from exc


def _check_order(args):
    from ..descriptors import DescriptorError

    if args.max_order < 1 or args.max_order > 6:
        raise DescriptorError(f"--max-order must be between 1 and 6; got {args.max_order}")


def _show(args) -> int:
    from ..descriptors import DescriptorError, Featurizer

    _check_order(args)
    if args.supercell < 1:
        raise DescriptorError(f"--supercell must be a positive integer; got {args.supercell}")
    ref = _perovskite(args).supercell(args.supercell)
    f = Featurizer(ref, args.clusters, max_order=args.max_order, metric=args.metric, truncated=args.truncated)
    rows = f.describe()
    sites = [
        {"name": n, "n_sites": ns, "n_features": nf, "cluster_orbits": orbs}
        for n, ns, nf, orbs in zip(f.site_orbit_names, f.n_sites, f.n_site_features, f.site_feature_orbits)
    ]
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(f.to_dict(), fh)
    if args.json:
        print(
            json.dumps(
                {
                    "clusters": args.clusters,
                    "supercell": ref.matrix.tolist(),
                    "max_order": args.max_order,
                    "metric": args.metric,
                    "truncated": args.truncated,
                    "orbits": rows,
                    "site_orbits": sites,
                    "n_cluster_features": int(sum(f.n_functions)),
                },
                indent=2,
            )
        )
        return 0
    print_table(
        f"Cluster orbits of {args.clusters} in the {ref.n_atoms}-atom supercell "
        f"(metric {args.metric}, order {args.max_order}{', truncated' if args.truncated else ''})",
        ["orbit", "species", "d_max (A)", "clusters", "group", "CCDs", "irreps", "functions", "per degree"],
        [
            [
                r["name"],
                r["species"],
                f"{r['max_distance']:.3f}",
                r["n_clusters"],
                r["point_group"],
                r["n_ccd"],
                r["irreps"],
                r["n_functions"],
                " ".join(f"{k}:{v}" for k, v in r["per_degree"].items()),
            ]
            for r in rows
        ],
    )
    print_table(
        "Site orbits (Eq. 15 features)",
        ["site orbit", "sites", "features", "from cluster orbits"],
        [[s["name"], s["n_sites"], s["n_features"], ", ".join(s["cluster_orbits"])] for s in sites],
    )
    if args.output:
        print(f"recipe written to {args.output}")
    return 0


def _count(args) -> int:
    from ..descriptors import ClusterBasis, DescriptorError, parse_clusters

    _check_order(args)
    pv = _perovskite(args)
    if args.cluster == "pair":
        if args.pair < 1:
            raise DescriptorError(f"--pair must be a positive integer; got {args.pair}")
        name = f"p{args.pair}"
    else:
        name = args.cluster
    (proto,) = parse_clusters([name], pv)
    basis = ClusterBasis.build(proto, pv, args.metric, args.max_order, args.truncated)
    counts = basis.invariants.counts_per_degree()
    per_degree = {str(d): counts.get(d, 0) for d in range(1, args.max_order + 1)}
    result = {
        "cluster": proto.name,
        "species": "-".join(proto.species(pv)),
        "n_sites": proto.n_sites,
        "n_pairs": len(proto.pairs),
        "point_group": basis.group_name,
        "group_order": basis.symmetry.order,
        "metric": args.metric,
        "truncated": args.truncated,
        "n_ccd": basis.n_ccd,
        "irreps": basis.irrep_summary(),
        "subspaces": [
            {
                "irrep": s["irrep"],
                "dim": s["dim"],
                "ccd": list(range(s["start"] + 1, s["start"] + s["dim"] + 1)),
                "eigenvalue": s["eigenvalue"],
            }
            for s in basis.subspaces
        ],
        "max_order": args.max_order,
        "invariants_per_degree": per_degree,
        "n_invariants": int(sum(per_degree.values())),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['cluster']} ({result['species']}): {result['n_sites']} sites, {result['n_pairs']} pairs, "
        f"point group {result['point_group']} (order {result['group_order']})"
    )
    print(
        f"{result['n_ccd']} CCDs = {result['irreps']}  (metric {args.metric}"
        f"{', truncated to 3n-6' if args.truncated else ''})"
    )
    print_table(
        "CCD subspaces (largest G^(F) eigenvalue first)",
        ["CCDs", "irrep", "dim", "eigenvalue"],
        [
            [
                ",".join(f"q{i}" for i in s["ccd"]),
                s["irrep"],
                s["dim"],
                "-" if s["eigenvalue"] is None else f"{s['eigenvalue']:.4g}",
            ]
            for s in result["subspaces"]
        ],
    )
    print_table(
        f"Invariant polynomials up to degree {args.max_order}",
        ["degree", "functions"],
        [[d, n] for d, n in per_degree.items()] + [["total", result["n_invariants"]]],
    )
    return 0
