"""The vision probe (experiments/egosynth/vision_probe.py) runs end to end on a few clips and
reports accuracy under the full and context views; the batched tower call gives the same logits
as one call per clip."""

import importlib.util
import json

import torch

from helpers import REPO as ROOT


def _probe():
    spec = importlib.util.spec_from_file_location("vision_probe", ROOT / "experiments/egosynth/vision_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_probe_runs_and_batches_exactly(tmp_path, monkeypatch):
    vp = _probe()
    out = tmp_path / "probe.json"
    monkeypatch.setattr(
        "sys.argv",
        [
            "vision_probe",
            "--side",
            "56",
            "--frames",
            "4",
            "--train",
            "8",
            "--test",
            "2",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--box-weight",
            "1",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
        ],
    )
    vp.main()
    r = json.loads(out.read_text())
    assert {"train_acc", "id_full", "atypical_full", "id_context", "atypical_context", "history"} <= r.keys()
    assert r["classes"] == 30 and len(r["history"]) == 1

    data, _, _ = vp.clips(tmp_path / "data", "test_id", 56, 4, ("full",), "pyav")
    torch.manual_seed(0)
    model = vp.Probe(30).eval()
    with torch.no_grad():
        together = model(data["full"])[1]
        alone = torch.cat([model([c])[1] for c in data["full"]])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
