import os

# Tests run on the CPU; nothing here needs an accelerator. (`import jmeta` sizes XLA:CPU's thread
# pool, jmeta/_host_threads.py.)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# XLA compilation, not running, is most of this suite's time on 2 cores. LLVM's optimisation
# level 0 compiles about 30 % faster (test_rl2 88 -> 64 s, test_maml_rl + test_supervised
# 299 -> 208 s, 2026-12-05) and the compiled programs compute the same functions, only slower;
# speed is measured by benchmarks/, never by these tests. Benchmark and notebook subprocesses
# started by the tests inherit it. Set XLA_FLAGS with your own --xla_backend_optimization_level
# to test at another level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
