"""One math-library thread per converter process: the converter's parallelism is --workers.

With OpenBLAS's default (a thread per core) in every worker, the threads only compete for
the same cores: on 2 cores a 2-worker conversion of 40 Kaggle patients took 28.2 s against
21.3 s with one thread each, and one worker 40.4 s against 36.4 s (docs/benchmarks.md).
These variables are read when numpy loads, so they are set before that: by
`convert_main` for its own process, and by `convert` for the worker processes it starts.
No numpy import here, so that this module can come first.
"""

VARIABLES = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
