"""perovskite-pes: machine-learned DFT potential energy surfaces of halide perovskites.

Layers (dependencies point one way):
    structure <- descriptors <- models ; calculators, db -> structure ; workflows and cli on top.
"""

__version__ = "0.1.0"
