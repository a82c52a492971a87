"""Command line: ``python -m runtime {psi,train,tree,score,serve,stream_join,stream_train,run} --config job.json``.

The same program runs as a local subprocess or inside a Kubernetes pod. It exits
0 on success, 2 on a bad config or bad data (the message names the problem), and
1 on any other failure; the message is reported to the installation either way.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import queue
import sys
import threading
import traceback

from runtime.config import JobConfig, load_config
from runtime.errors import ConfigError, DataError, RuntimeJobError
from runtime.report import Reporter

# Each step's entry point: module with `run(cfg: JobConfig, reporter: Reporter) -> dict`.
STEP_MODULES = {
    "psi": "runtime.psi.step",
    "train": "runtime.train.step",
    "tree": "runtime.tree.step",
    "score": "runtime.train.score",
    "serve": "runtime.serve.step",
    "stream_join": "runtime.stream.step",
    "stream_train": "runtime.stream.train",
}
# Steps that run side by side, each in its own thread of one process, rather than one after the
# other: the continual trainer follows the blocks the joiner commits, and neither ends by itself.
CONCURRENT_STEPS = {("stream_join", "stream_train")}


def run_step(step: str, cfg: JobConfig, reporter: Reporter) -> dict:
    module = importlib.import_module(STEP_MODULES[step])
    return module.run(cfg, reporter)


def _result_dir(cfg: JobConfig) -> str:
    """A partition worker of a partitioned PSI keeps its own result file (the merged one is the side's)."""
    if cfg.psi.get("partitions") not in (None, 1):
        from runtime.psi.partition import result_dir  # only then: it imports gRPC, Arrow and numpy

        return result_dir(cfg)
    return cfg.output_dir


def run_concurrently(steps: list[str], cfg: JobConfig, reporter: Reporter) -> None:
    """Run `steps` in threads; the first to fail fails the job (the others die with the process)."""
    outcomes: queue.Queue[tuple[str, BaseException | None]] = queue.Queue()

    def one(step: str) -> None:
        try:
            reporter.log(f"step {step}: starting as {cfg.role}")
            reporter.result(step, run_step(step, cfg, reporter) or {})
            reporter.log(f"step {step}: done")
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            outcomes.put((step, exc))
            return
        outcomes.put((step, None))

    for step in steps:
        threading.Thread(target=one, args=(step,), name=f"step-{step}", daemon=True).start()
    for _ in steps:
        _step, exc = outcomes.get()
        if exc is not None:
            raise exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime", description="Fedsite runtime (data plane)")
    parser.add_argument(
        "command", choices=[*STEP_MODULES, "run"], help="what to do; `run` does the config's steps in order"
    )
    parser.add_argument("--config", required=True, help="path of the job's JSON config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reporter = Reporter(cfg.report, output_dir=_result_dir(cfg), retry_for_s=cfg.timeout_s)
    steps = list(cfg.steps) if args.command == "run" else [args.command]
    if not steps:
        reporter.failed("error: config has no steps to run")
        reporter.close()
        return 2
    code = 0
    try:
        if tuple(steps) in CONCURRENT_STEPS:
            run_concurrently(steps, cfg, reporter)
        for step in steps if tuple(steps) not in CONCURRENT_STEPS else []:
            reporter.log(f"step {step}: starting as {cfg.role}")
            result = run_step(step, cfg, reporter)
            reporter.result(step, result or {})
            reporter.log(f"step {step}: done")
    except (ConfigError, DataError) as exc:
        reporter.failed(f"error: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except RuntimeJobError as exc:
        reporter.failed(f"error: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        reporter.log("error: interrupted", "error")
        code = 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: report, then fail
        reporter.failed(f"error: internal error: {exc.__class__.__name__}: {exc}")
        traceback.print_exc()
        code = 1
    finally:
        reporter.close()
    return code


# Steps whose process ends at once when its work is done and reported (no interpreter teardown):
# libpsi's brpc link and Arrow leave native threads behind, whose teardown took 0.1 s of a PSI
# job and once aborted a finished run ("terminate called without an active exception").
EXIT_AT_ONCE = {"psi"}

if __name__ == "__main__":
    code = main()
    if sys.argv[1:2] and sys.argv[1] in EXIT_AT_ONCE:
        import gc
        import multiprocessing.util

        # What of the normal teardown matters here: multiprocessing's finalizers release the
        # semaphores of the queues and pools this process made (else its resource tracker warns
        # that they leaked).
        gc.collect()
        multiprocessing.util._run_finalizers()  # type: ignore[attr-defined]  # what atexit would run
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
