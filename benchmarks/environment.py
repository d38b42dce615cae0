"""What a benchmark records beside its figures: command, date, machine and load."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys

import torch


def describe_environment() -> dict:
    load1, load5, _ = os.getloadavg()
    return {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "load_average_1m_5m": [round(load1, 2), round(load5, 2)],
    }


def environment_markdown(env: dict) -> str:
    return (
        f"- command: `{env['command']}`\n- date: {env['date']}\n- machine: {env['machine']}\n"
        f"- load average (1 min, 5 min) at the start: {env['load_average_1m_5m']}\n"
    )
