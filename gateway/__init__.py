"""hpf-gateway: the payment instruction relay between HPF centres, banks and supervision."""

__version__ = "0.1.0"
