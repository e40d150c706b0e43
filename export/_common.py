"""What every adaptable export shares: its own copy of the inner rule, and how it is written.

The helpers live in ``metarl_tf.adaptable`` (the supervised exporter, which ``MetaModel.export`` uses
without importing this package); they are re-exported here for the policy exports.
"""
from __future__ import annotations

from metarl_tf.adaptable import own_rule, rule_metadata, save_with_metadata

__all__ = ["own_rule", "rule_metadata", "save_with_metadata"]
