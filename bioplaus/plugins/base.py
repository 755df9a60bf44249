"""Plugins: callbacks on a rule's life cycle (Avalanche-style), all no-ops by default.

The hooks are defined in `bioplaus.training.hooks`; this is where plugins import them from.
"""

from bioplaus.training.hooks import NoOptions, Plugin, PluginList, Rule
from bioplaus.training.task import RuleContext, TaskInfo

__all__ = ["NoOptions", "Plugin", "PluginList", "Rule", "RuleContext", "TaskInfo"]
