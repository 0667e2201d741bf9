"""Run the whole test suite: `python test_activation_capture.py` (same as `pytest tests`).

Extra arguments go to pytest, e.g. `python test_activation_capture.py -k capture -x`.
The tests live in tests/: tiny random-weight models built from configs (no downloads),
compared against transformers' own output_hidden_states, plus end-to-end runs on the default model.
"""
import os
import sys

import pytest

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(pytest.main([os.path.join(here, "tests"), "-q", *sys.argv[1:]]))
