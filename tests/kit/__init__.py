"""The tests' one kit: what more than one test file needs, in one place.

Test files import from here, never from one another.
"""
