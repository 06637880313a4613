"""Bank protocol adapters: sans-I/O codecs behind one contract (:mod:`adapters.base`)."""
