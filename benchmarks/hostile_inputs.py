"""What hostile and careless inputs do to `predict`, `serve` and `train` — measured, for one checkout or two.

    .venv/bin/python benchmarks/hostile_inputs.py RUN_DIR [--src OTHER_CHECKOUT/src ...] [--out FILE.json]

RUN_DIR is any finished run (e.g. `cifar10cnn train --subset 1000 --epochs 1 --val-size 1000 --out RUN_DIR`).
Each --src (default: this checkout's src) is measured in turn with the same inputs, so "before" and "after"
come from one sitting on one machine. `--doc docs/hardening.md KEPT.json` rewrites the doc's tables from a
kept result file (tests/test_docs.py checks that they agree):

  examples   each bad input of the hardening issue through the CLI: exit status, traceback or not, last line
  memory     peak RSS of `predict` on a 1×150,000 PNG and a 16-bit 7000×7000 PNG, minus its peak on a 32×32 PNG
  server     peak RSS of `serve` (VmHWM) for the same uploads, and /healthz latency while 8 of them are in flight
  slowloris  500 half-open connections: how many the server dropped, how soon, and whether it still answers
  access     a foreign Host header; `--host 0.0.0.0` without a token
  runs       `train --overwrite` killed in its first epoch → does the old run still evaluate? and a second
             `train --resume` on a folder being trained

The inputs are generated (tests/hostile.py); nothing here needs the network. Results are printed and, with
--out, kept as JSON with their provenance (command, code commit, CPU).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from hostile import encoded, picture, png_bytes, poison_weights, write_pickle  # noqa: E402

from cifar10cnn.provenance import provenance  # noqa: E402

PY = sys.executable


def env_for(src: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10CNN_TOKEN"}
    env["PYTHONPATH"] = str(src)
    return env


def cli(src: Path, *args, timeout: float = 120) -> dict:
    """Run `cifar10cnn ARGS` from `src`; its status, whether it printed a traceback, and its last line
    (status "hung" when it was still running after `timeout` seconds and had to be killed)."""
    try:
        p = subprocess.run([PY, "-m", "cifar10cnn.cli", *map(str, args)], capture_output=True, text=True,
                           env=env_for(src), timeout=timeout)
        status, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        def decode(b):
            return (b.decode(errors="replace") if isinstance(b, bytes) else b or "")
        status, out, err = f"hung (killed after {timeout:g} s)", decode(e.stdout), decode(e.stderr)
    lines = [line for line in (err + out).splitlines() if line.strip()]
    return {"status": status, "traceback": "Traceback" in err, "last_line": lines[-1][:240] if lines else ""}


def peak_rss_mb(src: Path, *args) -> tuple[float, dict]:
    """Peak RSS (MB) of one `cifar10cnn ARGS` process, measured by a parent that waits for it alone."""
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); print(p.returncode); "
            "print((p.stdout + p.stderr).strip().splitlines()[-1][:200] if (p.stdout + p.stderr).strip() else '')")
    out = subprocess.run([PY, "-c", code, PY, "-m", "cifar10cnn.cli", *map(str, args)], capture_output=True,
                         text=True, env=env_for(src)).stdout.splitlines()
    return float(out[0]), {"status": int(out[1]), "last_line": out[2] if len(out) > 2 else ""}


# --- inputs -------------------------------------------------------------------------------------------------


def write_inputs(folder: Path) -> dict[str, Path]:
    files = {"small 32x32 PNG": encoded(picture(32, 32), "PNG"), "1x150,000 PNG": png_bytes(1, 150_000, color=0),
             "16-bit 7000x7000 PNG": png_bytes(7_000, 7_000, bits=16, color=0)}
    out = {}
    for name, blob in files.items():
        out[name] = folder / (name.replace(" ", "_").replace(",", "") + ".png")
        out[name].write_bytes(blob)
    return out


def examples(src: Path, run: Path, tmp: Path) -> list[dict]:
    """The issue's examples, each as a command; the damaged copies of RUN are made fresh per checkout."""
    d = Path(tempfile.mkdtemp(dir=tmp))
    cases = []

    def damaged(name: str, change) -> Path:
        copy = d / name
        shutil.copytree(run, copy)
        change(copy)
        return copy

    def edit_config(key, value):
        def change(r: Path):
            doc = json.loads((r / "config.json").read_text())
            doc["config"][key] = value
            (r / "config.json").write_text(json.dumps(doc))
        return change

    (d / "imgs" / "a[").mkdir(parents=True)
    (d / "imgs" / "a[" / "x].png").write_bytes(encoded(picture(32, 32), "PNG"))
    (d / "imgs" / "[bold]b.png").write_bytes(encoded(picture(32, 32), "PNG"))
    (d / "binary.json").write_bytes(b"\x00\xff\xfe" * 100)
    (d / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    loop = d / "loop"
    loop.symlink_to(loop)
    truncated = damaged("truncated-metrics", lambda r: (r / "metrics.json").write_text('{"test_accuracy": 0.5'))
    def break_checkpoint(r: Path) -> None:
        (r / "metrics.json").unlink()
        (r / "checkpoint" / "last.safetensors").write_bytes(b"\x00" * 5000)

    ckpt = damaged("damaged-checkpoint", break_checkpoint)
    nan = damaged("nan-weights", lambda r: poison_weights(r / "model.safetensors"))
    stale = damaged("stale-onnx", lambda r: (r / "model.onnx").write_bytes(b"not onnx"))
    threads = damaged("threads-minus-1", edit_config("threads", -1))
    scalar = d / "scalar-labels"
    shutil.copytree(os.environ["CIFAR10_DIR"], scalar)
    write_pickle(scalar / "data_batch_1", {b"data": np.zeros((10_000, 3072), np.uint8), b"labels": 3})
    commands = {
        "markup in file names (predict)": ["predict", run, d / "imgs"],
        "model_options: \"x\"": ["train", "--set", 'model_options="x"', "--out", d / "r1"],
        "model option dropout: 5": ["train", "--set", 'model_options={"dropout": 5}', "--epochs", "1", "--subset",
                                    "100", "--val-size", "100", "--out", d / "r2"],
        "threads: -1 in a saved config (evaluate)": ["evaluate", threads],
        "binary JSON config": ["train", "--config", d / "binary.json", "--out", d / "r3"],
        "deeply nested JSON config": ["train", "--config", d / "nested.json", "--out", d / "r4"],
        "scalar labels in a batch file": ["data", "--data-dir", scalar, "--cache-dir", d / "cache"],
        "symlink loop as data path": ["data", "--data-dir", loop, "--cache-dir", d / "cache"],
        "truncated metrics.json (compare)": ["compare", run, truncated],
        "damaged checkpoint (train --resume)": ["train", "--resume", "--out", ckpt],
        "bad loadtest URL": ["loadtest", "http://127.0.0.1:99999"],
        "serve --port 70000": ["serve", run, "--port", "70000"],
        "NaN weights (predict)": ["predict", nan, d / "imgs" / "[bold]b.png"],
    }
    for name, args in commands.items():
        cases.append({"case": name, "command": "cifar10cnn " + " ".join(map(str, args)), **cli(src, *args)})
    cases.append({"case": "stale model.onnx beside the weights (serve)", **stale_onnx(src, stale)})
    return cases


def stale_onnx(src: Path, run: Path) -> dict:
    """serve with a damaged model.onnx beside the weights: does it answer, and with what?"""
    with Server(src, run, ["--backend", "onnx"]) as s:
        if not s.up:
            return {"status": s.proc.returncode, "last_line": s.last_line()}
        status, body = s.post_png(encoded(picture(32, 32), "PNG"))
        return {"status": status, "answer": body[:160], "last_line": s.last_line()}


# --- the server -------------------------------------------------------------------------------------------


class Server:
    def __init__(self, src: Path, run: Path, extra: list[str] = ()) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([PY, "-m", "cifar10cnn.cli", "serve", str(run), "--port", str(self.port),
                                      *extra], stdout=self.log, stderr=self.log, env=env_for(src), text=True)
        self.up = False

    def __enter__(self):
        for _ in range(600):
            if self.proc.poll() is not None:
                return self
            try:
                self.up = self.get("/healthz")[0] == 200
                if self.up:
                    return self
            except OSError:
                time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def last_line(self) -> str:
        self.log.seek(0)
        lines = [line for line in self.log.read().splitlines() if line.strip()]
        return lines[-1][:240] if lines else ""

    def get(self, path: str, host: str | None = None, timeout: float = 30) -> tuple[int, float]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={"Host": host} if host else {})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                r.read()
                return r.status, time.perf_counter() - t0
        except urllib.error.HTTPError as e:
            return e.code, time.perf_counter() - t0

    def post_png(self, blob: bytes, timeout: float = 300) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/predict", data=blob,
                                     headers={"Content-Type": "image/png"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, f"connection failed: {e}"

    def hwm_mb(self) -> float:
        """Peak resident memory of the server process so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0


def server_memory(src: Path, run: Path, inputs: dict[str, Path]) -> dict:
    """Each hostile upload in a fresh server: peak RSS above the server's peak after one small upload."""
    out = {}
    for name in ("1x150,000 PNG", "16-bit 7000x7000 PNG"):
        with Server(src, run, ["--backend", "torch"]) as s:
            s.post_png(inputs["small 32x32 PNG"].read_bytes())
            base = s.hwm_mb()
            status, body = s.post_png(inputs[name].read_bytes())
            out[name] = {"peak_above_baseline_mb": round(s.hwm_mb() - base, 1), "baseline_mb": round(base, 1),
                         "status": status, "answer": body[:120]}
    return out


def healthz_under_load(src: Path, run: Path, inputs: dict[str, Path], uploads: int = 8) -> dict:
    """/healthz latency, polled every 10 ms, while `uploads` 16-bit 7000×7000 PNG uploads are in flight."""
    blob = inputs["16-bit 7000x7000 PNG"].read_bytes()
    with Server(src, run, ["--backend", "torch"]) as s:
        s.post_png(inputs["small 32x32 PNG"].read_bytes())
        base = s.hwm_mb()
        with concurrent.futures.ThreadPoolExecutor(uploads) as pool:
            t0 = time.perf_counter()
            futures = [pool.submit(s.post_png, blob) for _ in range(uploads)]
            latencies, failures = [], 0
            while not all(f.done() for f in futures):
                try:
                    latencies.append(s.get("/healthz", timeout=30)[1] * 1000)
                except OSError:
                    failures += 1
                time.sleep(0.01)
            seconds = time.perf_counter() - t0
            statuses = sorted(f.result()[0] for f in futures)
        # "inclusive": percentiles between the smallest and largest poll, never extrapolated past them
        q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else [latencies[0]] * 99
        return {"uploads": uploads, "upload_statuses": statuses, "seconds_for_all": round(seconds, 2),
                "healthz_polls": len(latencies), "healthz_failures": failures,
                "healthz_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
                "healthz_p99_ms": round(q[98], 1), "healthz_max_ms": round(max(latencies), 1) if latencies else None,
                "peak_rss_above_baseline_mb": round(s.hwm_mb() - base, 1),
                "healthz_ms": [round(x, 1) for x in latencies]}


def slowloris(src: Path, run: Path, connections: int = 500, wait_s: float = 45.0) -> dict:
    """`connections` half-open requests; how many the server drops within `wait_s`, and /healthz meanwhile."""
    with Server(src, run, ["--backend", "torch"]) as s:
        socks = []
        for _ in range(connections):
            c = socket.create_connection(("127.0.0.1", s.port))
            c.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n")
            c.setblocking(False)
            socks.append(c)
        t0, dropped, when = time.perf_counter(), set(), []
        during = s.get("/healthz", timeout=10)
        while len(dropped) < connections and time.perf_counter() - t0 < wait_s:
            for i, c in enumerate(socks):
                if i in dropped:
                    continue
                try:
                    c.recv(100)  # a 408, or b"" when closed: either way the server let go
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                dropped.add(i)
                when.append(time.perf_counter() - t0)
            time.sleep(0.05)
        after = s.get("/healthz", timeout=10)
        for c in socks:
            c.close()
        return {"connections": connections, "dropped_by_server": len(dropped), "waited_s": wait_s,
                "last_dropped_after_s": round(max(when), 1) if when else None,
                "healthz_during": {"status": during[0], "ms": round(during[1] * 1000, 1)},
                "healthz_after": {"status": after[0], "ms": round(after[1] * 1000, 1)}}


def access(src: Path, run: Path) -> dict:
    with Server(src, run, ["--backend", "torch"]) as s:
        foreign = s.get("/v1/model", host="evil.example")[0]
        own = s.get("/v1/model")[0]
    with Server(src, run, ["--backend", "torch", "--host", "0.0.0.0"]) as s:
        public = {"started": s.up, "last_line": s.last_line()}
    return {"foreign_host_status": foreign, "own_host_status": own, "host_0.0.0.0_without_token": public}


# --- run folders ------------------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_folders(src: Path, tmp: Path) -> dict:
    d = Path(tempfile.mkdtemp(dir=tmp))
    quick = ["--subset", "2000", "--val-size", "1000", "--batch-size", "50"]
    old = d / "finished"
    first = cli(src, "train", *quick, "--epochs", "1", "--out", old)
    before = sha(old / "model.safetensors")
    proc = subprocess.Popen([PY, "-m", "cifar10cnn.cli", "train", *quick, "--epochs", "2", "--overwrite", "--out",
                             str(old)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env_for(src), text=True)
    for line in proc.stdout:  # kill it once it is training (its first epoch runs ~5 s)
        if line.startswith("training "):
            time.sleep(1.0)
            proc.kill()
            break
    proc.wait()
    after = {"files": sorted(p.name for p in old.iterdir()) if old.is_dir() else "gone",
             "weights_unchanged": (old / "model.safetensors").is_file() and sha(old / "model.safetensors") == before,
             "evaluate": cli(src, "evaluate", old)}
    busy = d / "busy"
    a = subprocess.Popen([PY, "-m", "cifar10cnn.cli", "train", *quick, "--epochs", "3", "--out", str(busy)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_for(src))
    while not (busy / "config.json").is_file() and a.poll() is None:
        time.sleep(0.2)
    second = cli(src, "train", "--resume", "--out", busy)
    a.wait()
    history = (busy / "history.csv").read_text().splitlines() if (busy / "history.csv").is_file() else []
    return {"first_run": first["status"], "overwrite_killed_in_epoch_1": after,
            "second_trainer_on_one_folder": {**second, "first_trainer_status": a.returncode,
                                             "first_history_rows": len(history) - 1}}


BEGIN, END = "<!-- hostile_inputs:begin (generated by benchmarks/hostile_inputs.py --doc) -->", \
    "<!-- hostile_inputs:end -->"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown(results: dict) -> str:
    """The before/after tables of docs/hardening.md, from a kept result file."""
    labels = list(results["checkouts"])
    runs = [results["checkouts"][k] for k in labels]
    prov = results["provenance"]
    lines = [f"Measured by `{results['command']}` on {prov['cpu']} (torch {prov['torch']}, code "
             f"{prov['code']['commit'][:10]}{' + uncommitted changes' if prov['code']['dirty'] else ''}); "
             "columns: " + ", ".join(f"`{k}` (code {r['code']['commit'][:10]})"
                                     for k, r in zip(labels, runs, strict=True)) + ".", ""]
    if all("examples" in r for r in runs):
        lines += ["| input | " + " | ".join(f"`{k}`: status, last line" for k in labels) + " |",
                  "|---|" + "---|" * len(labels)]
        for i, case in enumerate(runs[0]["examples"]):
            cells = []
            for r in runs:
                c = r["examples"][i]
                tb = " **(traceback)**" if c.get("traceback") else ""
                cells.append(f"{c['status']}{tb}: {_cell(c.get('last_line', ''))}")
            lines.append(f"| {_cell(case['case'])} | " + " | ".join(cells) + " |")
        lines.append("")
    rows = []
    for name in ("1x150,000 PNG", "16-bit 7000x7000 PNG"):
        if all("predict_peak_rss_mb" in r for r in runs):
            rows.append((f"`predict` peak RSS above a 32×32 PNG, {name} (MB)",
                         [r["predict_peak_rss_mb"][name]["above_baseline"] for r in runs]))
        if all("server_peak_rss" in r for r in runs):
            peaks = [r["server_peak_rss"][name] for r in runs]
            rows.append((f"`serve` peak RSS above baseline, {name} (MB; HTTP status)",
                         [f"{x['peak_above_baseline_mb']} ({x['status']})" for x in peaks]))
    if all("healthz_with_8_uploads" in r for r in runs):
        h = [r["healthz_with_8_uploads"] for r in runs]
        rows += [("`/healthz` p50 / p99 / max ms, 8 16-bit 7000×7000 uploads in flight",
                  [f"{x['healthz_p50_ms']} / {x['healthz_p99_ms']} / {x['healthz_max_ms']} ({x['healthz_polls']} polls)"
                   for x in h]),
                 ("those 8 uploads: statuses, seconds for all, peak RSS above baseline (MB)",
                  [f"{x['upload_statuses']}, {x['seconds_for_all']} s, {x['peak_rss_above_baseline_mb']}" for x in h])]
    if all("slowloris" in r for r in runs):
        sl = [r["slowloris"] for r in runs]
        rows += [("500 half-open connections: dropped by the server (within s)",
                  [f"{x['dropped_by_server']} of {x['connections']} (last after {x['last_dropped_after_s']} s; "
                   f"waited {x['waited_s']} s)" for x in sl]),
                 ("`/healthz` during and after them", [f"{x['healthz_during']['status']} in "
                                                       f"{x['healthz_during']['ms']} ms; {x['healthz_after']['status']}"
                                                       for x in sl])]
    if all("access" in r for r in runs):
        a = [r["access"] for r in runs]
        rows += [("`Host: evil.example` / own host → status", [f"{x['foreign_host_status']} / {x['own_host_status']}"
                                                                for x in a]),
                 ("`serve --host 0.0.0.0` without a token", [("starts" if x["host_0.0.0.0_without_token"]["started"]
                                                              else "refuses: " + x["host_0.0.0.0_without_token"]
                                                              ["last_line"]) for x in a])]
    if all("run_folders" in r for r in runs):
        f = [r["run_folders"] for r in runs]
        killed = [x["overwrite_killed_in_epoch_1"] for x in f]
        rows += [("`train --overwrite` killed in epoch 1: old run's files; weights unchanged; `evaluate` status",
                  [f"{k['files']}; {k['weights_unchanged']}; {k['evaluate']['status']}" for k in killed]),
                 ("a second `train --resume` on a folder being trained: status, last line; first trainer's status and "
                  "history rows", [f"{x['second_trainer_on_one_folder']['status']}: "
                                   f"{_cell(x['second_trainer_on_one_folder']['last_line'])}; "
                                   f"{x['second_trainer_on_one_folder']['first_trainer_status']}, "
                                   f"{x['second_trainer_on_one_folder']['first_history_rows']}" for x in f])]
    if rows:
        lines += ["| measured | " + " | ".join(f"`{k}`" for k in labels) + " |", "|---|" + "---|" * len(labels)]
        lines += [f"| {name} | " + " | ".join(_cell(v) for v in values) + " |" for name, values in rows]
    return "\n".join(lines) + "\n"


def serve_table(rows: list[dict]) -> str:
    """benchmarks/serve_bench.py rows labelled before/after (interleaved sittings): the mean of each label's runs."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["backend"], r["clients"]), {}).setdefault(r["label"], []).append(r)
    cpu = rows[0]["provenance"]["cpu"]
    commits = {r["label"]: r["provenance"]["code"]["commit"][:10] for r in rows}
    lines = [f"`benchmarks/serve_bench.py` in one sitting on {cpu}, runs interleaved before, after, after, before "
             f"(before = {commits.get('before')}, after = {commits.get('after')}); mean of each label's runs:", "",
             "| backend | clients | images/s before → after | p50 ms before → after | change |",
             "|---|---|---|---|---|"]
    for (backend, clients), by in sorted(groups.items()):
        ips = {k: statistics.mean(x["images_per_s"] for x in v) for k, v in by.items()}
        p50 = {k: statistics.mean(x["p50_ms"] for x in v) for k, v in by.items()}
        key, value = ("images/s", ips) if clients > 1 else ("p50", p50)
        change = 100 * (value["after"] / value["before"] - 1)
        lines.append(f"| {backend} | {clients} | {ips['before']:.0f} → {ips['after']:.0f} | {p50['before']:.2f} → "
                     f"{p50['after']:.2f} | {key} {change:+.1f}% |")
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, kept: Path) -> None:
    text = doc.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(head + BEGIN + "\n" + doc_tables(kept) + END + tail)


def doc_tables(kept: Path) -> str:
    """The doc's generated block: the hostile-input tables and, when kept beside them, the serving benchmark."""
    out = markdown(json.loads(kept.read_text()))
    bench = kept.parent / "serve_bench_before_after.jsonl"
    if bench.is_file():
        out += "\n" + serve_table([json.loads(line) for line in bench.read_text().splitlines() if line.strip()])
    return out


def main() -> int:
    if sys.argv[1:2] == ["--doc"]:  # --doc DOC.md KEPT.json: regenerate the tables from the kept file
        write_doc(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--src", type=Path, nargs="+", default=[ROOT / "src"])
    ap.add_argument("--only", nargs="+", default=["examples", "memory", "server", "slowloris", "access", "runs"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = {"command": " ".join(sys.argv), "provenance": provenance(), "checkouts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = write_inputs(Path(tmp))
        for src in args.src:
            label = str(src)
            version = "import json; from cifar10cnn.provenance import code_version; print(json.dumps(code_version()))"
            r: dict = {"code": json.loads(subprocess.run([PY, "-c", version], capture_output=True, text=True,
                                                         env=env_for(src), check=True).stdout)}
            if "examples" in args.only:
                r["examples"] = examples(src, args.run_dir, Path(tmp))
            if "memory" in args.only:
                r["predict_peak_rss_mb"] = {}
                base, _ = peak_rss_mb(src, "predict", args.run_dir, inputs["small 32x32 PNG"])
                for name in ("1x150,000 PNG", "16-bit 7000x7000 PNG"):
                    peak, outcome = peak_rss_mb(src, "predict", args.run_dir, inputs[name])
                    r["predict_peak_rss_mb"][name] = {"above_baseline": round(peak - base, 1),
                                                      "baseline": round(base, 1), **outcome}
            if "server" in args.only:
                r["server_peak_rss"] = server_memory(src, args.run_dir, inputs)
                r["healthz_with_8_uploads"] = healthz_under_load(src, args.run_dir, inputs)
            if "slowloris" in args.only:
                r["slowloris"] = slowloris(src, args.run_dir)
            if "access" in args.only:
                r["access"] = access(src, args.run_dir)
            if "runs" in args.only:
                r["run_folders"] = run_folders(src, Path(tmp))
            results["checkouts"][label] = r
            print(json.dumps({label: r}, indent=1), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
