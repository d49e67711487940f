"""The training loop on CPU with a random VGG-16 (losses are real; stylization quality is not judged)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from nst_runtime.errors import CheckpointError, UsageError
from nst_train.checkpoint import file_sha256, load_checkpoint
from nst_train.train import StepRecord, TrainingInterrupted, train


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def test_short_run_lowers_the_loss(tmp_path, tiny_config):
    records: list[StepRecord] = []
    # one batch of all 6 images per step, so the step-to-step change is the training, not the data
    cfg = tiny_config(tmp_path / "m.pth", batch_size=6, steps=24, lr=1e-2, log_every=8, preview_every=12)
    result = train(cfg, callback=records.append)
    assert [r.step for r in records] == list(range(1, 25))
    first = sum(r.total for r in records[:3]) / 3
    last = sum(r.total for r in records[-3:]) / 3
    assert last < 0.7 * first, (first, last)

    # the clean model checkpoint with its metadata
    ckpt = load_checkpoint(tmp_path / "m.pth")
    assert ckpt.metadata.steps == 24 and ckpt.metadata.image_size == 32
    assert ckpt.metadata.style_image_sha256 == file_sha256(cfg.style)
    assert ckpt.metadata.vgg_weights == "random"
    assert ckpt.metadata.loss_weights["content"] == cfg.resolve()[1].content_weight == 1e5
    assert ckpt.metadata.recipe == "nst" and ckpt.metadata.training["batch_size"] == 6
    assert ckpt.metadata.training["shuffle"] is True and ckpt.metadata.init is None
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["recipe"] == "nst" and run["overrides"]["steps"] == 24 and run["settings"] == ckpt.metadata.training
    for k, v in _weights(result.model).items():
        assert torch.equal(ckpt.state_dict[k], v)
    # the loss log (JSONL, means over log_every steps) and the previews
    lines = [json.loads(x) for x in (result.run_dir / "loss.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [8, 16, 24]
    assert lines[-1]["total"] < lines[0]["total"]
    assert {"content", "style", "tv", "images_per_second"} <= set(lines[0])
    previews = sorted(p.name for p in (result.run_dir / "previews").iterdir())
    assert previews == ["step_0000012.jpg", "step_0000024.jpg"]
    assert result.final_losses["total"] == pytest.approx(lines[-1]["total"])


def test_resume_after_a_crash_gives_identical_weights(tmp_path, tiny_config):
    # 6 images, batch 2: 3 steps per epoch; 7 steps cross two epoch boundaries
    ref = train(tiny_config(tmp_path / "ref" / "m.pth", steps=7))

    class Crash(Exception):
        pass

    def crash_at_6(record: StepRecord) -> None:
        if record.step == 6:
            raise Crash  # a kill after step 5 was logged; the last state written is step 4 (checkpoint_every=2)

    cfg = tiny_config(tmp_path / "run" / "m.pth", steps=7, checkpoint_every=2)
    with pytest.raises(Crash):
        train(cfg, callback=crash_at_6)
    assert not cfg.out.exists()
    assert max(json.loads(x)["step"] for x in (tmp_path / "run" / "m.run" / "loss.jsonl").open()) == 5
    resumed = train(tiny_config(tmp_path / "run" / "m.pth", steps=7, checkpoint_every=2, resume=True))
    assert resumed.steps == 7 and resumed.steps_this_run == 3
    a, b = _weights(ref.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    # the log has no duplicated steps from the killed run
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "m.run" / "loss.jsonl").open()]
    assert steps == list(range(1, 8))


@pytest.fixture(params=["ignored", "custom"])
def sigint_before(request):
    """A SIGINT handler other than Python's default, as a runner may start with (nohup, some CI shells ignore
    SIGINT); the test compares with it, never with the default. Restored afterwards."""
    original = signal.getsignal(signal.SIGINT)

    def custom(signum, frame):  # pragma: no cover - never called: training installs its own handler
        raise AssertionError("the runner's handler must not see the training's Ctrl-C")

    before = signal.SIG_IGN if request.param == "ignored" else custom
    signal.signal(signal.SIGINT, before)
    yield before
    signal.signal(signal.SIGINT, original)


def test_ctrl_c_saves_state_and_resume_matches(tmp_path, tiny_config, sigint_before):
    ref = train(tiny_config(tmp_path / "ref" / "m.pth", steps=5, batch_size=1, seed=11))
    assert signal.getsignal(signal.SIGINT) is sigint_before  # a run without Ctrl-C restores it too

    def interrupt_at_3(record: StepRecord) -> None:
        if record.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does; handled at the step boundary

    cfg = tiny_config(tmp_path / "run" / "m.pth", steps=5, batch_size=1, seed=11)
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, callback=interrupt_at_3)
    assert info.value.step == 3 and info.value.state_path.is_file()
    # restored to whatever it was before the call (not to Python's default, which the runner may not have had)
    assert signal.getsignal(signal.SIGINT) is sigint_before
    resumed = train(tiny_config(tmp_path / "run" / "m.pth", steps=5, batch_size=1, seed=11, resume=True))
    a, b = _weights(ref.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_options_and_missing_state(tmp_path, tiny_config):
    train(tiny_config(tmp_path / "m.pth", steps=1))
    with pytest.raises(UsageError, match=r"batch_size: run had 2, now 3.*original options"):
        train(tiny_config(tmp_path / "m.pth", steps=2, batch_size=3, resume=True))
    with pytest.raises(CheckpointError, match=r"other\.run.state\.pth: no training state"):
        train(tiny_config(tmp_path / "other.pth", resume=True))


def test_resume_can_extend_a_finished_run(tmp_path, tiny_config):
    ref = train(tiny_config(tmp_path / "ref.pth", steps=4))
    train(tiny_config(tmp_path / "m.pth", steps=2))
    more = train(tiny_config(tmp_path / "m.pth", steps=4, resume=True))
    assert more.steps_this_run == 2
    a, b = _weights(ref.model), _weights(more.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # starting afresh (no --resume) in the same place starts a fresh loss log
    train(tiny_config(tmp_path / "m.pth", steps=1))
    assert [json.loads(x)["step"] for x in (tmp_path / "m.run" / "loss.jsonl").open()] == [1]


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 30}, "multiple of 4"),
    ({"epochs": 1, "steps": 2}, "not both"),
    ({"batch_size": 0}, "batch-size"),
    ({"batch_size": 7}, "fewer than --batch-size 7"),
    ({"device": "tpu"}, "expected auto, cpu"),
])
def test_bad_options_are_usage_errors(tmp_path, tiny_config, kwargs, match):
    with pytest.raises(UsageError, match=match):
        train(tiny_config(tmp_path / "m.pth", **kwargs))


def test_missing_style_names_the_option(tmp_path, tiny_config):
    with pytest.raises(UsageError, match=r"nope\.jpg: style image not found.*--style"):
        train(tiny_config(tmp_path / "m.pth", style=tmp_path / "nope.jpg"))


def test_channels_last_matches_and_amp_on_cpu_falls_back(tmp_path, tiny_config, caplog):
    import logging

    ref_steps: list[StepRecord] = []
    cl_steps: list[StepRecord] = []
    ref = train(tiny_config(tmp_path / "a.pth", steps=2), callback=ref_steps.append)
    with caplog.at_level(logging.WARNING, logger="nst_train"):
        cl = train(tiny_config(tmp_path / "b.pth", steps=2, channels_last=True, amp=True),
                   callback=cl_steps.append)
    assert any("--amp is only used on CUDA" in r.getMessage() for r in caplog.records)
    # another memory layout picks other kernels: the same losses up to float rounding...
    for r, c in zip(ref_steps, cl_steps, strict=True):
        assert c.total == pytest.approx(r.total, rel=1e-4)
    # ...and weights within Adam's step bound (a rounding-level gradient can flip an update: 2 * lr per step)
    a, b = _weights(ref.model), _weights(cl.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2 * 2 * 1e-3 + 1e-6)
    assert cl.model.conv1.conv2d.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_compile_writes_a_clean_checkpoint(tmp_path, tiny_config):
    result = train(tiny_config(tmp_path / "m.pth", steps=2, compile=True))
    ckpt = load_checkpoint(result.checkpoint)  # no torch.compile "_orig_mod." prefixes
    assert set(ckpt.state_dict) == set(result.model.state_dict())


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [True, False])
def test_cuda_training_with_and_without_amp(tmp_path, tiny_config, amp):
    records: list[StepRecord] = []
    result = train(tiny_config(tmp_path / "m.pth", device="cuda", steps=6, amp=amp, channels_last=True,
                               batch_size=6, lr=1e-2), callback=records.append)
    assert all(torch.isfinite(torch.tensor(r.total)) for r in records)
    assert records[-1].total < records[0].total
    assert load_checkpoint(result.checkpoint).metadata.steps == 6


def test_divergence_stops_without_writing_and_keeps_the_last_good_state(tmp_path, tiny_config, monkeypatch):
    from nst_train.train import TrainingDivergedError
    from nst_train.training_state import load_training_state

    def poison_at_3(record: StepRecord) -> None:
        if record.step == 3:  # what a diverging Adam step does: a weight becomes NaN
            with torch.no_grad():
                model.res2.conv1.conv2d.weight[0, 0, 0, 0] = float("nan")

    import nst_train.train as train_module

    real = train_module.TransformerNet
    model = None

    def capture():
        nonlocal model
        model = real()
        return model

    cfg = tiny_config(tmp_path / "m.pth", steps=6, checkpoint_every=2, log_every=1)
    monkeypatch.setattr(train_module, "TransformerNet", capture)
    with pytest.raises(TrainingDivergedError) as info:
        train(cfg, callback=poison_at_3)
    err = info.value
    assert err.exit_code == 3 and err.step == 3
    assert "res2.conv1.conv2d.weight holds NaN or Inf" in str(err) and "lower --lr" in str(err)
    state_path = tmp_path / "m.run" / "state.pth"
    assert err.last_good_state == state_path and str(state_path) in str(err)
    assert not cfg.out.exists()  # no checkpoint from a diverged network
    state = load_training_state(state_path)
    assert state.step == 2 and all(torch.isfinite(v).all() for v in state.model.values())


def test_non_finite_loss_stops_the_run(tmp_path, tiny_config, monkeypatch):
    import nst_train.train as train_module
    from nst_train.losses import LossTerms
    from nst_train.train import TrainingDivergedError

    real = train_module.PerceptualObjective

    class Exploding(real):
        def __call__(self, y, x):
            t = super().__call__(y, x)
            return LossTerms(content=t.content * float("inf"), style=t.style, tv=t.tv)

    monkeypatch.setattr(train_module, "PerceptualObjective", Exploding)
    with pytest.raises(TrainingDivergedError, match=r"at step 1: the loss is not finite.*no state was saved"):
        train(tiny_config(tmp_path / "m.pth", steps=3, log_every=1, checkpoint_every=1))
    assert not (tmp_path / "m.pth").exists() and not (tmp_path / "m.run" / "state.pth").exists()


@pytest.mark.parametrize("capability,dtype,scaler", [
    ((7, 5), torch.float16, True),   # Turing: bf16 only emulated, though is_bf16_supported() says yes
    ((7, 0), torch.float16, True),
    ((8, 0), torch.bfloat16, False),  # Ampere and later: native bf16, no scaler needed
    ((9, 0), torch.bfloat16, False),
])
def test_amp_uses_bf16_only_from_compute_capability_8(monkeypatch, capability, dtype, scaler):
    from nst_train.train import amp_policy

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    policy = amp_policy(torch.device("cuda", 0), None)  # None: on for CUDA
    assert (policy.enabled, policy.dtype, policy.scaler) == (True, dtype, scaler)
    assert amp_policy(torch.device("cuda", 0), False).enabled is False
    assert amp_policy(torch.device("cpu"), True).enabled is False
