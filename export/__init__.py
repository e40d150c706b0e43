"""Export: adaptable SavedModels in TF Serving's ``<base>/<name>/<version>/`` layout."""
from export.layout import next_version, write_versioned
from export.saved_model import AdaptableRegressor, export_learner

__all__ = ["AdaptableRegressor", "export_learner", "next_version", "write_versioned"]
