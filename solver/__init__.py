"""The numerical core of the DuoGPT workbench: pure PyTorch + transformers.

Never imports textual, rich or typer (a test checks it). The entry point is
:func:`solver.run.pipeline.run`, a generator of :mod:`solver.events` that returns the run's
totals; the app's runner (``duogpt_tui.runner``) makes every terminal event.
"""
