"""What CPU a figure was measured on. The same work runs 2-3x slower without AVX-512
(docs/benchmarks.md), so every timing this project prints names the CPU beside it."""

import os
import platform


def cpu_model():
  """CPU name and its widest vector extension, e.g. "AMD EPYC, AVX2"."""
  name, flags = platform.processor() or "unknown CPU", ""
  if os.path.isfile("/proc/cpuinfo"):
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      lines = f.read().splitlines()
    name = next(
      (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), name
    )
    flags = next((line for line in lines if line.startswith("flags")), "")
  return f"{name}, {'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'}"
