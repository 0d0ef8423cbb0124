"""Reusable widgets of the workbench: plots, the layer table, the progress header and more.

Each widget carries its own ``DEFAULT_CSS`` (theme variables only) and redraws from the
:class:`~duogpt_tui.eventlog.EventLog` or from data handed to it; none of them runs solver code.
"""
