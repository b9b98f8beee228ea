"""The generated request/result shapes match botocore's model, and every one names a served operation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from fleetjobs.api.app import snake_case
from fleetjobs.model import shapes_iot, shapes_iot_data, shapes_iot_jobs_data
from fleetjobs.server import FACADES

ROOT = Path(__file__).resolve().parent.parent


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_shapes", ROOT / "scripts" / "gen_shapes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_shapes"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_shapes_are_current() -> None:
    gen = generator()
    for service, module in gen.SERVICES.items():
        checked_in = (ROOT / "fleetjobs" / "model" / f"{module}.py").read_text()
        assert checked_in == gen.render(service), f"run scripts/gen_shapes.py: {module}.py is stale"


def test_every_shaped_operation_has_its_facade_method() -> None:
    for service, shapes in (
        ("iot", shapes_iot),
        ("iot-jobs-data", shapes_iot_jobs_data),
        ("iot-data", shapes_iot_data),
    ):
        assert shapes.OPERATIONS, service
        for op in shapes.OPERATIONS:
            owners = [cls.__name__ for cls in FACADES[service] if hasattr(cls, snake_case(op))]
            assert len(owners) == 1, (service, op, owners)
            assert hasattr(shapes, f"{op}Request"), op
