"""Experiments of the book's chapters, one module per chapter.

Each module holds pure functions ``run(config: dict) -> dict`` (tidy DataFrames, small JSON values,
tensors) that :class:`zaplib.store.Store` stores under ``results/<experiment>/<config-hash>/`` and
:func:`zaplib.store.sweep` can send to other processes or a Dask cluster. They live here, not in
the notebooks, because worker processes must be able to import them; the notebooks assemble
configs, read the store and draw figures from the store.
"""
