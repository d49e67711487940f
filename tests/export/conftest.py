"""Export-stage fixtures: a fake ``tensorrt`` module, so the engine step's whole path runs on CPU."""

from __future__ import annotations

import types

import pytest


class _FakeTrt:
    """Just enough of the tensorrt module for engine_from_onnx to run its whole path on CPU: records the
    builder and parser flags it was given and returns a fake plan."""

    __version__ = "10.16.1.11"

    def __init__(self) -> None:
        self.builder_flags: set[str] = set()
        self.parser_flags: set[str] = set()
        names = ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME")
        self.BuilderFlag = types.SimpleNamespace(**{n: n for n in names})
        self.OnnxParserFlag = types.SimpleNamespace(NATIVE_INSTANCENORM="NATIVE_INSTANCENORM")
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        outer = self

        class Cache:
            def serialize(self):
                return b"timing"

        class Config:
            builder_optimization_level = 3

            def set_flag(self, flag):
                outer.builder_flags.add(flag)

            def set_memory_pool_limit(self, pool, size):
                pass

            def add_optimization_profile(self, profile):
                pass

            def create_timing_cache(self, blob):
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                return True

            def get_timing_cache(self):
                return Cache()

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return types.SimpleNamespace(name="input")

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return types.SimpleNamespace(set_shape=lambda *a: None)

            def build_serialized_network(self, network, config):
                return b"fake plan bytes"

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def set_flag(self, flag):
                outer.parser_flags.add(flag)

            def parse_from_file(self, path):
                return True

        self.Builder, self.OnnxParser = Builder, Parser


@pytest.fixture
def fake_trt(monkeypatch):
    from nst_export import tensorrt_engine

    trt = _FakeTrt()
    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_engine, "gpu_info", lambda: tensorrt_engine.GpuInfo("Fake GPU", "9.0"))
    return trt


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """A checkpoint of a small network (slim family, trunk 8, 1 residual block; the project's random test
    network recipe): for tests of the export's mechanics, where the network's size does not matter and a
    smaller graph exports several times faster."""
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
    from nst_train.samples import vivid_random_net

    net = vivid_random_net(3, arch="slim", channels=8, res_blocks=1)
    return save_checkpoint(tmp_path_factory.mktemp("small") / "small.pth", net, CheckpointMetadata(steps=0))
