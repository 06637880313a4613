"""The adapter conformance suite: one shared contract checked against every installed adapter.

``python -m pytest tests/adapters -q`` runs it for every adapter registered under the
``hpf_gateway.adapters`` entry-point group; ``-k NAME`` selects one.  adapters/README.md
describes the portable message set it generates and the profile hook in :mod:`.profiles`.
"""
