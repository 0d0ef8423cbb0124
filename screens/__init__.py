"""Textual screens of the workbench: setup, run, report, runs/compare, help and modal dialogs.

Each screen's stylesheet sits next to it (``<name>.tcss``) and uses theme variables only.
"""
