"""What a benchmark records beside its figures: command, date, machine and load."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys

import torch

from agile_modeling import compute

# the flags that decide the numeric core's path (compute.py) and the embedding tower's precision
RELEVANT_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "bf16",
    "asimd",
    "sve",
)


def describe_environment() -> dict:
    """Command, date, machine, load, the CPU (model and the flags that matter here) and the compute
    path the core chose on it (``AGILE_COMPUTE`` forces one)."""
    load1, load5, _ = os.getloadavg()
    cpu = compute.CpuInfo.read()
    compute.configure(os.environ.get("AGILE_COMPUTE"))
    chosen = compute.current().as_dict()
    return {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "load_average_1m_5m": [round(load1, 2), round(load5, 2)],
        "cpu_model": cpu.model,
        "cpu_flags": sorted(set(RELEVANT_FLAGS) & cpu.flags),
        "compute": {k: chosen[k] for k in ("dtype", "blas", "mode", "reason")},
    }


def environment_markdown(env: dict) -> str:
    return (
        f"- command: `{env['command']}`\n- date: {env['date']}\n- machine: {env['machine']}\n"
        f"- load average (1 min, 5 min) at the start: {env['load_average_1m_5m']}\n"
        f"- CPU: {env['cpu_model']}; flags: {', '.join(env['cpu_flags']) or 'none of ' + ', '.join(RELEVANT_FLAGS)}\n"
        f"- compute path: {env['compute']['dtype']} sweeps, {env['compute']['blas']} BLAS ({env['compute']['reason']})\n"
    )
