"""What each stage of the at-scale path costs: wall time, peak host memory (RSS of the whole
process tree, sampled every 0.25 s), peak GPU memory (the device's used memory through NVML,
which includes the CUDA context and the allocator's cache: what the job needs from the card),
disk written (growth of the work folder), and the stage's own rate read from its outputs.

    python measure.py run --log stages.jsonl --name select --work WORK -- CMD ARGS...
    python measure.py table --log stages.jsonl [--json out.json] [--md out.md]

`run` propagates the command's exit status; each stage appends one JSON line to the log.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

GIB = 1024**3


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


class _Sampler(threading.Thread):
    def __init__(self, pid: int, period: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak_rss = 0
        self.peak_gpu = None
        self.gpu_base = None
        self.stop = threading.Event()
        self.nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.gpu_base = self._gpu()
            self.peak_gpu = self.gpu_base
        except Exception:  # no GPU or no NVML: host numbers only
            self.nvml = None

    def _gpu(self) -> int:
        import pynvml

        return max(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self.nvml)

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                rss = 0
                for p in procs:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_rss = max(self.peak_rss, rss)
            except psutil.Error:
                pass
            if self.nvml:
                try:
                    self.peak_gpu = max(self.peak_gpu, self._gpu())
                except Exception:
                    pass
            self.stop.wait(self.period)


def run(args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    before = _du(work)
    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    proc = subprocess.Popen(args.cmd)
    sampler = _Sampler(proc.pid)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    rec = {
        "name": args.name,
        "started": started,
        "wall_s": round(wall, 2),
        "rc": rc,
        "peak_host_rss_gib": round(sampler.peak_rss / GIB, 3),
        "peak_gpu_used_gib": None if sampler.peak_gpu is None else round(sampler.peak_gpu / GIB, 3),
        "gpu_used_before_gib": None if sampler.gpu_base is None else round(sampler.gpu_base / GIB, 3),
        "disk_written_gib": round((_du(work) - before) / GIB, 4),
        "outputs": [o for o in args.outputs.split(",") if o],
        "command": " ".join(args.cmd),
    }
    what, per_s, note = rate(rec)  # read now: a later stage may delete these outputs (CLEAN=1)
    rec.update(rate_unit=what, rate_per_s=None if per_s is None else round(per_s, 4), note=note)
    with open(args.log, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(
        f"[measure] {args.name}: {wall:.1f} s, rc {rc}, host {rec['peak_host_rss_gib']} GiB, "
        f"gpu {rec['peak_gpu_used_gib']} GiB, disk +{rec['disk_written_gib']} GiB",
        flush=True,
    )
    return rc


# ---------------------------------------------------------------------------------------------
# rates, read from what each stage wrote


def _load(path) -> dict | list | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None


def _count_lines(path) -> int:
    p = Path(path)
    return sum(1 for line in p.open() if line.strip()) if p.is_file() else 0


def rate(rec: dict) -> tuple[str, float | None, str]:
    """(what, units per second, note) for one stage record."""
    name, wall, outs = rec["name"], rec["wall_s"], rec.get("outputs") or []
    out = Path(outs[0]) if outs else None
    if name == "standin" and out is not None:
        s = _load(out / "standin.json") or {}
        frames = round(s.get("videos", 0) * s.get("minutes", 0) * 60 * s.get("fps", 0))
        return (
            "video frames encoded/s",
            frames / wall if frames else None,
            f"{s.get('videos')} videos x {s.get('minutes')} min at {s.get('width')}x{s.get('height')}, {s.get('fps')} fps",
        )
    if name == "build-ego4d" and out is not None:
        r = _load(out / "report.json") or {}
        return "NLQ queries/s", r.get("read", 0) / wall, f"{r.get('read')} queries read, {r.get('built')} samples built"
    if name == "select" and out is not None:
        r = _load(out / "report.json") or {}
        n = r.get("candidates") or 0
        kept = _count_lines(out / "selected.jsonl")
        return "samples/s (3 views each)", n / wall if n else None, f"{n} samples scored, {kept} kept"
    if name.startswith("train") and out is not None:
        hist = _load(out / "log_history.json") or []
        end = [h for h in hist if "train_runtime" in h]
        steps = max((h.get("step", 0) for h in hist), default=0)
        rt = end[-1]["train_runtime"] if end else None
        cfg = _load(out / "training_config.json") or {}
        note = f"{steps} optimizer steps of {cfg.get('batch_size')} completions; trainer loop {rt and round(rt, 1)} s"
        return "steps/s (trainer loop)", steps / rt if rt and steps else None, note
    if name.startswith("eval") and out is not None:
        n = sum(_count_lines(p) for p in out.glob("*/predictions*.jsonl")) or sum(
            _count_lines(p) for p in out.glob("*/per_sample.jsonl")
        )
        return "questions/s", n / wall if n else None, f"{n} questions"
    if name.startswith("merge") and out is not None:
        size = _du(out) / GIB if out.exists() else 0
        return "GiB written/s", size / wall if size else None, f"{size:.1f} GiB folder"
    return "", None, ""


def table(args) -> None:
    last: dict[str, dict] = {}  # a stage run again (a resumed driver) counts once, as last run
    for line in open(args.log):
        if line.strip():
            r = json.loads(line)
            last.pop(r["name"], None)
            last[r["name"]] = r
    recs = list(last.values())
    rows = []
    for r in recs:
        if "rate_unit" not in r:
            what, per_s, note = rate(r)
            r = {**r, "rate_unit": what, "rate_per_s": None if per_s is None else round(per_s, 4), "note": note}
        rows.append(r)
    head = ["stage", "wall (s)", "peak GPU used (GiB)", "peak host RSS (GiB)", "disk written (GiB)", "rate", "what ran"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        gpu = "-" if r["peak_gpu_used_gib"] is None else f"{r['peak_gpu_used_gib']:.1f}"
        ok = "" if r["rc"] == 0 else f" (exit {r['rc']})"
        rt = "-" if r["rate_per_s"] is None else f"{r['rate_per_s']:.3g} {r['rate_unit']}"
        lines.append(
            f"| {r['name']}{ok} | {r['wall_s']:.1f} | {gpu} | {r['peak_host_rss_gib']:.1f} | "
            f"{r['disk_written_gib']:.2f} | {rt} | {r['note']} |"
        )
    md = "\n".join(lines)
    print(md)
    if args.md:
        Path(args.md).write_text(md + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd_name", required=True)
    r = sub.add_parser("run")
    r.add_argument("--log", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--work", required=True, help="folder whose growth counts as the stage's disk writes")
    r.add_argument("--outputs", default="", help="the stage's output folder(s), comma-separated, read for its rate")
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    t = sub.add_parser("table")
    t.add_argument("--log", required=True)
    t.add_argument("--json")
    t.add_argument("--md")
    a = p.parse_args(argv)
    if a.cmd_name == "run":
        if a.cmd and a.cmd[0] == "--":
            a.cmd = a.cmd[1:]
        return run(a)
    table(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
