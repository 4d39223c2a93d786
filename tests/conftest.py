import os

# Tests run on the CPU with a deterministic, small thread pool; nothing here needs an accelerator.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
