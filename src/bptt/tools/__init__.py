"""Tools the command line runs beside the library, outside its core: ``bench`` times bptt
against PyTorch (``bptt bench``, ``scripts/write_performance.py``). Nothing in the engine,
the cells, the backend or the models imports them."""
