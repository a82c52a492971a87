"""A stand-in for `python -m runtime run --config F` that starts fast and does what the config says.

It parses the config with the real runtime's parser (so every config the
launcher writes must be valid), then follows `psi.fake`:

    {"sleep": seconds, "exit": code, "message": "error: …", "child": true,
     "results": {"<step>": {…}}, "flush_s": seconds,
     "partition": {"<i>": {…the same keys, for partition i of a partitioned PSI…}}}

`child` starts a grandchild in the same process group (to prove cancel kills
the whole group). `results` are reported through the real `Reporter` (to the
config's report URL, and into `<output_dir>/result.json`), which then gets
`flush_s` to deliver them. It writes `<output_dir>/fake.json` (partition i: `fake.p<i>.json`)
with its pid and config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.config import load_config  # noqa: E402
from runtime.errors import ConfigError  # noqa: E402
from runtime.report import Reporter  # noqa: E402


def main() -> int:
    path = sys.argv[sys.argv.index("--config") + 1]
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    fake = cfg.psi.get("fake", {})
    index = (cfg.psi.get("partition") or {}).get("index")
    if index is not None:  # a partition worker of a partitioned PSI: `partition_exit` {"<i>": code} fails one
        fake = {**fake, **(fake.get("partition", {}).get(str(index)) or {})}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "pgid": os.getpgid(0), "role": cfg.role, "peer_address": cfg.peer_address}
    info["listen_address"] = cfg.listen_address
    if fake.get("child"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        info["child_pid"] = child.pid
    (out / ("fake.json" if index is None else f"fake.p{index}.json")).write_text(json.dumps(info))
    print(f"fake runtime: {cfg.role} step(s) {','.join(cfg.steps)}", flush=True)
    time.sleep(float(fake.get("sleep", 0.0)))
    if fake.get("message"):
        print(fake["message"], file=sys.stderr, flush=True)
    if fake.get("results"):
        reporter = Reporter(cfg.report, output_dir=cfg.output_dir, retry_for_s=cfg.timeout_s)
        for step, data in fake["results"].items():
            reporter.result(step, data)
        reporter.close(float(fake.get("flush_s", 1.0)))
    code = int(fake.get("exit", 0))
    print(f"fake runtime: exiting {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
