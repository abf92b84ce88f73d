#!/usr/bin/env python3
"""Load-test an OpenAI-compatible endpoint: N chat requests, C at a time.

    python scripts/bench_serve.py URL [--served-name NAME] [-n 32] [-c 4] [--max-tokens 32]
    python scripts/bench_serve.py --compare -C CHAIN.yaml [-n ...]

Prints requests/s, output tokens/s and p50/p99 latency. `--compare` serves the chain's deploy stage
with `ichain deploy serve`, measures, stops it, then starts the very command line the supervisor
recorded (the plain upstream server, same flags, same port) and measures again: the ratio shows what
the CLI costs at serving time (target ≥ 0.98).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from internlm_chain.stages.deploy import client, service

PROMPTS = ["What is 2 + 3?", "Name the largest planet.", "Say hello in Chinese.", "Count from one to five."]


def served_names(url: str) -> list[str]:
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as resp:
        return [m["id"] for m in json.load(resp)["data"]]


def bench(url: str, name: str, n: int, concurrency: int, max_tokens: int) -> dict:
    def one(i: int) -> client.Reply:
        msgs = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        return client.chat(url, name, msgs, max_tokens=max_tokens, temperature=0.0)

    client.chat(url, name, [{"role": "user", "content": "warm up"}], max_tokens=2)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = sorted(r.latency_s for r in replies)
    tokens = sum(r.completion_tokens or 0 for r in replies)
    return {"requests": n, "concurrency": concurrency, "wall_s": round(wall, 3),
            "requests_per_s": round(n / wall, 3), "output_tokens_per_s": round(tokens / wall, 2),
            "p50_s": round(statistics.median(lat), 3),
            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3)}


def show(label: str, r: dict) -> None:
    print(f"{label}: {r['requests']} requests, concurrency {r['concurrency']}: {r['requests_per_s']} req/s, "
          f"{r['output_tokens_per_s']} output tok/s, p50 {r['p50_s']} s, p99 {r['p99_s']} s")


def wait_ready(url: str, name: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"the plain server exited with code {proc.returncode}")
        if service.http_status(url + "/health") == 200:
            try:
                if name in served_names(url):
                    return
            except OSError:
                pass
        time.sleep(0.5)
    sys.exit("the plain server did not become ready")


def compare(chain: str, args) -> None:
    ichain = [sys.executable, "-m", "internlm_chain"]
    subprocess.run([*ichain, "deploy", "stop", "-c", chain], check=True, capture_output=True)
    subprocess.run([*ichain, "deploy", "serve", "-c", chain], check=True)
    from internlm_chain.config.loader import load_chain

    sdir = service.services_dir(load_chain(chain).workdir)
    state = service.read_state(sdir / "state.json")
    url, name = state["endpoint"], state["served_name"]
    try:
        via_cli = bench(url, name, args.n, args.concurrency, args.max_tokens)
    finally:
        subprocess.run([*ichain, "deploy", "stop", "-c", chain], check=True, capture_output=True)
    show("ichain deploy serve", via_cli)
    if len(state["services"]) != 1:
        sys.exit("--compare handles a single server (no proxy)")
    command = state["services"][0]["command"]
    print(f"plain upstream command: {command}")
    import shlex

    with open(sdir / "plain.log", "wb") as log:
        proc = subprocess.Popen(shlex.split(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, name, proc)
        plain = bench(url, name, args.n, args.concurrency, args.max_tokens)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    show("plain upstream", plain)
    ratio = via_cli["output_tokens_per_s"] / plain["output_tokens_per_s"] if plain["output_tokens_per_s"] else 0
    print(f"ratio (ichain / plain, output tokens/s): {ratio:.3f}; "
          f"req/s {via_cli['requests_per_s'] / plain['requests_per_s']:.3f}")
    if args.json:
        print(json.dumps({"ichain": via_cli, "plain": plain, "ratio": round(ratio, 4)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", nargs="?")
    ap.add_argument("--served-name")
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("-c", "--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("-C", "--chain", help="with --compare: the chain file whose deploy stage to serve")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.compare:
        if not args.chain:
            ap.error("--compare needs -C CHAIN.yaml")
        compare(str(Path(args.chain).resolve()), args)
        return
    if not args.url:
        ap.error("give a URL (or --compare -C CHAIN)")
    url = args.url.rstrip("/")
    name = args.served_name or served_names(url)[0]
    result = bench(url, name, args.n, args.concurrency, args.max_tokens)
    show(url, result)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
