"""What the installed package declares: the test extra carries the interpreter's numpy limit."""
from importlib import metadata


def test_test_extra_pins_numpy_below_2_4_for_the_triton_36_interpreter():
    requires = metadata.requires("manualnn") or []
    numpy = [r for r in requires if r.startswith("numpy") and 'extra == "test"' in r]
    assert numpy, requires
    assert "<2.4" in numpy[0], numpy[0]
