"""Malicious torch artifacts: nothing in a pushed bundle executes on load.

Every case is a real archive on disk, made from one that torch wrote itself
(engines.torch.save_bundle of an nn.Sequential), with one pickle slot or graph string
swapped for a payload that creates a marker file if anything ever runs it. The torch
engine must refuse each one, naming the file inside the archive and no server path, and
the marker must never appear. The control tests switch the checks off (the operator's
MILEPOST_ALLOW_CODE_BUNDLES=1) and show the payloads are live: torch itself runs them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from engines.base import DeploymentSpec
from milepost.core.errors import FailedPrecondition, InvalidArgument, MilepostError
from scoring_core import bundle

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # the crafted duplicate entries
from engines.torch import TorchEngine, check_archive, save_bundle, scan_pickles  # noqa: E402

FEATURES = ["a", "b", "c"]
SPEC = DeploymentSpec("d", "e", "m", "")
REFUSED = (FailedPrecondition, InvalidArgument)


class _Reduce:
    """Pickles as ``fn(*args)``: what an attacker's object with __reduce__ looks like."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.fn, self.args


def payloads(marker: Path) -> dict[str, bytes]:
    """Pickles that create ``marker`` when unpickled, one per way of importing and calling."""
    m = str(marker)
    return {
        "os.system GLOBAL+REDUCE (protocol 0)": f"cos\nsystem\n(S'touch {m}'\ntR.".encode(),
        "builtins.exec STACK_GLOBAL+REDUCE (protocol 4)": pickle.dumps(_Reduce(exec, f"open({m!r}, 'w').close()"), 4),
        "subprocess.call REDUCE (protocol 2)": pickle.dumps(_Reduce(subprocess.call, ["touch", m]), 2),
        "os.system INST": f"(S'touch {m}'\nios\nsystem\n.".encode(),
        "os.system OBJ": f"(cos\nsystem\nS'touch {m}'\no.".encode(),
    }


def torch_save_zip(data_pkl: bytes) -> bytes:
    """A torch.save (zip format) file whose data.pkl is ``data_pkl``: what torch.load opens."""
    real = io.BytesIO()
    torch.save(torch.ones(2), real)
    return rewrite(real.getvalue(), {"data.pkl": lambda _: data_pkl})


def rewrite(archive: bytes, changes: dict[str, Callable[[bytes], bytes | None]], add: dict[str, bytes] | None = None) -> bytes:
    """``archive`` with members whose name (below the top folder) is a key of ``changes``
    replaced by what the function returns (None: dropped), and ``add`` appended."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    top = source.namelist()[0].split("/", 1)[0]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dest:
        for info in source.infolist():
            rel = info.filename.split("/", 1)[1]
            data = source.read(info)
            if rel in changes:
                data = changes[rel](data)  # type: ignore[assignment]
                if data is None:
                    continue
            dest.writestr(info, data)
        for rel, data in (add or {}).items():
            dest.writestr(f"{top}/{rel}", data)
    return out.getvalue()


def with_json(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        doc = json.loads(data)
        edit(doc)
        return json.dumps(doc).encode()
    return change


@pytest.fixture(scope="module")
def module() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2), torch.nn.Softmax(dim=1)).eval()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def real(module: Any, rows: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles torch wrote, one a format."""
    root = tmp_path_factory.mktemp("real")
    out = {}
    for export in ("torchscript", "export"):
        save_bundle(module, root / export, example_input=rows[:4], feature_names=FEATURES, output_name="p", export=export)
        out[export] = root / export
    return out


def crafted_bundle(real_dir: Path, dest: Path, archive: bytes) -> Path:
    """``real_dir``'s bundle with its model file replaced by ``archive`` (checksums recomputed)."""
    _, files = bundle.read_bundle(real_dir)
    name = "model.ts" if "model.ts" in files else "model.pt2"
    files = {rel: data for rel, data in files.items() if rel != bundle.CHECKSUMS}
    files[name] = archive
    bundle.write_bundle(dest, files)
    return dest


def _model_file(real_dir: Path) -> bytes:
    _, files = bundle.read_bundle(real_dir)
    return files.get("model.ts") or files["model.pt2"]


# ---- the slots: how each crafted archive is made from the real one ----
def torchscript_slots(archive: bytes) -> dict[str, Callable[[bytes], bytes]]:
    """Every pickle TorchScript's archive holds (data.pkl, constants.pkl, traced_inputs.pkl, the
    .debug_pkl files), plus a second data.pkl entry and an upper-case DATA.PKL."""
    names = [i.filename.split("/", 1)[1] for i in zipfile.ZipFile(io.BytesIO(archive)).infolist()]

    def replacing(rel: str) -> Callable[[bytes], bytes]:
        return lambda payload: rewrite(archive, {rel: lambda _: payload})

    slots = {rel: replacing(rel) for rel in names if rel.endswith("pkl")}
    slots["data.pkl (a second entry of that name)"] = lambda p: rewrite(archive, {}, add={"data.pkl": p})
    slots["DATA.PKL (case differs)"] = lambda p: rewrite(archive, {}, add={"DATA.PKL": p})
    return slots


WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"


def _pickled_weight(doc: dict[str, Any]) -> None:
    doc["config"]["0.weight"]["use_pickle"] = True


def _constant(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["config"]["c0"] = {"path_name": path, "is_param": False, "use_pickle": True, "tensor_meta": None}
    return edit


def export_slots(archive: bytes) -> dict[str, Callable[[bytes], bytes]]:
    """Every place a torch.export archive holds a pickle torch.export.load reads."""
    z = torch_save_zip
    return {
        "sample inputs (torch.save zip)": lambda p: rewrite(archive, {"data/sample_inputs/model.pt": lambda _: z(p)}),
        "sample inputs (raw pickle)": lambda p: rewrite(archive, {"data/sample_inputs/model.pt": lambda _: p}),
        "weight marked use_pickle (torch.save zip)": lambda p: rewrite(
            archive, {WEIGHTS: with_json(_pickled_weight), "data/weights/weight_0": lambda _: z(p)}),
        "weight marked use_pickle (raw pickle)": lambda p: rewrite(
            archive, {WEIGHTS: with_json(_pickled_weight), "data/weights/weight_0": lambda _: p}),
        "opaque constant (pickle.loads)": lambda p: rewrite(
            archive, {CONSTANTS: with_json(_constant("opaque_obj_0"))}, add={"data/constants/opaque_obj_0": p}),
        "tensor constant marked use_pickle": lambda p: rewrite(
            archive, {CONSTANTS: with_json(_constant("tensor_0"))}, add={"data/constants/tensor_0": z(p)}),
        "custom object constant": lambda p: rewrite(
            archive, {CONSTANTS: with_json(_constant("custom_obj_0"))}, add={"data/constants/custom_obj_0": z(p)}),
        "legacy weights file": lambda p: rewrite(archive, {}, add={"data/weights/model.pt": z(p)}),
        "legacy constants file": lambda p: rewrite(archive, {}, add={"data/constants/model.pt": z(p)}),
        "second sample inputs entry": lambda p: rewrite(archive, {}, add={"data/sample_inputs/model.pt": z(p)}),
        "unknown member": lambda p: rewrite(archive, {}, add={"data/weights/extra.bin": p}),
    }


def graph_cases(archive: bytes, marker: Path) -> dict[str, bytes]:
    """A torch.export graph's strings that torch turns into Python: a sympy expression
    (sympy.sympify evaluates it during torch.export.load), guard code (exec'd by
    .module()), a parameter name written into the generated forward(), an operator target
    reached by walking attributes from ``torch``, and AOTInductor native code."""
    m = str(marker)
    model = "models/model.json"

    def sympy_payload(data: bytes) -> bytes:
        return data.replace(b"\"Symbol('s", f"\"(open('{m}', 'w') and 0) or Symbol('s".encode(), 1)

    def guards(doc: dict[str, Any]) -> None:
        doc["guards_code"] = [f"1 #\n)\nopen({m!r}, 'w')\ndef h():\n  (0"]

    evil = f'weight")\nopen("{m}", "w")\ndef h():\n    q = ("'

    def rename(data: bytes) -> bytes:
        return data.replace(b'"0.weight"', json.dumps(f"0.{evil}").encode())

    def target(doc: dict[str, Any]) -> None:
        doc["graph_module"]["graph"]["nodes"][1]["target"] = "torch.serialization.os.system"

    return {
        "sympy expression": rewrite(archive, {model: sympy_payload}),
        "guard code": rewrite(archive, {model: with_json(guards)}),
        "parameter name in generated code": rewrite(archive, {model: rename, WEIGHTS: rename}),
        "operator target torch.serialization.os.system": rewrite(archive, {model: with_json(target)}),
        "AOTInductor shared library": rewrite(archive, {}, add={"data/aotinductor/model/model.so": b"\x7fELF" + bytes(60)}),
    }


def _cases(real: dict[str, Path], marker: Path) -> list[tuple[str, str, bytes]]:
    """(format, case, archive) for every crafted case."""
    out = []
    for fmt, slots in (("torchscript", torchscript_slots), ("export", export_slots)):
        archive = _model_file(real[fmt])
        for slot, make in slots(archive).items():
            for how, payload in payloads(marker).items():
                out.append((fmt, f"{slot} / {how}", make(payload)))
    for case, archive in graph_cases(_model_file(real["export"]), marker).items():
        out.append(("export", case, archive))
    return out


def test_every_crafted_archive_is_refused_and_nothing_runs(real, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MILEPOST_ALLOW_CODE_BUNDLES", raising=False)
    marker = tmp_path / "executed"
    cases = _cases(real, marker)
    executions = 0
    refused: dict[str, int] = {}
    for n, (fmt, case, archive) in enumerate(cases):
        crafted = crafted_bundle(real[fmt], tmp_path / f"b{n}", archive)
        with pytest.raises(REFUSED) as caught:
            TorchEngine().load(crafted, SPEC)
        message = str(caught.value)
        assert message.startswith(("model.ts", "model.pt2")), (case, message)
        assert str(tmp_path) not in message and len(message) < 600, (case, message)
        refused[type(caught.value).__name__] = refused.get(type(caught.value).__name__, 0) + 1
        if marker.exists():
            executions += 1
            marker.unlink()
    print(f"crafted cases: {len(cases)}; refused: {refused}; executions: {executions}")
    assert executions == 0
    assert len(cases) >= 100 and sum(refused.values()) == len(cases)


def test_refusals_name_what_was_refused(real, tmp_path) -> None:
    marker = tmp_path / "executed"
    archive = _model_file(real["export"])
    opaque = export_slots(archive)["opaque constant (pickle.loads)"](payloads(marker)["os.system GLOBAL+REDUCE (protocol 0)"])
    with pytest.raises(FailedPrecondition, match=r"model.pt2 > 'archive/data/constants/opaque_obj_0': the pickle imports "
                                                  r"'os.system'.*MILEPOST_ALLOW_CODE_BUNDLES"):
        TorchEngine().load(crafted_bundle(real["export"], tmp_path / "a", opaque), SPEC)
    script = _model_file(real["torchscript"])
    exec_in_data = torchscript_slots(script)["data.pkl"](payloads(marker)["builtins.exec STACK_GLOBAL+REDUCE (protocol 4)"])
    with pytest.raises(FailedPrecondition, match=r"model.ts > 'archive/data.pkl': the pickle imports 'builtins.exec'"):
        TorchEngine().load(crafted_bundle(real["torchscript"], tmp_path / "b", exec_in_data), SPEC)
    sympy = graph_cases(archive, marker)["sympy expression"]
    with pytest.raises(FailedPrecondition, match=r"model.pt2 > 'archive/models/model.json': symbolic expression"):
        TorchEngine().load(crafted_bundle(real["export"], tmp_path / "c", sympy), SPEC)
    assert not marker.exists()


# Where torch itself runs the payload when nothing checks first (the control).
# TorchScript's slots are read by torch's C++ unpickler, which knows no os.system: none is live.
LIVE_EXPORT_SLOTS = ["sample inputs (torch.save zip)", "sample inputs (raw pickle)", "weight marked use_pickle (torch.save zip)",
                     "weight marked use_pickle (raw pickle)", "opaque constant (pickle.loads)",
                     "tensor constant marked use_pickle", "legacy weights file", "legacy constants file"]


@pytest.mark.parametrize("slot", LIVE_EXPORT_SLOTS)
def test_control_without_the_checks_torch_runs_the_payload(real, tmp_path, monkeypatch, slot) -> None:
    """The payloads are real: with the checks off (an operator who allows code bundles),
    torch.export.load runs them (whatever it makes of the rest of the archive)."""
    monkeypatch.setenv("MILEPOST_ALLOW_CODE_BUNDLES", "1")
    marker = tmp_path / "executed"
    archive = export_slots(_model_file(real["export"]))[slot](payloads(marker)["builtins.exec STACK_GLOBAL+REDUCE (protocol 4)"])
    try:
        TorchEngine().load(crafted_bundle(real["export"], tmp_path / "b", archive), SPEC).close()
    except MilepostError:
        pass  # the payload ran before torch found the rest wrong
    assert marker.exists()


def test_control_sympy_expression_runs_in_torch_export_load(real, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MILEPOST_ALLOW_CODE_BUNDLES", "1")
    marker = tmp_path / "executed"
    archive = graph_cases(_model_file(real["export"]), marker)["sympy expression"]
    try:
        TorchEngine().load(crafted_bundle(real["export"], tmp_path / "b", archive), SPEC).close()
    except MilepostError:
        pass
    assert marker.exists()


def test_guard_code_is_never_executed_even_when_code_bundles_are_allowed(real, tmp_path, monkeypatch) -> None:
    """torch's ExportedProgram.module() exec's the archive's guards_code; the engine asks
    for the module without generated guards, so even an operator's opt-in does not run it."""
    monkeypatch.setenv("MILEPOST_ALLOW_CODE_BUNDLES", "1")
    marker = tmp_path / "executed"
    archive = graph_cases(_model_file(real["export"]), marker)["guard code"]
    model = TorchEngine().load(crafted_bundle(real["export"], tmp_path / "b", archive), SPEC)
    model.close()
    assert not marker.exists()


def test_bundles_save_bundle_makes_load_and_predict(real, module, rows) -> None:
    for export, path in real.items():
        model = TorchEngine().load(path, SPEC)
        try:
            out = model.predict(pa.RecordBatch.from_arrays([pa.array(rows[:, i]) for i in range(3)], names=FEATURES))
            got = np.stack(out.column("p").to_numpy(zero_copy_only=False))
            with torch.inference_mode():
                expected = module(torch.from_numpy(rows)).numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=export)
        finally:
            model.close()
        assert check_archive(_model_file(path), "f", "torchscript" if export == "torchscript" else "torch.export") >= 1


def test_state_dicts_parameters_and_dtypes_torch_saves_pass_the_scan() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    for obj in (m.state_dict(), torch.nn.Parameter(torch.ones(2)), torch.ones(2, dtype=torch.float16),
                (torch.ones(2, dtype=torch.bfloat16), {"k": torch.arange(3)}), torch.zeros(2, dtype=torch.bool)):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data_pkl = next(z for z in zipfile.ZipFile(buffer).namelist() if z.endswith("data.pkl"))
        scan_pickles(zipfile.ZipFile(buffer).read(data_pkl), "data.pkl")


@pytest.mark.parametrize("pickle_bytes, refusal", [
    (b"\x80\x02\x82\x01)R.", "extension registry"),  # EXT1: a global from copyreg's registry
    (b"\x80\x02ctorch\nSize\n)R}X\x01\x00\x00\x00xK\x01sb.", "sets the state"),  # BUILD with state on a torch.Size
    (b"\x80\x04K\x01\x8c\x03sys\x94\x93.", "not a plain string"),  # STACK_GLOBAL whose module is not a string
    (b"\x80\x02cos\nsystem\n\xff\xff", "imports 'os.system'"),  # a payload before malformed bytes is still a payload
    (b"(K\x01K\x02t}X\x01\x00\x00\x00xK\x01sb.", "sets the state of an object"),  # BUILD on a tuple
])
def test_the_scan_refuses_each_opcode_that_imports_or_calls(pickle_bytes: bytes, refusal: str) -> None:
    with pytest.raises(FailedPrecondition, match=refusal):
        scan_pickles(pickle_bytes, "x.pkl")


def test_the_scan_follows_memoised_names_and_refuses_malformed_pickles() -> None:
    ok = pickle.dumps([torch.Size([2, 3]), torch.Size([4])], 4)  # the second STACK_GLOBAL reads its names from the memo
    assert scan_pickles(ok, "ok.pkl") == 1
    with pytest.raises(InvalidArgument, match="not a well-formed pickle"):
        scan_pickles(b"\xff\xfe", "junk.pkl")
    with pytest.raises(InvalidArgument, match="not a zip archive"):
        check_archive(b"not a zip", "model.pt2", "torch.export")


def test_archive_that_expands_beyond_the_budget_is_refused(real) -> None:
    with pytest.raises(InvalidArgument, match="expands to more"):
        check_archive(_model_file(real["torchscript"]), "model.ts", "torchscript", budget_bytes=100)


def test_a_crafted_bundle_deployed_over_grpc_fails_and_runs_nothing(cluster, real, tmp_path, monkeypatch) -> None:
    """The way an attacker with a deployer token would try it: push, then deploy."""
    monkeypatch.delenv("MILEPOST_ALLOW_CODE_BUNDLES", raising=False)
    marker = tmp_path / "executed"
    archive = export_slots(_model_file(real["export"]))["opaque constant (pickle.loads)"](
        payloads(marker)["subprocess.call REDUCE (protocol 2)"])
    crafted = crafted_bundle(real["export"], tmp_path / "crafted", archive)
    with cluster.client as client:
        client.push_model(crafted, "evil")
        with pytest.raises(FailedPrecondition, match=r"model.pt2 > 'archive/data/constants/opaque_obj_0': the pickle") as caught:
            client.deploy("evil-api", "evil")
        assert str(tmp_path) not in str(caught.value)
    assert not marker.exists()
    assert os.environ.get("MILEPOST_ALLOW_CODE_BUNDLES") is None
