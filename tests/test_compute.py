"""The compute backend is chosen by capability (faked here), forced by mode, and never by the core
reading the environment; training threads are deliberate and configurable."""

from pathlib import Path

import numpy as np
import pytest
import torch

import agile_modeling
from agile_modeling import compute

AVX2_ONLY = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
SAPPHIRE = "model name\t: Intel(R) Xeon(R)\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"


def fake_probe(rates):
    calls = []

    def probe(kind):
        calls.append(kind)
        return rates[kind]

    return probe, calls


def test_detector_reads_flags_of_each_cpu_kind():
    assert not compute.CpuInfo.read(AVX2_ONLY, "x86_64").native_bf16()
    assert compute.CpuInfo.read(SAPPHIRE, "x86_64").native_bf16()
    assert compute.CpuInfo.read(ARM, "aarch64").native_bf16()
    assert compute.CpuInfo.read(AVX2_ONLY, "x86_64").model == "AMD EPYC 7B13"


def test_avx2_only_cpu_gets_fp32_and_never_probes_emulated_bf16():
    probe, calls = fake_probe({"fp32-torch": 78.0, "fp32-numpy": 160.0, "bf16": 1.0})
    chosen = compute.choose("auto", compute.CpuInfo.read(AVX2_ONLY, "x86_64"), probe)
    assert (chosen.dtype, chosen.blas) == ("fp32", "numpy") and "bf16" not in calls
    assert "no native bf16" in chosen.reason


def test_native_bf16_is_used_only_where_it_is_measured_fast():
    cpu = compute.CpuInfo.read(SAPPHIRE, "x86_64")
    fast, _ = fake_probe({"fp32-torch": 75.0, "fp32-numpy": 60.0, "bf16": 400.0})
    slow, _ = fake_probe({"fp32-torch": 75.0, "fp32-numpy": 60.0, "bf16": 90.0})
    assert (compute.choose("auto", cpu, fast).dtype, compute.choose("auto", cpu, fast).blas) == ("bf16", "torch")
    assert compute.choose("auto", cpu, slow).dtype == "fp32"


def test_modes_force_each_path_and_junk_is_refused():
    probe, _ = fake_probe({"fp32-torch": 75.0, "fp32-numpy": 60.0, "bf16": 400.0})
    assert compute.choose("fp32", compute.CpuInfo.read(SAPPHIRE, "x86_64"), probe).dtype == "fp32"
    assert compute.choose("bf16", compute.CpuInfo.read(AVX2_ONLY, "x86_64"), probe).dtype == "bf16"
    assert compute.parse_mode(None) == compute.parse_mode("") == "auto"
    with pytest.raises(ValueError, match="AGILE_COMPUTE"):
        compute.parse_mode("int4")


def test_forced_modes_are_cached_per_process_and_restored():
    before = compute.current()
    with compute.forced("fp32") as chosen:
        assert chosen.dtype == "fp32" and compute.current() is chosen
    with compute.forced("fp32") as again:
        assert again is chosen  # chosen once per mode, then cached
    assert compute.current() is before


def test_the_core_never_reads_the_compute_settings_from_the_environment():
    core = Path(agile_modeling.__file__).parent
    offenders = [
        str(p)
        for p in core.rglob("*.py")
        if "AGILE_COMPUTE" in p.read_text()
        and "environ" in p.read_text()
        and ('environ.get("AGILE_COMPUTE' in p.read_text() or 'environ["AGILE_COMPUTE' in p.read_text())
    ]
    assert offenders == []
    assert "os.environ" not in (core / "compute.py").read_text()


def test_training_uses_the_configured_threads_and_restores_torch_s():
    from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    y = np.arange(60) % 2
    seen = []
    before = torch.get_num_threads()
    try:
        compute.configure(training_threads=2)
        MLPClassifier(DEFAULT_RECIPE.with_(epochs=1, epoch_size=64)).fit(
            x, y, progress=lambda *_: seen.append(torch.get_num_threads())
        )
        compute.configure(training_threads="")
        MLPClassifier(DEFAULT_RECIPE.with_(epochs=1, epoch_size=64)).fit(
            x, y, progress=lambda *_: seen.append(torch.get_num_threads())
        )
    finally:
        compute.configure(training_threads=0)
    assert seen == [2, compute.DEFAULT_TRAINING_THREADS] and torch.get_num_threads() == before
    with pytest.raises(ValueError):
        compute.configure(training_threads=-1)


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
def test_zero_shot_and_predict_agree_with_float64_on_each_path(mode):
    from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier
    from agile_modeling.zero_shot import zero_shot_scores

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    text = x[0]
    clf = MLPClassifier(DEFAULT_RECIPE.with_(epochs=1, epoch_size=256)).fit(x[:100], np.arange(100) % 2)
    with compute.forced(mode):
        for blas in ("torch", "numpy"):
            c = compute.Compute(compute.current().dtype, blas, mode, "test", True)
            np.testing.assert_allclose(
                zero_shot_scores(x.astype(np.float16), text, chunk_rows=1000, compute=c),
                x.astype(np.float16).astype(np.float64) @ text,
                atol=1e-5,
            )
        np.testing.assert_allclose(clf.decision_function(x), clf.decision_function(x.astype(np.float64)), atol=1e-5)


def test_a_preempted_bf16_probe_is_probed_again_before_fp32_is_chosen():
    cpu = compute.CpuInfo.read(SAPPHIRE, "x86_64")
    seen = {"bf16": 0}

    def probe(kind):
        if kind == "bf16":
            seen["bf16"] += 1
            return 46.0 if seen["bf16"] <= compute.PROBE_ROUNDS else 864.0  # preempted, then not
        return 90.0

    chosen = compute.choose("auto", cpu, probe)
    assert chosen.dtype == "bf16" and seen["bf16"] == compute.PROBE_ROUNDS + 1
    slow, calls = fake_probe({"fp32-torch": 75.0, "fp32-numpy": 60.0, "bf16": 90.0})
    assert compute.choose("auto", cpu, slow).dtype == "fp32"
    assert calls.count("bf16") == compute.PROBE_ROUNDS + compute.PROBE_RETRY_ROUNDS  # bounded
