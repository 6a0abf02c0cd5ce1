"""The inference workers: the processes that parse, decode, preprocess and run the models (pool.py says why)."""
