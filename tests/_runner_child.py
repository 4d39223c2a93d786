"""A Runner in a child process, for tests/test_training_runner.py's SIGKILL test.

    python tests/_runner_child.py RUN_DIR SPEC_JSON NUM_ITERATIONS CHUNK_SIZE MARKER HANG_AT

Runs ``Runner(RunSpec.from_json(SPEC_JSON), RUN_DIR, chunk_size=CHUNK_SIZE)`` for NUM_ITERATIONS.
When it writes the checkpoint of iteration HANG_AT, orbax has written every item into its
temporary directory; before the checkpoint is finalised (renamed into place) the process creates
MARKER and sleeps, so the parent can SIGKILL it in the middle of the write.
"""

import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import orbax.checkpoint as ocp  # noqa: E402

from jmeta.training import Runner, RunSpec  # noqa: E402


def main(run_dir, spec_json, num_iterations, chunk_size, marker, hang_at):
    hang_at = int(hang_at)
    finalize = ocp.CompositeCheckpointHandler.finalize

    def slow_finalize(self, directory):
        if os.path.basename(str(directory)).split(".")[0] == str(hang_at):
            open(marker, "w").write(str(directory))
            time.sleep(600)
        return finalize(self, directory)

    ocp.CompositeCheckpointHandler.finalize = slow_finalize
    runner = Runner(RunSpec.from_json(spec_json), run_dir, chunk_size=int(chunk_size), keep=3,
                    progress=False, tensorboard=False)
    runner.run(int(num_iterations))


if __name__ == "__main__":
    main(*sys.argv[1:])
