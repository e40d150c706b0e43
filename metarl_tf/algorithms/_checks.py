"""Kept for imports written before the checks moved to ``metarl_tf._checks``."""
from metarl_tf._checks import check_bool, check_float, check_int, check_range  # noqa: F401
