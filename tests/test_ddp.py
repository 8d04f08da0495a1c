"""The multi-GPU launch path (torchrun + DDP) on two CPU processes with the gloo backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_gloo(tmp_path, so762_dir, tiny_dir):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    model = tiny_dir
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        torchrun, "--nproc_per_node", "2", "-m", "training.train", "training/configs/apa-mini.yaml",
        "--model", str(model), "--data", str(so762_dir), "--max_train_samples", "8", "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--output_dir", str(out), "--save_strategy", "no",
        "--dataloader_num_workers", "0", "--use_cpu", "True", "--ddp_backend", "gloo", "--bf16", "False",
    ]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((out / "resolved_config.json").read_text())
    assert cfg["training"]["ddp_backend"] == "gloo"
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["epoch"] > 0 and metrics["train_loss"] > 0
