"""Errors of the descriptors layer."""

from ..errors import PesError


class DescriptorError(PesError, ValueError):
    """Bad cluster, basis or featurizer input: the message names what is wrong and what is expected."""
